/*-------------------------------------------------------------------------
 *
 * dump_restore.c
 *	  pg_dump and pg_restore of an event source.
 *
 * events and replicator.replicas are marked with pg_extension_config_dump,
 * so a dump holds their rows.  pg_restore creates the extension (tables,
 * the id row, triggers) and then COPYs the rows in.  The guards let exactly
 * one kind of statement through for that: a superuser's top-level
 * COPY ... FROM into an empty events table.  When it ends, its ids must be
 * exactly 1..N with ts never decreasing, and the id row then continues
 * after them, as restore_events leaves it.  The id table itself is not
 * dumped: it follows from the events.
 *
 * Replicas that arrive by any path but add_replica (a restored dump, a plain
 * INSERT) are paused with a reason: a copy of a source must not stream into
 * the original's destinations until an operator says so (resume_replica).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/proc.h"
#include "tcop/pquery.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "dump_restore.h"
#include "notify.h"
#include "shmem.h"
#include "write_guard.h"

/* The restore COPY under way: its table, and the (sub)transaction it runs in. */
static Oid	restore_relid = InvalidOid;
static LocalTransactionId restore_lxid = InvalidLocalTransactionId;
static SubTransactionId restore_subxid = InvalidSubTransactionId;

/* add_replica's own insert, in this (sub)transaction */
static LocalTransactionId api_lxid = InvalidLocalTransactionId;
static SubTransactionId api_subxid = InvalidSubTransactionId;

static bool callbacks_registered = false;

static void
end_restore_copy(void)
{
	if (OidIsValid(restore_relid))
		replicator_suppress_notify(false);
	restore_relid = InvalidOid;
	restore_lxid = InvalidLocalTransactionId;
	restore_subxid = InvalidSubTransactionId;
}

/* A COPY that fails must not leave notifications suppressed. */
static void
xact_callback(XactEvent event, void *arg)
{
	end_restore_copy();
	api_lxid = InvalidLocalTransactionId;
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		if (restore_subxid == mySubid)
			end_restore_copy();
		if (api_subxid == mySubid)
			api_lxid = InvalidLocalTransactionId;
	}
}

static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
	callbacks_registered = true;
}

static int
trigger_depth(void)
{
	return DatumGetInt32(OidFunctionCall0(F_PG_TRIGGER_DEPTH));
}

/*
 * True if the statement firing a trigger on rel at depth 1 is a top-level
 * COPY rel FROM ... (what pg_restore and a plain-format dump run).  Nested
 * statements (fired from a row trigger) run at a greater depth.
 */
static bool
is_top_level_copy_from(Relation rel)
{
	PlannedStmt *pstmt;
	CopyStmt   *copy;

	if (ActivePortal == NULL || list_length(ActivePortal->stmts) != 1 ||
		trigger_depth() != 1)
		return false;
	pstmt = linitial_node(PlannedStmt, ActivePortal->stmts);
	if (pstmt->commandType != CMD_UTILITY || pstmt->utilityStmt == NULL ||
		!IsA(pstmt->utilityStmt, CopyStmt))
		return false;
	copy = (CopyStmt *) pstmt->utilityStmt;
	return copy->is_from && copy->relation != NULL &&
		RangeVarGetRelid(copy->relation, NoLock, true) == RelationGetRelid(rel);
}

static int64
spi_int8(const char *sql, bool *isnull)
{
	Datum		d;

	if (SPI_execute(sql, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "query failed: %s", sql);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
	return *isnull ? 0 : DatumGetInt64(d);
}

/*
 * Called by the BEFORE STATEMENT INSERT guard of events, for a statement
 * insert_events did not make.  True if it is the restore COPY, which may
 * then go ahead; errors that say why for a COPY that may not.
 */
bool
replicator_restore_copy_begins(Relation rel)
{
	const char *nsp;
	const char *relname = RelationGetRelationName(rel);
	bool		isnull;

	if (!is_top_level_copy_from(rel))
		return false;
	if (OidIsValid(restore_relid))
		return false;
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("COPY into table \"%s\" is only allowed for a superuser restoring a dump", relname),
				 errdetail("Events enter through insert_events_array() or insert_events(); COPY only refills an empty table from a dump.")));

	nsp = quote_identifier(get_namespace_name(RelationGetNamespace(rel)));
	SPI_connect();
	/* as restore_events: no insert_events until this COPY commits */
	SPI_execute(psprintf("LOCK TABLE %s.%s, %s.id IN EXCLUSIVE MODE",
						 nsp, quote_identifier(relname), nsp), false, 0);
	if (spi_int8(psprintf("SELECT count(*) FROM (SELECT FROM %s.%s LIMIT 1) s",
						  nsp, quote_identifier(relname)), &isnull) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("COPY into table \"%s\" is only allowed while it is empty", relname),
				 errdetail("COPY only refills an empty event source from a dump; events are immutable."),
				 errhint("Add events with insert_events_array().")));
	SPI_finish();

	register_callbacks();
	restore_relid = RelationGetRelid(rel);
	restore_lxid = MyProc->lxid;
	restore_subxid = GetCurrentSubTransactionId();
	/* one notification for all restored events, as restore_events sends */
	replicator_suppress_notify(true);
	return true;
}

