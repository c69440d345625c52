/*-------------------------------------------------------------------------
 *
 * rule_sync.c
 *	  replicator.sync(name): a rule brought up to date now, one row per
 *	  table with what it took.
 *
 * A snapshot rule mirrors each of its tables to the target
 * (rule_snapshot.c), one target transaction per table, and adds what it
 * did to replicator.rule_tables.  A cdc rule waits until its worker has
 * applied everything committed before the call, and reports what the
 * worker did meanwhile.  Either way it may run from cron, and again after
 * a failure: a mirror compares before it writes, so a table already equal
 * costs hashes and nothing else.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "connection.h"
#include "replicas.h"
#include "rule_catalog.h"
#include "rule_compat.h"
#include "rule_snapshot.h"
#include "rules.h"

#define CDC_WAIT_MS		60000

/* A table's counters in replicator.rule_tables, and its state. */
typedef struct TableCounters
{
	char	   *table_name;
	char	   *state;
	int64		inserted;
	int64		updated;
	int64		deleted;
} TableCounters;

/* The rule's rows of replicator.rule_tables, read as the owner. */
static List *
read_counters(const char *name, bool fresh)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	List	   *rows = NIL;

	SPI_connect();
	/* not read-only: a fresh snapshot sees what the worker just committed */
	if (replicator_spi_execute_as_owner("SELECT table_name, state, inserted, updated, deleted"
										" FROM replicator.rule_tables"
										" WHERE rule OPERATOR(pg_catalog.=) $1 ORDER BY table_name",
										1, types, values, NULL, !fresh) != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.rule_tables");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(cxt);
		TableCounters *c = palloc0(sizeof(TableCounters));

		c->table_name = pstrdup(SPI_getvalue(tup, desc, 1));
		c->state = pstrdup(SPI_getvalue(tup, desc, 2));
		c->inserted = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		c->updated = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		c->deleted = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
		rows = lappend(rows, c);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return rows;
}

static TableCounters *
find_counters(List *rows, const char *table_name)
{
	ListCell   *lc;

	foreach(lc, rows)
	{
		TableCounters *c = lfirst(lc);

		if (strcmp(c->table_name, table_name) == 0)
			return c;
	}
	return NULL;
}

static void
put_row(ReturnSetInfo *rsinfo, const char *table_name, int64 inserted, int64 updated, int64 deleted)
{
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	values[0] = CStringGetTextDatum(table_name);
	values[1] = Int64GetDatum(inserted);
	values[2] = Int64GetDatum(updated);
	values[3] = Int64GetDatum(deleted);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* The table is ready, copied now, with what this sync did added. */
static void
record_table(const char *name, const char *table_name, int64 inserted, int64 updated, int64 deleted)
{
	Oid			types[5] = {TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID};
	Datum		values[5];

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(table_name);
	values[2] = Int64GetDatum(inserted);
	values[3] = Int64GetDatum(updated);
	values[4] = Int64GetDatum(deleted);
	SPI_connect();
	if (replicator_spi_execute_as_owner("INSERT INTO replicator.rule_tables AS r"
										" (rule, table_name, state, inserted, updated, deleted, copied_at)"
										" VALUES ($1, $2, 'ready', $3, $4, $5, pg_catalog.now())"
										" ON CONFLICT (rule, table_name) DO UPDATE SET state = 'ready', reason = NULL,"
										" inserted = r.inserted OPERATOR(pg_catalog.+) EXCLUDED.inserted,"
										" updated = r.updated OPERATOR(pg_catalog.+) EXCLUDED.updated,"
										" deleted = r.deleted OPERATOR(pg_catalog.+) EXCLUDED.deleted,"
										" copied_at = EXCLUDED.copied_at",
										5, types, values, NULL, false) != SPI_OK_INSERT)
		elog(ERROR, "could not update replicator.rule_tables");
	SPI_finish();
}

/* cdc: wait for the worker, and report what it did meanwhile. */
static void
sync_cdc(ReturnSetInfo *rsinfo, const char *name)
{
	List	   *volatile before = NIL;
	List	   *volatile after = NIL;
	ListCell   *lc;
	volatile bool caught_up = false;

	/* the worker records the counts with every batch meanwhile */
	replicator_rule_want_counts(name, true);
	PG_TRY();
	{
		before = read_counters(name, true);
		caught_up = replicator_rule_wait(name, CDC_WAIT_MS);
		if (caught_up)
			after = read_counters(name, true);
	}
	PG_FINALLY();
	{
		replicator_rule_want_counts(name, false);
	}
	PG_END_TRY();
	if (!caught_up)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rule \"%s\" did not apply every committed change within %d s",
						name, CDC_WAIT_MS / 1000),
				 errdetail("Its worker is behind, stopped, or cannot reach the target."),
				 errhint("SELECT * FROM replicator.rule_status WHERE rule = '%s' shows its state and last error.",
						 name)));
	foreach(lc, after)
	{
		TableCounters *a = lfirst(lc);
		TableCounters *b = find_counters(before, a->table_name);

		put_row(rsinfo, a->table_name,
				a->inserted - (b ? b->inserted : 0),
				a->updated - (b ? b->updated : 0),
				a->deleted - (b ? b->deleted : 0));
	}
}

