/*-------------------------------------------------------------------------
 *
 * destination.c
 *	  slate's start-up checks of a destination, done right: what the
 *	  destination server says about itself decides whether it is the source
 *	  or another destination (not host strings), and the first event must
 *	  equal the source's exactly (ts to the microsecond, event as jsonb text).
 *
 * Facts about the source are read first, in the caller's transaction; the
 * remote checks need no local locks, so a slow destination holds up no DDL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "connection.h"
#include "destination.h"

/*
 * slate's destination table, created where the destination has none.
 *
 * The remote SQL here and in apply.c names every function, operator and
 * type by its schema, as postgres_fdw does: our role may be a superuser
 * there, and the destination's search_path is not ours to trust.  Only
 * the table events is found by the search_path, as slate finds it.
 */
static const char *create_events_sql =
"CREATE TABLE events (id pg_catalog.int8 PRIMARY KEY, ts pg_catalog.timestamptz NOT NULL, event pg_catalog.jsonb NOT NULL);"
"CREATE INDEX events_ts ON events (ts);"
"CREATE INDEX events_entity_name ON events ((event OPERATOR(pg_catalog.#>>) '{entityName}'));"
"CREATE INDEX events_operation ON events ((event OPERATOR(pg_catalog.#>>) '{operation}'));"
"CREATE INDEX events_property_name ON events ((event OPERATOR(pg_catalog.#>>) '{propertyName}'));"
"CREATE INDEX events_entity_id ON events ((event OPERATOR(pg_catalog.#>>) '{entityId}'));"
"CREATE INDEX events_metadata_command ON events ((event OPERATOR(pg_catalog.#>>) '{metadata,command}'));";

/* system identifier/port/database, as a destination would report it */
char *
replicator_source_identity(void)
{
	return psprintf(UINT64_FORMAT "/%d/%s", GetSystemIdentifier(), PostPortNumber,
					get_database_name(MyDatabaseId));
}

/*
 * system identifier/port/database as the remote server reports itself;
 * NULL and *error if the query failed (*transient: for now, if not NULL)
 */
char *
replicator_remote_identity(PGconn *conn, char **error, bool *transient)
{
	/* pg_control_system() may be denied: then port and name alone */
	PGresult   *res = replicator_remote_one_row(conn,
												"SELECT pg_catalog.concat_ws('/',"
												" coalesce((SELECT system_identifier::pg_catalog.text FROM pg_catalog.pg_control_system()"
												"  WHERE pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')), '?'),"
												" pg_catalog.current_setting('port'), pg_catalog.current_database())",
												0, NULL, error, transient);
	char	   *identity;

	if (res == NULL)
		return NULL;
	identity = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return identity;
}

static char *
spi_text(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

/*
 * Read what the checks compare with.  Needs SPI connected and a snapshot.
 * The strings are allocated in the caller's memory context.  The queries
 * are not read-only, so each sees what the transaction did before it
 * (restore_events checks the events it just copied).
 */
void
replicator_read_source_facts(Oid nspid, const char *replica, SourceFacts *facts)
{
	const char *nsp = quote_identifier(get_namespace_name(nspid));
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(replica)};
	MemoryContext caller = CurrentMemoryContext;
	bool		isnull;
	int			ret;

	memset(facts, 0, sizeof(SourceFacts));
	facts->nspid = nspid;
	facts->identity = replicator_source_identity();

	/*
	 * As the owner: the callers are workers and admin functions, and admins
	 * need no privileges on the extension's tables.
	 */
	ret = replicator_spi_execute_as_owner(psprintf("SELECT id, ts, event::text FROM %s.events ORDER BY id LIMIT 1", nsp),
										  0, NULL, NULL, NULL, false);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the first event: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		facts->has_first = true;
		facts->first_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		facts->first_ts = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		facts->first_event = spi_text(0, 3);
		MemoryContextSwitchTo(spi);
	}

	ret = replicator_spi_execute_as_owner(psprintf("SELECT coalesce(pg_catalog.max(id), 0) FROM %s.events", nsp),
										  0, NULL, NULL, NULL, false);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read max(id): %s", SPI_result_code_string(ret));
	facts->max_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	ret = replicator_spi_execute_as_owner("SELECT name FROM replicator.node_state"
										  " WHERE name OPERATOR(pg_catalog.=) master",
										  0, NULL, NULL, NULL, false);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.node_state: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		facts->node_name = spi_text(0, 1);
		MemoryContextSwitchTo(spi);
	}

	ret = replicator_spi_execute_as_owner("SELECT name, destination FROM replicator.replicas"
										  " WHERE name OPERATOR(pg_catalog.<>) $1 AND destination IS NOT NULL",
										  1, argtypes, args, NULL, false);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.replicas: %s", SPI_result_code_string(ret));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		facts->other_names = lappend(facts->other_names, spi_text(r, 1));
		facts->other_identities = lappend(facts->other_identities, spi_text(r, 2));
		MemoryContextSwitchTo(spi);
	}
}

