/*-------------------------------------------------------------------------
 *
 * node_link.c
 *	  The master's side of the node protocol.
 *
 * A destination whose database has the extension is a node: the master's
 * worker attaches each of its sessions there (attach_to_master(), which
 * also pushes the topology and demotes a node of an older epoch), and
 * tells it now and then how far behind it is (master_heartbeat()), which
 * is what a failover judges the node's lag tolerance by.  The functions
 * are in the node's schema "replicator", named with it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "connection.h"
#include "node_link.h"

/* The extension's version in the remote database, NULL if none (or error). */
char *
replicator_remote_extension_version(PGconn *conn, char **error, bool *transient)
{
	PGresult   *res;
	char	   *version = NULL;

	*error = NULL;
	res = replicator_remote_one_row(conn,
									"SELECT (SELECT extversion FROM pg_catalog.pg_extension"
									" WHERE extname OPERATOR(pg_catalog.=) 'replicator')",
									0, NULL, error, transient);
	if (res == NULL)
		return NULL;
	if (!PQgetisnull(res, 0, 0))
		version = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return version;
}

bool
replicator_attach_remote(PGconn *conn, const NodeAttach *attach, int64 *max_id, int64 *diverged,
						 char **error, bool *transient)
{
	PGresult   *res;

	/*
	 * The topology carries every node's conninfo, passwords included: keep
	 * it out of the node's log (log_statement, log_min_duration_statement
	 * print bind parameters).  Superuser only, as attach itself.
	 */
	res = replicator_remote_one_row(conn, "SELECT pg_catalog.set_config('log_parameter_max_length', '0', false)",
									0, NULL, error, transient);
	if (res == NULL)
		return false;
	PQclear(res);
	res = replicator_remote_one_row(conn, REPLICATOR_ATTACH_SQL, 4, attach->params, error, transient);
	if (res == NULL)
		return false;
	*max_id = strtoi64(PQgetvalue(res, 0, 0), NULL, 10);
	*diverged = strtoi64(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
	return true;
}

/* NULL, or why the heartbeat failed. */
char *
replicator_heartbeat_remote(PGconn *conn, int64 epoch, int64 master_max_id, TimestampTz behind_since)
{
	const char *params[3];
	char	   *error = NULL;
	PGresult   *res;

	params[0] = psprintf(INT64_FORMAT, epoch);
	params[1] = psprintf(INT64_FORMAT, master_max_id);
	/* microseconds since 2000-01-01 UTC, as the checks pass timestamps */
	params[2] = behind_since == 0 ? NULL : psprintf(INT64_FORMAT, (int64) behind_since);
	res = replicator_remote_one_row(conn,
									"SELECT replicator.master_heartbeat($1::pg_catalog.int8, $2::pg_catalog.int8,"
									" '2000-01-01 00:00:00+00'::pg_catalog.timestamptz OPERATOR(pg_catalog.+)"
									" ($3::pg_catalog.int8 OPERATOR(pg_catalog.*) interval '1 microsecond'))",
									3, params, &error, NULL);
	if (res == NULL)
		return error;
	PQclear(res);
	return NULL;
}