/*
 * The schema compatibility report: any error stops the sync before a table
 * is written, and names every error; warnings are told as a notice.
 */
static void
check_compat(PGconn *conn, RuleConfig *config, List *tables, List *missing)
{
	List	   *issues = replicator_rule_compat(conn, config, tables, missing);
	StringInfoData errors;
	int			nerrors = 0;
	int			nwarnings = 0;
	ListCell   *lc;

	initStringInfo(&errors);
	foreach(lc, issues)
	{
		RuleCompatIssue *issue = lfirst(lc);

		if (!issue->error)
		{
			nwarnings++;
			continue;
		}
		appendStringInfo(&errors, "%s%s%s%s: %s%s%s", nerrors ? "\n" : "",
						 issue->table_name, issue->column_name ? "." : "",
						 issue->column_name ? quote_identifier(issue->column_name) : "",
						 issue->issue, issue->detail ? "; " : "", issue->detail ? issue->detail : "");
		nerrors++;
	}
	if (nerrors > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rule \"%s\" cannot sync: %d schema incompatibilities with replica \"%s\"",
						config->name, nerrors, config->target),
				 errdetail("Nothing was written.\n%s", errors.data),
				 errhint("SELECT * FROM replicator.validate_rule('%s') lists every issue.", config->name)));
	if (nwarnings > 0)
		ereport(NOTICE,
				(errmsg("rule \"%s\": %d schema warnings with replica \"%s\"",
						config->name, nwarnings, config->target),
				 errhint("SELECT * FROM replicator.validate_rule('%s') lists them.", config->name)));
}

/* snapshot: mirror every table of the rule, one at a time. */
static void
sync_snapshot(ReturnSetInfo *rsinfo, RuleConfig *config)
{
	List	   *missing = NIL;
	List	   *tables = replicator_rule_resolve(config, &missing);
	List	   *states = read_counters(config->name, false);
	List	   *todo = NIL;
	ListCell   *lc;
	char	   *error = NULL;
	PGconn	   *volatile conn = NULL;

	foreach(lc, tables)
	{
		RuleTable  *table = lfirst(lc);
		TableCounters *c = find_counters(states, table->qualified);

		if (c && strcmp(c->state, "paused") == 0)
		{
			ereport(NOTICE,
					(errmsg("table %s of rule \"%s\" is paused: not synced",
							table->qualified, config->name)));
			continue;
		}
		/* before anything is written: every table can be mirrored */
		if (table->key == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s of rule \"%s\" has no primary key or replica identity index",
							table->qualified, config->name),
					 errdetail("A snapshot matches rows on both sides by their key; nothing was synced."),
					 errhint("ALTER TABLE %s ADD PRIMARY KEY (...), or take the table out of the rule.",
							 table->qualified)));
		todo = lappend(todo, table);
	}

	PG_TRY();
	{
		conn = replicator_remote_connect(config->conninfo,
										 psprintf("replicator:rule:%s:sync", config->name),
										 REPLICATOR_SESSION_APPLY,
										 replicator_replica_requires_password(config->changed_by),
										 &error, NULL);
		if (conn == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not connect to replica \"%s\", the target of rule \"%s\"",
							config->target, config->name),
					 errdetail("%s", error),
					 errhint("SELECT * FROM replicator.replica_status WHERE name = '%s' shows its connection string.",
							 config->target)));

		check_compat(conn, config, todo, missing);

		foreach(lc, todo)
		{
			RuleTable  *table = lfirst(lc);
			int64		inserted = 0;
			int64		updated = 0;
			int64		deleted = 0;
			int64		rows_sent = 0;

			CHECK_FOR_INTERRUPTS();
			replicator_rule_mirror_table(conn, table, &inserted, &updated, &deleted, &rows_sent);
			record_table(config->name, table->qualified, inserted, updated, deleted);
			put_row(rsinfo, table->qualified, inserted, updated, deleted);
		}
	}
	PG_FINALLY();
	{
		replicator_remote_close(conn);
	}
	PG_END_TRY();
}

PG_FUNCTION_INFO_V1(replicator_sync);

Datum
replicator_sync(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name;
	RuleConfig	config;

	replicator_check_admin();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	replicator_rule_get(name, &config);
	InitMaterializedSRF(fcinfo, 0);

	if (config.paused)
	{
		ereport(NOTICE,
				(errmsg("rule \"%s\" is paused: nothing synced", name),
				 errhint("SELECT replicator.resume_rule('%s') resumes it.", name)));
		return (Datum) 0;
	}
	if (config.cdc)
		sync_cdc(rsinfo, name);
	else
		sync_snapshot(rsinfo, &config);
	return (Datum) 0;
}
