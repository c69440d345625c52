/*-------------------------------------------------------------------------
 *
 * connection.c
 *	  libpq to destinations, never blocking: every wait is on the process
 *	  latch and the socket, so SIGTERM, SIGHUP and query cancels are served
 *	  while a destination is slow, silent or gone.  Used by the streaming
 *	  workers and by SQL functions (validate) alike.
 *
 * Functions return NULL or false on a remote failure and leave the reason
 * in the connection; replicator_remote_error() gives it without any
 * password.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <sys/socket.h>

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "connection.h"
#include "settings.h"

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

/* The value of keyword in parsed connection options, or NULL. */
static const char *
option_value(PQconninfoOption *opts, const char *keyword)
{
	for (PQconninfoOption *opt = opts; opt->keyword != NULL; opt++)
		if (strcmp(opt->keyword, keyword) == 0)
			return opt->val;
	return NULL;
}

/*
 * Append one switch to a libpq "options" value: the server splits it at
 * whitespace, and a backslash takes the next character literally.
 */
static void
options_append(StringInfo buf, const char *name, const char *value)
{
	if (buf->len > 0)
		appendStringInfoChar(buf, ' ');
	appendStringInfo(buf, "-c %s=", name);
	for (const char *p = value; *p; p++)
	{
		if (*p == '\\' || isspace((unsigned char) *p))
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
}

/*
 * The "options" our sessions start with: the user's own first (from the
 * connection string, else PGOPTIONS, as libpq would), then ours, which win.
 * The settings hold before the first statement: a role's 1 ms
 * statement_timeout cannot cancel the statement meant to turn it off.
 *
 * No statement, idle or idle-in-transaction timeout, as none applies to
 * logical replication's apply: one set for the destination's users would
 * abort a large batch, or one waiting its turn to commit, at every try, and
 * streaming would never get past it.  Our processes stay interruptible
 * without them.  synchronous_commit may be off for apply sessions (the
 * default, as for logical replication's apply): the position is the
 * destination's own max(id), in the same WAL as the rows, so what a crash
 * loses is sent again.
 */
static char *
session_options(PQconninfoOption *opts, ReplicatorSessionKind kind)
{
	StringInfoData buf;
	const char *theirs = option_value(opts, "options");

	if (theirs == NULL)
		theirs = getenv("PGOPTIONS");

	initStringInfo(&buf);
	if (theirs != NULL)
		appendStringInfoString(&buf, theirs);
	options_append(&buf, "statement_timeout", "0");
	options_append(&buf, "idle_in_transaction_session_timeout", "0");
	options_append(&buf, "idle_session_timeout", "0");

	/*
	 * The server notices within about 25 s that we vanished (a host lost, a
	 * network cut) rather than after the kernel's two hours: a session of
	 * ours left idle in a transaction would hold its locks until then, and
	 * a failover there waits for them.  Ignored over unix sockets.
	 */
	options_append(&buf, "tcp_keepalives_idle", "10");
	options_append(&buf, "tcp_keepalives_interval", "5");
	options_append(&buf, "tcp_keepalives_count", "3");
	if (kind == REPLICATOR_SESSION_APPLY)
		options_append(&buf, "synchronous_commit", replicator_destination_synchronous_commit);
	return buf.data;
}

/*
 * Host names are resolved here, not by libpq: libpq resolves them
 * synchronously inside PQconnectPoll, where neither connect_timeout nor a
 * cancel can reach a slow DNS server.  glibc's getaddrinfo_a() resolves in
 * a helper thread (with every signal blocked) while we wait on the latch;
 * libpq then gets each address as hostaddr beside its host name, which it
 * still uses for SSL, Kerberos and .pgpass.
 */
#define MAX_ADDRESSES	32

/* Split a libpq list ("a,b,c") into a List of palloc'd strings. */
static List *
split_list(const char *value)
{
	List	   *items = NIL;
	const char *p = value;

	for (;;)
	{
		const char *comma = strchr(p, ',');

		if (comma == NULL)
		{
			items = lappend(items, pstrdup(p));
			return items;
		}
		items = lappend(items, pnstrdup(p, comma - p));
		p = comma + 1;
	}
}

/* libpq's own test: a directory or an abstract socket name */
static bool
is_socket_path(const char *host)
{
	return host[0] == '/' || host[0] == '@';
}

/*
 * Cancel what is still running and free what can be freed.  A lookup that
 * cannot be cancelled any more keeps its (malloc'd) request: the helper
 * thread still writes into it.
 */
static void
release_lookups(struct gaicb **reqs, int n)
{
	for (int i = 0; i < n; i++)
	{
		struct gaicb *req = reqs[i];

		if (req == NULL)
			continue;
		if (gai_error(req) == EAI_INPROGRESS && gai_cancel(req) == EAI_NOTCANCELED)
			continue;
		if (req->ar_result)
			freeaddrinfo(req->ar_result);
		free((void *) req->ar_name);
		free((void *) req->ar_request);
		free(req);
		reqs[i] = NULL;
	}
}

/* Wait for every lookup, or the deadline (false). */
static bool
wait_lookups(struct gaicb **reqs, int n, TimestampTz deadline)
{
	for (;;)
	{
		bool		busy = false;
		long		timeout;

		for (int i = 0; i < n; i++)
			if (reqs[i] && gai_error(reqs[i]) == EAI_INPROGRESS)
				busy = true;
		if (!busy)
			return true;
		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (timeout <= 0)
			return false;
		/* glibc could signal completion, but only by a signal or a thread */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(timeout, 10), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Resolve the host names of the connection options before the deadline.
 * Sets *host, *hostaddr and *port (or NULL: leave the user's) to lists of
 * one entry per address; a unix socket stays as it is.  Nothing to do when
 * the user gave hostaddr or no host (libpq's defaults: PGHOST, a service
 * file or the local socket are left to libpq).  False and *error if no
 * name resolved, or not in time.
 */
static bool
resolve_hosts(PQconninfoOption *opts, TimestampTz deadline,
			  char **host, char **hostaddr, char **port, char **error)
{
	const char *hostval = option_value(opts, "host");
	const char *addrval = option_value(opts, "hostaddr");
	const char *portval = option_value(opts, "port");
	List	   *hosts;
	List	   *volatile ports = NIL;
	struct gaicb *volatile *reqs;
	StringInfoData hbuf,
				abuf,
				pbuf;
	int			nhosts;
	volatile int naddrs = 0;
	char	   *volatile failure = NULL;
	bool		in_time = false;

	*host = *hostaddr = *port = NULL;
	if (hostval == NULL || hostval[0] == '\0' || (addrval != NULL && addrval[0] != '\0'))
		return true;
	hosts = split_list(hostval);
	nhosts = list_length(hosts);
	if (portval != NULL && portval[0] != '\0')
	{
		ports = split_list(portval);
		if (list_length(ports) != 1 && list_length(ports) != nhosts)
			return true;		/* libpq reports the mismatch */
	}

	reqs = palloc0(sizeof(struct gaicb *) * nhosts);
	PG_TRY();
	{
		struct gaicb *batch[MAX_ADDRESSES];
		int			nbatch = 0;

		for (int i = 0; i < nhosts; i++)
		{
			const char *name = list_nth(hosts, i);
			struct gaicb *req;
			struct addrinfo *hints;

			if (name[0] == '\0' || is_socket_path(name) || nbatch == MAX_ADDRESSES)
				continue;
			/* malloc: a lookup that cannot be cancelled outlives this call */
			req = calloc(1, sizeof(struct gaicb));
			hints = calloc(1, sizeof(struct addrinfo));
			if (req == NULL || hints == NULL || (req->ar_name = strdup(name)) == NULL)
			{
				free(req);
				free(hints);
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory")));
			}
			hints->ai_family = AF_UNSPEC;
			hints->ai_socktype = SOCK_STREAM;
			req->ar_request = hints;
			reqs[i] = req;
			batch[nbatch++] = req;
		}
		if (nbatch > 0)
		{
			int			rc = getaddrinfo_a(GAI_NOWAIT, batch, nbatch, NULL);

			if (rc != 0 && rc != EAI_SYSTEM)
				failure = psprintf("could not resolve host names: %s", gai_strerror(rc));
			else
				in_time = wait_lookups((struct gaicb **) reqs, nhosts, deadline);
		}
		else
			in_time = true;

		if (failure == NULL && !in_time)
		{
			for (int i = 0; i < nhosts && failure == NULL; i++)
				if (reqs[i] && gai_error(reqs[i]) == EAI_INPROGRESS)
					failure = psprintf("could not resolve host name \"%s\" within connect_timeout (%d ms)",
									   (char *) list_nth(hosts, i), replicator_connect_timeout);
		}

		initStringInfo(&hbuf);
		initStringInfo(&abuf);
		initStringInfo(&pbuf);
		for (int i = 0; i < nhosts && failure == NULL; i++)
		{
			const char *name = list_nth(hosts, i);
			const char *p = ports == NIL ? NULL : list_nth(ports, list_length(ports) == 1 ? 0 : i);
			int			rc;

			if (reqs[i] == NULL)
			{
				/* a socket, the default, or past MAX_ADDRESSES: libpq's */
				appendStringInfo(&hbuf, "%s%s", naddrs ? "," : "", name);
				appendStringInfo(&abuf, "%s", naddrs ? "," : "");
				appendStringInfo(&pbuf, "%s%s", naddrs ? "," : "", p ? p : "");
				naddrs++;
				continue;
			}
			rc = gai_error(reqs[i]);
			if (rc != 0)
			{
				/* as libpq: try the other hosts; fail if none is left */
				if (failure == NULL && i == nhosts - 1 && naddrs == 0)
					failure = psprintf("could not translate host name \"%s\" to address: %s",
									   name, gai_strerror(rc));
				continue;
			}
			for (struct addrinfo *ai = reqs[i]->ar_result; ai && naddrs < MAX_ADDRESSES; ai = ai->ai_next)
			{
				char		addr[NI_MAXHOST];

				if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr),
								NULL, 0, NI_NUMERICHOST) != 0)
					continue;
				appendStringInfo(&hbuf, "%s%s", naddrs ? "," : "", name);
				appendStringInfo(&abuf, "%s%s", naddrs ? "," : "", addr);
				appendStringInfo(&pbuf, "%s%s", naddrs ? "," : "", p ? p : "");
				naddrs++;
			}
			if (failure == NULL && i == nhosts - 1 && naddrs == 0)
				failure = psprintf("could not translate host name \"%s\" to address: no address", name);
		}
	}
	PG_FINALLY();
	{
		release_lookups((struct gaicb **) reqs, nhosts);
	}
	PG_END_TRY();

	if (failure)
	{
		*error = failure;
		return false;
	}
	*host = hbuf.data;
	*hostaddr = abuf.data;
	/* no port given: libpq's default applies to every entry */
	*port = ports == NIL ? NULL : pbuf.data;
	return true;
}

/*
 * Start connecting and poll until connected, failed, or past the deadline.
 * *connp is set as soon as libpq has a connection object, so that the
 * caller can close it when an interrupt throws from a wait.  NULL and
 * *error on failure (the connection is left for the caller to close).
 */
static PGconn *
connect_poll(PGconn *volatile *connp, const char *const *keywords,
			 const char *const *values, TimestampTz deadline, char **error)
{
	PGconn	   *conn;

	conn = *connp = PQconnectStartParams(keywords, values, 1);
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
			*error = psprintf("could not connect within connect_timeout (%d ms)",
							  replicator_connect_timeout);
			return NULL;
		}
	}
	*error = replicator_remote_error(conn, NULL);
	return NULL;
}

