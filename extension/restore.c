/*-------------------------------------------------------------------------
 *
 * restore.c
 *	  restore_events(): an empty event source refills itself from a copy of
 *	  its events elsewhere (a destination), as slate's restore_events does,
 *	  but over libpq and checked like a destination.
 *
 * The remote's events arrive by binary COPY straight into a local COPY FROM:
 * exact values, no SQL text.  Everything happens in the caller's
 * transaction, with events and id locked: it restores all or nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "connection.h"
#include "destination.h"
#include "notify.h"
#include "shmem.h"
#include "write_guard.h"

/* COPY FROM's data source callback has no argument: the state lives here. */
static PGconn *copy_conn = NULL;
static char *copy_buf = NULL;
static int	copy_len = 0;
static int	copy_off = 0;
static bool copy_broken = false;

static int
read_remote_copy(void *outbuf, int minread, int maxread)
{
	int			done = 0;

	while (done < minread)
	{
		int			n;

		if (copy_off >= copy_len)
		{
			if (copy_buf)
				PQfreemem(copy_buf);
			copy_buf = NULL;
			copy_off = 0;
			copy_len = replicator_remote_get_copy(copy_conn, &copy_buf);
			if (copy_len < 0)
			{
				copy_broken = copy_len == -2;
				copy_len = 0;
				break;
			}
		}
		n = Min(maxread - done, copy_len - copy_off);
		memcpy((char *) outbuf + done, copy_buf + copy_off, n);
		copy_off += n;
		done += n;
	}
	return done;
}

static int64
local_int8(const char *sql)
{
	bool		isnull;
	Datum		d;

	/* not read-only: a fresh snapshot sees what restore_from copied */
	if (SPI_execute(sql, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "query failed: %s", sql);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * The values of the one row sql returns, palloc'd ("" for NULL); the
 * result is cleared, also on an error.
 */
static char **
remote_row(PGconn *conn, const char *sql, const char *what)
{
	char	   *error;
	PGresult   *res = replicator_remote_one_row(conn, sql, 0, NULL, &error, NULL);
	char	  **row;
	int			n;

	if (res == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("restore_events: could not %s: %s", what, error)));
	n = PQnfields(res);
	row = replicator_result_cells(res, NULL);
	for (int i = 0; i < n; i++)
		if (row[i] == NULL)
			row[i] = "";
	return row;
}

/* Check the remote, then COPY its events in.  Returns the rows copied. */
static int64
restore_from(PGconn *conn, Oid nspid, int64 *remote_count)
{
	PGresult   *res;
	char	  **row;
	Relation	rel;
	ParseState *pstate;
	CopyFromState cstate;
	char	   *identity = replicator_source_identity();
	int64		copied;

	{
		char	   *error = NULL;
		char	   *remote = replicator_remote_identity(conn, &error, NULL);

		if (remote == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("restore_events: could not read the remote's identity: %s", error)));
		if (strcmp(remote, identity) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("restore_events: the remote database is this database (%s)", identity)));
	}
	row = remote_row(conn, "SELECT " EVENTS_COLUMNS_SQL, "read the remote's events table");
	if (strcmp(row[0], EVENTS_COLUMNS) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("restore_events: the remote has no events table of (" EVENTS_COLUMNS ")"),
				 errdetail("Its events table has columns (%s).", row[0])));

	/* ids exactly 1..max: as many as max(id), the least 1 */
	row = remote_row(conn, "SELECT count(*), coalesce(max(id), 0), coalesce(min(id), 1) FROM events",
					 "count the remote's events");
	*remote_count = strtoi64(row[0], NULL, 10);
	if (*remote_count != strtoi64(row[1], NULL, 10))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("restore_events: the remote's events have gaps: %s events, max(id) %s",
						row[0], row[1])));
	if (strcmp(row[2], "1") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("restore_events: the remote's ids are not exactly 1..max(id): %s events, min(id) %s, max(id) %s",
						row[0], row[2], row[1])));

	res = replicator_remote_exec(conn, "COPY (SELECT id, ts, event FROM events ORDER BY id) TO STDOUT (FORMAT binary)", 0, NULL);
	if (res == NULL || PQresultStatus(res) != PGRES_COPY_OUT)
	{
		char	   *error = replicator_remote_error(conn, res);

		PQclear(res);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("restore_events: could not read the remote's events: %s", error)));
	}
	PQclear(res);

	rel = table_open(get_relname_relid("events", nspid), RowExclusiveLock);
	/* COPY's own privilege check, which BeginCopyFrom leaves to DoCopy */
	if (pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, RelationGetRelationName(rel));
	pstate = make_parsestate(NULL);
	(void) addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, NULL, false, false);
	copy_conn = conn;
	copy_buf = NULL;
	copy_len = copy_off = 0;
	copy_broken = false;
	cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, read_remote_copy, NIL,
						   list_make1(makeDefElem("format", (Node *) makeString("binary"), -1)));
	replicator_allow_next_write(RelationGetRelid(rel));
	replicator_suppress_notify(true);
	PG_TRY();
	{
		copied = (int64) CopyFrom(cstate);
	}
	PG_FINALLY();
	{
		replicator_forbid_writes();
		replicator_suppress_notify(false);
		if (copy_buf)
			PQfreemem(copy_buf);
		copy_buf = NULL;
		copy_conn = NULL;
	}
	PG_END_TRY();
	EndCopyFrom(cstate);
	table_close(rel, NoLock);
	CommandCounterIncrement();

	if (copy_broken)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("restore_events: the connection broke while reading events: %s", replicator_remote_error(conn, NULL))));
	res = replicator_remote_last_result(conn);
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		char	   *error = replicator_remote_error(conn, res);

		PQclear(res);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("restore_events: reading the remote's events failed: %s", error)));
	}
	PQclear(res);
	return copied;
}

