/*-------------------------------------------------------------------------
 *
 * write_guard.c
 *	  Statement triggers that keep events append-only and gapless.
 *
 * Rows enter events, and id changes, only through the extension's own
 * statements.  Before running one, the extension hands out a one-shot token
 * naming the relation; the BEFORE STATEMENT trigger of that statement
 * consumes it.  Any other statement, including one nested inside ours (a
 * user trigger, a function in a VALUES list), finds no token and fails.
 * On a slave, the sessions of its master's streaming worker insert too
 * (node_guard.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/rel.h"

#include "dump_restore.h"
#include "node_guard.h"
#include "write_guard.h"

static Oid	write_token = InvalidOid;
/* a DELETE: only a demoted master's move of its diverged events */
static Oid	delete_token = InvalidOid;

void
replicator_allow_next_write(Oid relid)
{
	write_token = relid;
}

void
replicator_allow_next_delete(Oid relid)
{
	delete_token = relid;
}

void
replicator_forbid_writes(void)
{
	write_token = InvalidOid;
	delete_token = InvalidOid;
}

static const char *
trigger_command(TriggerData *trigdata)
{
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		return "INSERT";
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		return "UPDATE";
	if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		return "DELETE";
	return "TRUNCATE";
}

static TriggerData *
statement_trigger_data(FunctionCallInfo fcinfo, const char *funcname)
{
	TriggerData *trigdata;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s() was not called by the trigger manager", funcname)));
	trigdata = (TriggerData *) fcinfo->context;
	if (!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s() must be fired BEFORE, FOR EACH STATEMENT", funcname)));
	return trigdata;
}

/* True, once, if the extension itself runs this statement. */
static bool
consume_token(TriggerData *trigdata)
{
	Oid			relid = RelationGetRelid(trigdata->tg_relation);

	if (OidIsValid(delete_token) && delete_token == relid &&
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		delete_token = InvalidOid;
		return true;
	}
	if (OidIsValid(write_token) && write_token == relid &&
		!TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event) &&
		!TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		write_token = InvalidOid;
		return true;
	}
	return false;
}

PG_FUNCTION_INFO_V1(replicator_filter_sql_command);

/*
 * slate's name: rejects UPDATE, DELETE and TRUNCATE on events, and any
 * change to the id table that insert_events does not make.
 */
Datum
replicator_filter_sql_command(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = statement_trigger_data(fcinfo, "filter_sql_command");

	if (consume_token(trigdata))
		return PointerGetDatum(NULL);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s on table \"%s\" is not allowed",
					trigger_command(trigdata),
					RelationGetRelationName(trigdata->tg_relation)),
			 errdetail("Events are immutable and their ids gapless; only insert_events() and insert_events_array() change these tables."),
			 errhint("Add events with insert_events_array().")));
	return PointerGetDatum(NULL);	/* keep compiler quiet */
}

PG_FUNCTION_INFO_V1(replicator_filter_insert);

/*
 * Rejects INSERT into events by any path but insert_events, and the COPY of
 * a superuser restoring a dump into an empty table (dump_restore.c).
 */
Datum
replicator_filter_insert(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = statement_trigger_data(fcinfo, "filter_insert");

	if (consume_token(trigdata))
		return PointerGetDatum(NULL);
	if (replicator_restore_copy_begins(trigdata->tg_relation))
		return PointerGetDatum(NULL);
	/* on a slave: its master's stream, at the node's epoch */
	if (replicator_master_stream_may_write())
		return PointerGetDatum(NULL);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("INSERT into table \"%s\" is only allowed through insert_events_array() or insert_events()",
					RelationGetRelationName(trigdata->tg_relation)),
			 errdetail("They assign gapless ids in commit order; other inserts would break them."),
			 errhint("Use SELECT insert_events_array(ARRAY['{...}']::jsonb[]).")));
	return PointerGetDatum(NULL);	/* keep compiler quiet */
}