/*
 * Does the remote events table start with the source's first event, id,
 * ts to the microsecond and event as jsonb text?  If not, *detail says how
 * they differ (or why the query failed, and *transient whether for now, if
 * not NULL), without the events' contents, which go to *contents.
 */
bool
replicator_first_event_matches(PGconn *conn, SourceFacts *facts, char **detail, char **contents,
							   bool *transient)
{
	char	   *params[3];
	PGresult   *res;
	bool		same;

	params[0] = psprintf(INT64_FORMAT, facts->first_id);
	params[1] = psprintf(INT64_FORMAT, (int64) facts->first_ts);
	params[2] = facts->first_event;
	res = replicator_remote_one_row(conn,
									"SELECT id OPERATOR(pg_catalog.=) $1::pg_catalog.int8"
									" AND ts OPERATOR(pg_catalog.=) ('2000-01-01 00:00:00+00'::pg_catalog.timestamptz"
									"  OPERATOR(pg_catalog.+) ($2::pg_catalog.int8 OPERATOR(pg_catalog.*) interval '1 microsecond'))"
									" AND event::pg_catalog.text OPERATOR(pg_catalog.=) $3,"
									" id, ts, pg_catalog.left(event::pg_catalog.text, 200)"
									" FROM events ORDER BY id LIMIT 1",
									3, (const char *const *) params, detail, transient);
	if (res == NULL)
		return false;
	same = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	if (!same)
	{
		/* the detail is readable by every role: no contents in it */
		*detail = psprintf("the destination's first event (id %s, ts %s) differs from the source's (id " INT64_FORMAT ", ts %s)",
						   PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
						   facts->first_id, timestamptz_to_str(facts->first_ts));
		*contents = psprintf("the destination's first event (id %s, ts %s, %s) differs from the source's (id " INT64_FORMAT ", ts %s, %.200s)",
							 PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3),
							 facts->first_id, timestamptz_to_str(facts->first_ts),
							 facts->first_event);
	}
	PQclear(res);
	return same;
}

/*
 * The source's event with this id: its ts and its event as jsonb text.
 * false if there is none.  Read in a transaction of its own if the caller
 * has none (a worker checking a destination holds no local transaction),
 * by an index lookup rather than a query: no privilege on events is needed
 * and no search_path is involved.
 */
static bool
source_event_at(Oid nspid, int64 id, TimestampTz *ts, char **event)
{
	MemoryContext caller = CurrentMemoryContext;
	bool		own_xact = !IsTransactionState();
	Oid			relid;
	bool		found = false;

	if (own_xact)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
	}
	relid = get_relname_relid("events", nspid);
	if (OidIsValid(relid))
	{
		Relation	rel = table_open(relid, AccessShareLock);
		Oid			pkeyid = RelationGetPrimaryKeyIndex(rel);
		Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
		ScanKeyData key;
		SysScanDesc scan;
		HeapTuple	tuple;

		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(id));
		scan = systable_beginscan(rel, pkeyid, OidIsValid(pkeyid), snapshot, 1, &key);
		tuple = systable_getnext(scan);
		if (HeapTupleIsValid(tuple) && RelationGetDescr(rel)->natts >= 3)
		{
			bool		isnull;
			Datum		value;

			*ts = DatumGetTimestampTz(heap_getattr(tuple, 2, RelationGetDescr(rel), &isnull));
			value = heap_getattr(tuple, 3, RelationGetDescr(rel), &isnull);
			if (!isnull)
			{
				MemoryContext old = MemoryContextSwitchTo(caller);

				*event = OidOutputFunctionCall(F_JSONB_OUT, value);
				MemoryContextSwitchTo(old);
				found = true;
			}
		}
		systable_endscan(scan);
		UnregisterSnapshot(snapshot);
		table_close(rel, AccessShareLock);
	}
	if (own_xact)
		CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	return found;
}