/* The id row continues after the restored events, ts still increasing. */
static void
continue_ids(Oid nspid, const char *nsp, const char *events, int64 max_id)
{
	replicator_allow_next_write(get_relname_relid("id", nspid));
	PG_TRY();
	{
		if (SPI_execute(psprintf("UPDATE %s.id SET id = " INT64_FORMAT " + 1,"
								 " last_ts = GREATEST(last_ts, (SELECT max(ts) FROM %s))",
								 nsp, max_id, events), false, 0) != SPI_OK_UPDATE ||
			SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("table %s.id must hold exactly one row", nsp)));
	}
	PG_FINALLY();
	{
		replicator_forbid_writes();
	}
	PG_END_TRY();
}

PG_FUNCTION_INFO_V1(replicator_check_restored_events);

/*
 * AFTER INSERT FOR EACH STATEMENT on events: at the end of the restore COPY,
 * its ids must be exactly 1..N and its ts never decrease; the id row then
 * continues after them.  Any other statement passes at once.
 */
Datum
replicator_check_restored_events(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	const char *nsp;
	const char *events;
	int64		count,
				min_id,
				max_id,
				decreasing;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("check_restored_events() must be fired AFTER, FOR EACH STATEMENT")));
	rel = trigdata->tg_relation;
	if (restore_relid != RelationGetRelid(rel) || restore_lxid != MyProc->lxid ||
		restore_subxid != GetCurrentSubTransactionId() || trigger_depth() != 1)
		return PointerGetDatum(NULL);
	end_restore_copy();

	nsp = quote_identifier(get_namespace_name(RelationGetNamespace(rel)));
	events = psprintf("%s.%s", nsp, quote_identifier(RelationGetRelationName(rel)));
	SPI_connect();
	count = spi_int8(psprintf("SELECT count(*) FROM %s", events), &isnull);
	min_id = spi_int8(psprintf("SELECT min(id) FROM %s", events), &isnull);
	max_id = spi_int8(psprintf("SELECT max(id) FROM %s", events), &isnull);
	if (count > 0 && (min_id != 1 || max_id != count))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("restored events must have ids exactly 1..N"),
				 errdetail("COPY brought " INT64_FORMAT " events with ids from " INT64_FORMAT " to " INT64_FORMAT ".",
						   count, min_id, max_id)));
	decreasing = spi_int8(psprintf("SELECT count(*) FROM (SELECT ts < lag(ts) OVER (ORDER BY id) AS d FROM %s) s WHERE d",
								   events), &isnull);
	if (decreasing > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("restored events must have ts never decreasing as id grows"),
				 errdetail("ts decreases at " INT64_FORMAT " places.", decreasing)));
	if (count > 0)
	{
		/* the allocator continues after the restored events, ts increasing */
		continue_ids(RelationGetNamespace(rel), nsp, events, max_id);
		replicator_notify_restored(max_id);
		replicator_wake_workers_at_commit();
	}
	SPI_finish();
	return PointerGetDatum(NULL);
}

/* add_replica's next insert into replicator.replicas is its own. */
void
replicator_replica_api_insert(bool starting)
{
	register_callbacks();
	api_lxid = starting ? MyProc->lxid : InvalidLocalTransactionId;
	api_subxid = GetCurrentSubTransactionId();
}

PG_FUNCTION_INFO_V1(replicator_pause_unmanaged_replica);

/*
 * BEFORE INSERT FOR EACH ROW on replicator.replicas: a row add_replica did
 * not insert (a restored dump, a plain INSERT) arrives paused, with the
 * reason in invalid_reason, until resume_replica.
 */
Datum
replicator_pause_unmanaged_replica(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	int			cols[3];
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	char	   *name;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("pause_unmanaged_replica() must be fired BEFORE INSERT, FOR EACH ROW")));
	if (api_lxid == MyProc->lxid && api_subxid == GetCurrentSubTransactionId())
		return PointerGetDatum(trigdata->tg_trigtuple);

	desc = RelationGetDescr(trigdata->tg_relation);
	cols[0] = SPI_fnumber(desc, "enabled");
	cols[1] = SPI_fnumber(desc, "invalid_reason");
	cols[2] = SPI_fnumber(desc, "invalid_since");
	name = SPI_getvalue(trigdata->tg_trigtuple, desc, SPI_fnumber(desc, "name"));
	for (int i = 0; i < 3; i++)
		if (cols[i] <= 0)
			elog(ERROR, "replicator.replicas has no column %d", i);
	values[0] = BoolGetDatum(false);
	values[1] = CStringGetTextDatum(psprintf("paused: not added by add_replica (restored from a dump?); a copy of a source must not stream into the original's destination; check the destination, then SELECT replicator.resume_replica('%s')",
											 name ? name : "?"));
	values[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	return PointerGetDatum(heap_modify_tuple_by_cols(trigdata->tg_trigtuple, desc, 3,
													 cols, values, nulls));
}