/*
 * The one way to reach a remote server, for the workers and the SQL
 * functions alike: connect within replicator.connect_timeout with the
 * session settings in the startup packet, and, if require_password, refuse
 * a server that did not ask for the password (so that nobody borrows the
 * server's own credentials: .pgpass, peer or trust authentication).  The
 * user's conninfo overrides our keepalive defaults; application_name is
 * always ours.
 *
 * Each connection counts as an external file descriptor (as postgres_fdw's
 * do) until replicator_remote_close().  An interrupt or error while
 * connecting closes it before propagating, so a cancelled SQL function
 * leaves no socket behind.
 *
 * On failure returns NULL with *error set (never the password) and, if
 * transient is given, whether trying again later may help: everything but
 * the password rule.
 */
PGconn *
replicator_remote_connect(const char *conninfo, const char *appname,
						  ReplicatorSessionKind kind, bool require_password,
						  char **error, bool *transient)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   replicator_connect_timeout);
	PQconninfoOption *opts;
	const char *keywords[16];
	const char *values[16];
	int			n = 0;
	PGconn	   *volatile conn = NULL;
	PGconn	   *result = NULL;
	char	   *host;
	char	   *hostaddr;
	char	   *port;

	*error = NULL;
	if (transient)
		*transient = true;

	opts = PQconninfoParse(conninfo, NULL);
	if (opts == NULL)
	{
		/* libpq's message could quote a piece of a password */
		*error = pstrdup("invalid connection string");
		if (transient)
			*transient = false;
		return NULL;
	}
	keywords[n] = "keepalives";
	values[n++] = "1";
	keywords[n] = "keepalives_idle";
	values[n++] = "10";
	keywords[n] = "keepalives_interval";
	values[n++] = "5";
	keywords[n] = "keepalives_count";
	values[n++] = "3";
	keywords[n] = "dbname";
	values[n++] = conninfo;
	/* after dbname, which expands conninfo: these override the user's */
	keywords[n] = "options";
	values[n++] = session_options(opts, kind);
	keywords[n] = "application_name";
	values[n++] = appname;
	if (!resolve_hosts(opts, deadline, &host, &hostaddr, &port, error))
	{
		PQconninfoFree(opts);
		return NULL;
	}
	if (host)
	{
		keywords[n] = "host";
		values[n++] = host;
		keywords[n] = "hostaddr";
		values[n++] = hostaddr;
	}
	if (port)
	{
		keywords[n] = "port";
		values[n++] = port;
	}
	keywords[n] = NULL;
	values[n] = NULL;
	PQconninfoFree(opts);

	if (!AcquireExternalFD())
	{
		*error = psprintf("could not connect: no file descriptor available (max_files_per_process is %d); try again later",
						  max_files_per_process);
		return NULL;
	}
	PG_TRY();
	{
		result = connect_poll(&conn, keywords, values, deadline, error);
	}
	PG_CATCH();
	{
		if (conn)
			PQfinish(conn);
		ReleaseExternalFD();
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (result == NULL)
	{
		if (conn)
			PQfinish(conn);
		ReleaseExternalFD();
		return NULL;
	}
	if (require_password && !PQconnectionUsedPassword(result))
	{
		replicator_remote_close(result);
		*error = pstrdup("password required: the connection was made for a non-superuser, and the server did not ask for its password");
		if (transient)
			*transient = false;
		return NULL;
	}
	return result;
}