/*
 * Does the destination's event at its max(id) equal the source's event
 * with that id?  With the first event and no gaps, this is what makes the
 * destination a prefix of this source's history, and not of a clone's, a
 * restored backup's or an earlier incarnation's: those agree on the first
 * event but part at some id.  A destination that received events the
 * source then lost (a crash after an asynchronous commit) fails it too.
 *
 * Leaves room for an epoch (promotion): a destination fed by the old
 * primary holds a prefix of the new one's history as well, and passes.
 *
 * *detail says which id differs and in what (ts or event), never what the
 * events hold: it is stored where every role reads it.
 */
static bool
last_event_matches(PGconn *conn, SourceFacts *facts, int64 id, char **detail,
				   bool *transient)
{
	TimestampTz ts;
	char	   *event;
	char	   *params[3];
	PGresult   *res;
	bool		same_ts;
	bool		same_event;

	if (!source_event_at(facts->nspid, id, &ts, &event))
	{
		/* the source changed since its facts were read: try again */
		*detail = psprintf("the source has no event with id " INT64_FORMAT " now", id);
		*transient = true;
		return false;
	}
	params[0] = psprintf(INT64_FORMAT, id);
	params[1] = psprintf(INT64_FORMAT, (int64) ts);
	params[2] = event;
	res = replicator_remote_one_row(conn,
									"SELECT ts OPERATOR(pg_catalog.=) ('2000-01-01 00:00:00+00'::pg_catalog.timestamptz"
									"  OPERATOR(pg_catalog.+) ($2::pg_catalog.int8 OPERATOR(pg_catalog.*) interval '1 microsecond')),"
									" event::pg_catalog.text OPERATOR(pg_catalog.=) $3"
									" FROM events WHERE id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
									3, (const char *const *) params, detail, transient);
	if (res == NULL)
		return false;
	same_ts = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	same_event = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	PQclear(res);
	if (!same_ts || !same_event)
		*detail = psprintf("the destination's event at its max(id) " INT64_FORMAT " differs from the source's event " INT64_FORMAT " (%s): the destination holds another history than this source's",
						   id, id,
						   !same_ts && !same_event ? "ts and event" : !same_ts ? "ts" : "event");
	return same_ts && same_event;
}

List *
replicator_add_check(List *checks, const char *check, bool ok, char *detail)
{
	DestinationCheck *c = palloc(sizeof(DestinationCheck));

	c->check = check;
	c->ok = ok;
	c->transient = false;
	c->detail = detail;
	c->contents = NULL;
	return lappend(checks, c);
}

/* A check that could not run: transient says whether only for now. */
static List *
add_failed_query(List *checks, const char *check, char *error, bool transient)
{
	checks = replicator_add_check(checks, check, false, error);
	((DestinationCheck *) llast(checks))->transient = transient;
	return checks;
}

/* One-row query; NULL (and a failed check added) if it fails. */
static PGresult *
query_row(PGconn *conn, const char *sql, int nparams, const char *const *values,
		  List **checks, const char *check)
{
	char	   *error;
	bool		transient;
	PGresult   *res = replicator_remote_one_row(conn, sql, nparams, values, &error, &transient);

	if (res == NULL)
		*checks = add_failed_query(*checks, check, error, transient);
	return res;
}

/*
 * Which database the destination is: not the source itself, nor one another
 * replica already streams to.  Run before anything is written there (a node
 * is attached only after these pass).  info->identity gets the identity.
 */