PG_FUNCTION_INFO_V1(replicator_restore_events);

Datum
replicator_restore_events(PG_FUNCTION_ARGS)
{
	const char *keywords[6];
	const char *values[6];
	int			n = 0;
	Oid			nspid = get_func_namespace(fcinfo->flinfo->fn_oid);
	const char *nsp = quote_identifier(get_namespace_name(nspid));
	PGconn	   *volatile conn = NULL;
	char	   *error = NULL;
	int64		restored = 0;
	int64		remote_count = 0;
	volatile int64 max_id = 0;
	SourceFacts facts;
	TupleDesc	tupdesc;
	Datum		result[2];
	bool		nulls[2] = {false, false};
	char	   *conninfo;
	StringInfoData buf;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("restore_events: fromHost and fromDatabase must not be null")));
	keywords[n] = "host";
	values[n++] = text_to_cstring(PG_GETARG_TEXT_PP(0));
	keywords[n] = "dbname";
	values[n++] = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
	{
		keywords[n] = "user";
		values[n++] = text_to_cstring(PG_GETARG_TEXT_PP(2));
	}
	if (!PG_ARGISNULL(3))
	{
		keywords[n] = "password";
		values[n++] = text_to_cstring(PG_GETARG_TEXT_PP(3));
	}
	if (!PG_ARGISNULL(4))
	{
		keywords[n] = "port";
		values[n++] = psprintf("%d", PG_GETARG_INT32(4));
	}
	keywords[n] = NULL;
	values[n] = NULL;

	if (!superuser() && PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("password is required"),
				 errdetail("A non-superuser must give fromDatabasePassword, so that the server's own credentials are never used.")));

	/* the whole restore holds events and id: no insert_events meanwhile */
	SPI_connect();
	SPI_execute(psprintf("LOCK TABLE %s.events, %s.id IN EXCLUSIVE MODE", nsp, nsp), false, 0);
	if (local_int8(psprintf("SELECT count(*) FROM %s.events", nsp)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("restore_events: table %s.events is not empty", nsp),
				 errhint("restore_events refills an empty event source.")));
	SPI_finish();

	initStringInfo(&buf);
	for (int i = 0; keywords[i]; i++)
		replicator_conninfo_append(&buf, keywords[i], values[i]);
	conninfo = buf.data;

	PG_TRY();
	{
		bool		transient;

		/* the caller's own arguments: their password, unless a superuser */
		conn = replicator_remote_connect(conninfo, "replicator:restore_events",
										 REPLICATOR_SESSION_QUERY, !superuser(),
										 &error, &transient);
		if (conn == NULL && !transient)
			ereport(ERROR,
					(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
					 errmsg("password is required"),
					 errdetail("restore_events: %s.", error)));
		if (conn == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("restore_events: could not connect: %s", error)));

		restored = restore_from(conn, nspid, &remote_count);

		/* checked as a destination is: ids 1..max, same first event */
		SPI_connect();
		max_id = local_int8(psprintf("SELECT coalesce(max(id), 0) FROM %s.events", nsp));
		if (restored != remote_count || max_id != restored ||
			(restored > 0 && local_int8(psprintf("SELECT min(id) FROM %s.events", nsp)) != 1))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("restore_events: restored " INT64_FORMAT " events with max(id) " INT64_FORMAT ", the remote has " INT64_FORMAT,
							restored, max_id, remote_count),
					 errdetail("The restored ids must be exactly 1..max(id).")));
		if (restored > 0)
		{
			char	   *detail = NULL;
			char	   *contents = NULL;
			MemoryContext spi = MemoryContextSwitchTo(TopTransactionContext);

			replicator_read_source_facts(nspid, "", &facts);
			MemoryContextSwitchTo(spi);
			if (!replicator_first_event_matches(conn, &facts, &detail, &contents, NULL))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("restore_events: the restored first event differs from the remote's"),
						 errdetail("%s", contents ? contents : detail)));
		}

		/* the allocator continues after the restored events */
		replicator_allow_next_write(get_relname_relid("id", nspid));
		SPI_execute(psprintf("UPDATE %s.id SET id = %lld + 1,"
							 " last_ts = (SELECT max(ts) FROM %s.events)",
							 nsp, (long long) max_id, nsp), false, 0);
		replicator_forbid_writes();
		SPI_finish();
	}
	PG_FINALLY();
	{
		replicator_remote_close(conn);
	}
	PG_END_TRY();

	if (restored > 0)
		replicator_notify_restored(max_id);
	replicator_wake_workers_at_commit();

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	result[0] = Int64GetDatum(restored);
	result[1] = Int64GetDatum(max_id + 1);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), result, nulls)));
}