/* Close a connection of replicator_remote_connect() (NULL: none). */
void
replicator_remote_close(PGconn *conn)
{
	if (conn == NULL)
		return;
	PQfinish(conn);
	ReleaseExternalFD();
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
 * Collect the results of the command under way and return the last, or
 * NULL if the connection broke; with stop_at_copy, a COPY result at once.
 * An interrupt while waiting frees what was collected before propagating.
 */
static PGresult *
collect_results(PGconn *conn, bool stop_at_copy)
{
	PGresult   *volatile last = NULL;
	bool		broken = false;

	PG_TRY();
	{
		PGresult   *res;

		while ((res = next_result(conn, &broken)) != NULL)
		{
			ExecStatusType status = PQresultStatus(res);

			if (last)
				PQclear(last);
			last = res;
			if (stop_at_copy &&
				(status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH))
				break;
		}
	}
	PG_CATCH();
	{
		if (last)
			PQclear(last);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (broken)
	{
		if (last)
			PQclear(last);
		return NULL;
	}
	return last;
}

/*
 * Run sql (with text parameters) and return its last result, or NULL if the
 * connection broke.  The caller checks the status and clears the result.
 * A COPY IN result is returned at once, for the caller to feed.
 */
PGresult *
replicator_remote_exec(PGconn *conn, const char *sql, int nparams, const char *const *values)
{
	if (nparams > 0 ? !PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0)
		: !PQsendQuery(conn, sql))
		return NULL;
	if (!flush_output(conn))
		return NULL;
	return collect_results(conn, true);
}

/*
 * Prepare sql as the statement name, its parameters of the types its casts
 * give them: the session keeps sql, and only it, as the statement's text.
 */
PGresult *
replicator_remote_prepare(PGconn *conn, const char *name, const char *sql)
{
	if (!PQsendPrepare(conn, name, sql, 0, NULL) || !flush_output(conn))
		return NULL;
	return collect_results(conn, true);
}

/*
 * Run a string of several statements in one round trip, handing each
 * result in turn to each_result(res, i, arg), which must not keep it.
 * False if the connection broke.  An error thrown by each_result leaves
 * the connection unusable: the caller closes it.
 */
bool
replicator_remote_exec_each(PGconn *conn, const char *sql,
							void (*each_result) (PGresult *res, int i, void *arg), void *arg)
{
	return replicator_remote_send(conn, sql) &&
		replicator_remote_collect_each(conn, each_result, arg);
}

/*
 * Send a string of statements without waiting for their results, which
 * replicator_remote_collect_each() collects later.  False if the
 * connection broke.
 */
bool
replicator_remote_send(PGconn *conn, const char *sql)
{
	return PQsendQuery(conn, sql) && flush_output(conn);
}

/* The results of what replicator_remote_send() sent, as exec_each. */
bool
replicator_remote_collect_each(PGconn *conn,
							   void (*each_result) (PGresult *res, int i, void *arg), void *arg)
{
	PGresult   *volatile res = NULL;
	bool		broken = false;
	volatile int i = 0;

	PG_TRY();
	{
		while ((res = next_result(conn, &broken)) != NULL)
		{
			each_result(res, i++, arg);
			PQclear(res);
			res = NULL;
		}
	}
	PG_CATCH();
	{
		if (res)
			PQclear(res);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return !broken;
}

/*
 * The last result of the command under way (after COPY data, its final
 * status), or NULL if the connection broke.
 */
PGresult *
replicator_remote_last_result(PGconn *conn)
{
	return collect_results(conn, false);
}

/*
 * Run sql and return its result, which must be exactly one row; else NULL
 * with *error set (and no result to clear).
 */
PGresult *
replicator_remote_one_row(PGconn *conn, const char *sql, int nparams, const char *const *values,
						  char **error, bool *transient)
{
	PGresult   *res = replicator_remote_exec(conn, sql, nparams, values);

	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		*error = replicator_remote_error(conn, res);
		if (transient)
			*transient = replicator_remote_error_transient(res);
		if (res)
			PQclear(res);
		return NULL;
	}
	return res;
}

/*
 * The cells of res row by row, palloc'd (NULL for SQL NULL), with *bytes
 * (if given) their total length.  res is cleared, also when copying fails:
 * libpq's results are not palloc'd, and would leak past an error.
 */
char	  **
replicator_result_cells(PGresult *res, int64 *bytes)
{
	int			n = PQntuples(res);
	int			ncols = PQnfields(res);
	char	  **cells;

	PG_TRY();
	{
		cells = palloc(sizeof(char *) * Max(1, n * ncols));
		for (int i = 0; i < n; i++)
			for (int c = 0; c < ncols; c++)
				cells[i * ncols + c] = PQgetisnull(res, i, c) ? NULL : pstrdup(PQgetvalue(res, i, c));
	}
	PG_CATCH();
	{
		PQclear(res);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (bytes)
		for (int i = 0; i < n; i++)
			for (int c = 0; c < ncols; c++)
				*bytes += PQgetlength(res, i, c);
	PQclear(res);
	return cells;
}

/*
 * NULL if res has the expected status, else the error; clears res either
 * way (res NULL: the connection broke).
 */
char *
replicator_remote_expect(PGconn *conn, PGresult *res, ExecStatusType expected)
{
	char	   *error = NULL;

	if (res == NULL || PQresultStatus(res) != expected)
		error = replicator_remote_error(conn, res);
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
replicator_remote_error_transient(const PGresult *res)
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
replicator_remote_error(PGconn *conn, PGresult *res)
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
replicator_conninfo_append(StringInfo buf, const char *keyword, const char *value)
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
 * conninfo as key=value pairs with every secret replaced by ********: each
 * option libpq itself marks as one to hide (dispchar "*": password,
 * sslpassword, and any a later libpq adds).  NULL and *error set if libpq
 * cannot parse it.
 */
char *
replicator_conninfo_mask(const char *conninfo, char **error)
{
	PQconninfoOption *opts;
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
	for (PQconninfoOption *opt = opts; opt->keyword != NULL; opt++)
	{
		const char *val = opt->val;

		if (val == NULL || *val == '\0')
			continue;
		if (strchr(opt->dispchar, '*') != NULL)
			val = "********";
		replicator_conninfo_append(&buf, opt->keyword, val);
	}
	PQconninfoFree(opts);
	return buf.data;
}

/*
 * conninfo without the options libpq marks secret (password, sslpassword),
 * for roles that may connect but not learn the credentials: read_replica()
 * returns it to any role.  NULL if libpq cannot parse it.
 */
char *
replicator_conninfo_without_password(const char *conninfo)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	StringInfoData buf;

	if (opts == NULL)
		return NULL;
	initStringInfo(&buf);
	for (PQconninfoOption *opt = opts; opt->keyword != NULL; opt++)
		if (opt->val != NULL && *opt->val != '\0' && strchr(opt->dispchar, '*') == NULL)
			replicator_conninfo_append(&buf, opt->keyword, opt->val);
	PQconninfoFree(opts);
	return buf.data;
}

/* The password in conninfo, or NULL; conninfo must parse. */
char *
replicator_conninfo_password(const char *conninfo)
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
replicator_remote_get_copy(PGconn *conn, char **buf)
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