List *
replicator_check_identity(PGconn *conn, SourceFacts *facts, DestinationInfo *info)
{
	List	   *checks = NIL;
	ListCell   *ln,
			   *li;
	bool		distinct = true;
	char	   *error = NULL;
	bool		transient;

	memset(info, 0, sizeof(DestinationInfo));
	info->max_id = -1;

	info->identity = replicator_remote_identity(conn, &error, &transient);
	if (info->identity == NULL)
		return add_failed_query(checks, "identity", error, transient);

	if (strcmp(info->identity, facts->identity) == 0)
		return replicator_add_check(checks, "not the source", false,
									psprintf("the destination is the source database itself (%s)", info->identity));
	checks = replicator_add_check(checks, "not the source", true, psprintf("destination is %s", info->identity));

	forboth(ln, facts->other_names, li, facts->other_identities)
	{
		if (strcmp((char *) lfirst(li), info->identity) == 0)
		{
			checks = replicator_add_check(checks, "distinct destination", false,
										  psprintf("replica \"%s\" already streams to this database (%s)",
												   (char *) lfirst(ln), info->identity));
			distinct = false;
		}
	}
	if (!distinct)
		return checks;
	return replicator_add_check(checks, "distinct destination", true, NULL);
}

/*
 * Run slate's checks: replicator_check_identity's, then those of what the
 * destination holds.  Stops at the first that fails, since later checks
 * depend on earlier ones.  create_table: make slate's events table if the
 * destination has none.  info gets what the destination reported.
 */
List *
replicator_check_destination(PGconn *conn, SourceFacts *facts, bool create_table, DestinationInfo *info)
{
	List	   *checks = replicator_check_identity(conn, facts, info);
	bool		transient;

	if (replicator_first_failure(checks, &transient) != NULL)
		return checks;
	return list_concat(checks, replicator_check_contents(conn, facts, create_table, info));
}

/*
 * The checks of what an identified destination holds (after
 * replicator_check_identity, and the attach of a node).
 */
