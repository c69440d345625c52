/*-------------------------------------------------------------------------
 *
 * connection.c
 *	  libpq to destinations, never blocking: every wait is on the process
 *	  latch and the socket, so SIGTERM, SIGHUP and query cancels are served
 *	  while a destination is slow, silent or gone.  Used by the streaming
 *	  workers and by SQL functions (validate) alike.
 *
 * Functions return NULL or false on a remote failure and leave the reason
 * in the connection; remote_error() gives it without any password.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "replicator.h"
#include "worker.h"

/*
 * Wait until the socket is ready for what libpq wants, the latch is set, or
 * the deadline passes (0: none).  Returns false at the deadline.
 */
static bool
wait_socket(PGconn *conn, int events, TimestampTz deadline)
{
	long		timeout = -1;
	int			rc;

	if (deadline != 0)
	{
		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (timeout <= 0)
			return false;
		events |= WL_TIMEOUT;
	}
	rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | events,
						   PQsocket(conn), timeout, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

/*
 * Connect within timeout_ms.  The user's conninfo overrides our keepalive
 * defaults; application_name is always ours.  On failure returns NULL and
 * sets *error.
 */
PGconn *
remote_connect(const char *conninfo, const char *appname, int timeout_ms, char **error)
{
	const char *keywords[] = {"keepalives", "keepalives_idle", "keepalives_interval",
	"keepalives_count", "dbname", "application_name", NULL};
	const char *values[] = {"1", "10", "5", "3", conninfo, appname, NULL};
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	PGconn	   *conn;

	*error = NULL;
	conn = PQconnectStartParams(keywords, values, 1);
	if (conn == NULL)
	{
		*error = pstrdup("out of memory");
		return NULL;
	}

	for (;;)
	{
		PostgresPollingStatusType status;

		if (PQstatus(conn) == CONNECTION_BAD)
			break;
		status = PQconnectPoll(conn);
		if (status == PGRES_POLLING_OK)
		{
			if (PQsetnonblocking(conn, 1) != 0)
				break;
			return conn;
		}
		if (status == PGRES_POLLING_FAILED)
			break;
		if (!wait_socket(conn, status == PGRES_POLLING_READING ?
						 WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE, deadline))
		{
			*error = psprintf("could not connect within connect_timeout (%d ms)", timeout_ms);
			PQfinish(conn);
			return NULL;
		}
	}
	*error = remote_error(conn, NULL);
	PQfinish(conn);
	return NULL;
}

/* Send what libpq has buffered, waiting as needed.  False if broken. */
static bool
flush_output(PGconn *conn)
{
	for (;;)
	{
		int			rc = PQflush(conn);

		if (rc == 0)
			return true;
		if (rc < 0)
			return false;
		/* read while waiting, so a server blocked on its own output moves */
		wait_socket(conn, WL_SOCKET_WRITEABLE | WL_SOCKET_READABLE, 0);
		if (!PQconsumeInput(conn))
			return false;
	}
}

/* The next result, waiting for it.  NULL when there are no more. */
static PGresult *
next_result(PGconn *conn, bool *broken)
{
	*broken = false;
	while (PQisBusy(conn))
	{
		wait_socket(conn, WL_SOCKET_READABLE, 0);
		if (!PQconsumeInput(conn))
		{
			*broken = true;
			return NULL;
		}
	}
	return PQgetResult(conn);
}

/*
 * Run sql (with text parameters) and return its last result, or NULL if the
 * connection broke.  The caller checks the status and clears the result.
 * A COPY IN result is returned at once, for the caller to feed.
 */
PGresult *
remote_exec(PGconn *conn, const char *sql, int nparams, const char *const *values)
{
	PGresult   *last = NULL;
	PGresult   *res;
	bool		broken;

	if (nparams > 0 ? !PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0)
		: !PQsendQuery(conn, sql))
		return NULL;
	if (!flush_output(conn))
		return NULL;

	while ((res = next_result(conn, &broken)) != NULL)
	{
		ExecStatusType status = PQresultStatus(res);

		if (last)
			PQclear(last);
		last = res;
		if (status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH)
			return last;
	}
	if (broken)
	{
		if (last)
			PQclear(last);
		return NULL;
	}
	return last;
}

/*
 * The last result of the command under way (after COPY data, its final
 * status), or NULL if the connection broke.
 */
PGresult *
remote_last_result(PGconn *conn)
{
	PGresult   *last = NULL;
	PGresult   *res;
	bool		broken;

	while ((res = next_result(conn, &broken)) != NULL)
	{
		if (last)
			PQclear(last);
		last = res;
	}
	if (broken)
	{
		if (last)
			PQclear(last);
		return NULL;
	}
	return last;
}

/*
 * Run sql and return its result, which must be exactly one row; else NULL
 * with *error set (and no result to clear).
 */