List *
replicator_check_contents(PGconn *conn, SourceFacts *facts, bool create_table, DestinationInfo *info)
{
	List	   *checks = NIL;
	PGresult   *res;

	/*
	 * slate refuses a destination that holds source objects; a node of a
	 * topology holds them, and its master's stream is its only writer
	 */
	res = query_row(conn,
					"SELECT (SELECT extversion FROM pg_catalog.pg_extension"
					" WHERE extname OPERATOR(pg_catalog.=) 'replicator')",
					0, NULL, &checks, "no source objects");
	if (res == NULL)
		return checks;
	if (!PQgetisnull(res, 0, 0) && facts->node_name != NULL)
	{
		checks = replicator_add_check(checks, "no source objects", true,
									  psprintf("a node with the extension (version %s): the slave of master \"%s\"",
											   PQgetvalue(res, 0, 0), facts->node_name));
		PQclear(res);
		res = NULL;
	}
	else
	{
		PQclear(res);
		res = query_row(conn,
						"SELECT pg_catalog.concat_ws(', ',"
						" CASE WHEN pg_catalog.to_regclass('id') IS NOT NULL THEN 'table id' END,"
						" (SELECT 'function insert_events' FROM pg_catalog.pg_proc"
						"  WHERE proname OPERATOR(pg_catalog.=) 'insert_events' AND pg_catalog.pg_function_is_visible(oid) LIMIT 1),"
						" (SELECT 'trigger notify_insert' FROM pg_catalog.pg_trigger"
						"  WHERE tgname OPERATOR(pg_catalog.=) 'notify_insert'"
						"  AND tgrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('events')))",
						0, NULL, &checks, "no source objects");
		if (res == NULL)
			return checks;
		if (*PQgetvalue(res, 0, 0) != '\0')
		{
			checks = replicator_add_check(checks, "no source objects", false,
										  psprintf("the destination holds event source objects (%s): it is an event source, not a destination%s",
												   PQgetvalue(res, 0, 0),
												   facts->node_name ? "" : "; a database with the extension becomes a slave of a registered master (add_replica(..., role => 'master') on this one)"));
			PQclear(res);
			return checks;
		}
		PQclear(res);
		checks = replicator_add_check(checks, "no source objects", true, NULL);
	}

	/* the events table: slate's columns, id its primary key */
	res = query_row(conn,
					"SELECT pg_catalog.to_regclass('events') IS NOT NULL, " EVENTS_COLUMNS_SQL ","
					" EXISTS (SELECT FROM pg_catalog.pg_index i"
					"  WHERE i.indrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('events')"
					"  AND i.indisprimary AND i.indkey::pg_catalog.text OPERATOR(pg_catalog.=) '1')",
					0, NULL, &checks, "events table");
	if (res == NULL)
		return checks;
	if (strcmp(PQgetvalue(res, 0, 0), "f") == 0)
	{
		PQclear(res);
		if (!create_table)
			return replicator_add_check(checks, "events table", false, pstrdup("the destination has no events table yet; it is created on first connection"));
		res = replicator_remote_exec(conn, create_events_sql, 0, NULL);
		if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			checks = add_failed_query(checks, "events table",
									  psprintf("could not create table events: %s", replicator_remote_error(conn, res)),
									  replicator_remote_error_transient(res));
			if (res)
				PQclear(res);
			return checks;
		}
		PQclear(res);
		info->created_table = true;
		checks = replicator_add_check(checks, "events table", true, pstrdup("created"));
	}
	else
	{
		const char *columns = PQgetvalue(res, 0, 1);
		bool		pk = strcmp(PQgetvalue(res, 0, 2), "t") == 0;

		if (strcmp(columns, EVENTS_COLUMNS) != 0 || !pk)
		{
			checks = replicator_add_check(checks, "events table", false,
										  psprintf("table events has columns (%s)%s; it must be (id bigint primary key, ts timestamp with time zone, event jsonb)",
												   columns, pk ? "" : " without id as its primary key"));
			PQclear(res);
			return checks;
		}
		PQclear(res);
		checks = replicator_add_check(checks, "events table", true, NULL);
	}

	/* no gaps, not ahead of the source */
	res = query_row(conn, "SELECT pg_catalog.count(*), coalesce(pg_catalog.max(id), 0) FROM events",
					0, NULL, &checks, "no gaps");
	if (res == NULL)
		return checks;
	info->count = strtoi64(PQgetvalue(res, 0, 0), NULL, 10);
	info->max_id = strtoi64(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
	if (info->count != info->max_id)
		return replicator_add_check(checks, "no gaps", false,
									psprintf("the destination holds " INT64_FORMAT " events but its max(id) is " INT64_FORMAT,
											 info->count, info->max_id));
	checks = replicator_add_check(checks, "no gaps", true,
								  psprintf("count = max(id) = " INT64_FORMAT, info->max_id));

	if (info->max_id > facts->max_id)
		return replicator_add_check(checks, "not ahead of source", false,
									psprintf("the destination's max(id) " INT64_FORMAT " is above the source's " INT64_FORMAT,
											 info->max_id, facts->max_id));
	checks = replicator_add_check(checks, "not ahead of source", true,
								  psprintf("destination " INT64_FORMAT ", source " INT64_FORMAT, info->max_id, facts->max_id));

	/* the first event, exactly */
	if (info->max_id > 0)
	{
		char	   *detail = NULL;
		char	   *contents = NULL;
		bool		transient = false;

		if (!replicator_first_event_matches(conn, facts, &detail, &contents, &transient))
		{
			checks = add_failed_query(checks, "same first event", detail, transient);
			((DestinationCheck *) llast(checks))->contents = contents;
			return checks;
		}
		checks = replicator_add_check(checks, "same first event", true, NULL);
	}
	else
		checks = replicator_add_check(checks, "same first event", true, pstrdup("the destination is empty"));

	/* the event at max(id), exactly: one history */
	if (info->max_id > 0)
	{
		char	   *detail = NULL;
		bool		transient = false;

		if (!last_event_matches(conn, facts, info->max_id, &detail, &transient))
			return add_failed_query(checks, "same last event", detail, transient);
		checks = replicator_add_check(checks, "same last event", true,
									  psprintf("id " INT64_FORMAT, info->max_id));
	}
	else
		checks = replicator_add_check(checks, "same last event", true, pstrdup("the destination is empty"));

	return checks;
}

/*
 * The first failed check's detail, or NULL if all passed.  *transient: it
 * failed only because its query could not run for now.
 */
char *
replicator_first_failure(List *checks, bool *transient)
{
	ListCell   *lc;

	foreach(lc, checks)
	{
		DestinationCheck *c = lfirst(lc);

		if (!c->ok)
		{
			*transient = c->transient;
			return psprintf("%s: %s", c->check, c->detail ? c->detail : "failed");
		}
	}
	*transient = false;
	return NULL;
}