PGresult *
remote_one_row(PGconn *conn, const char *sql, int nparams, const char *const *values,
			   char **error, bool *transient)
{
	PGresult   *res = remote_exec(conn, sql, nparams, values);

	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		*error = remote_error(conn, res);
		if (transient)
			*transient = remote_error_transient(res);
		if (res)
			PQclear(res);
		return NULL;
	}
	return res;
}

/*
 * NULL if res has the expected status, else the error; clears res either
 * way (res NULL: the connection broke).
 */
char *
remote_expect(PGconn *conn, PGresult *res, ExecStatusType expected)
{
	char	   *error = NULL;

	if (res == NULL || PQresultStatus(res) != expected)
		error = remote_error(conn, res);
	if (res)
		PQclear(res);
	return error;
}

/*
 * Does a failed command's result (NULL: the connection broke) name a
 * condition that passes by itself: connection trouble, a lock or statement
 * timeout, a serialization failure, resources running out, a server
 * shutting down?  Not permissions, a read-only server or a broken table,
 * which an operator has to fix.
 */
bool
remote_error_transient(const PGresult *res)
{
	const char *state;

	if (res == NULL)
		return true;
	if (PQresultStatus(res) != PGRES_FATAL_ERROR)
		return false;			/* it ran, with an unexpected answer */
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (state == NULL || strlen(state) != 5)
		return true;			/* libpq's own: the connection failed */
	return strncmp(state, "08", 2) == 0 ||	/* connection exception */
		strncmp(state, "40", 2) == 0 || /* transaction rollback */
		strncmp(state, "53", 2) == 0 || /* insufficient resources */
		strncmp(state, "57", 2) == 0 || /* canceled, shutting down */
		strncmp(state, "58", 2) == 0 || /* system error */
		strcmp(state, "55P03") == 0 ||	/* lock not available */
		strcmp(state, "55006") == 0;	/* object in use */
}

/*
 * The reason for a failure, one line, palloc'd.  libpq's messages name host,
 * port and user but never the password.
 */
char *
remote_error(PGconn *conn, PGresult *res)
{
	const char *msg = NULL;
	char	   *copy;
	size_t		len;

	if (res != NULL)
		msg = PQresultErrorMessage(res);
	if ((msg == NULL || *msg == '\0') && conn != NULL)
		msg = PQerrorMessage(conn);
	if (msg == NULL || *msg == '\0')
		msg = "connection lost";
	copy = pstrdup(msg);
	len = strlen(copy);
	while (len > 0 && (copy[len - 1] == '\n' || copy[len - 1] == ' '))
		copy[--len] = '\0';
	for (char *p = copy; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	return copy;
}

/* Append keyword='value' to a connection string, quoted as libpq reads it. */
void
conninfo_append(StringInfo buf, const char *keyword, const char *value)
{
	if (buf->len > 0)
		appendStringInfoChar(buf, ' ');
	appendStringInfo(buf, "%s='", keyword);
	for (const char *p = value; *p; p++)
	{
		if (*p == '\'' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '\'');
}

/*
 * conninfo as key=value pairs with any password replaced by ********.
 * NULL and *error set if libpq cannot parse it.
 */
char *
mask_conninfo(const char *conninfo, char **error)
{
	PQconninfoOption *opts;
	PQconninfoOption *opt;
	char	   *errmsg = NULL;
	StringInfoData buf;

	opts = PQconninfoParse(conninfo, &errmsg);
	if (opts == NULL)
	{
		*error = errmsg ? pstrdup(errmsg) : pstrdup("out of memory");
		if (errmsg)
			PQfreemem(errmsg);
		while (**error && (*error)[strlen(*error) - 1] == '\n')
			(*error)[strlen(*error) - 1] = '\0';
		return NULL;
	}
	initStringInfo(&buf);
	for (opt = opts; opt->keyword != NULL; opt++)
	{
		const char *val = opt->val;

		if (val == NULL || *val == '\0')
			continue;
		if (strcmp(opt->keyword, "password") == 0)
			val = "********";
		conninfo_append(&buf, opt->keyword, val);
	}
	PQconninfoFree(opts);
	return buf.data;
}

/* The password in conninfo, or NULL; conninfo must parse. */
char *
conninfo_password(const char *conninfo)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	char	   *password = NULL;

	if (opts == NULL)
		return NULL;
	for (PQconninfoOption *opt = opts; opt->keyword != NULL; opt++)
		if (strcmp(opt->keyword, "password") == 0 && opt->val && *opt->val)
			password = pstrdup(opt->val);
	PQconninfoFree(opts);
	return password;
}

/*
 * The next row of COPY OUT data, waiting for it: its length with *buf set
 * (free with PQfreemem), -1 at the end of the data, -2 if the connection
 * broke.
 */
int
remote_get_copy(PGconn *conn, char **buf)
{
	for (;;)
	{
		int			len = PQgetCopyData(conn, buf, 1);

		if (len != 0)
			return len;
		wait_socket(conn, WL_SOCKET_READABLE, 0);
		if (!PQconsumeInput(conn))
			return -2;
	}
}
