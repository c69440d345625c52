/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  The notify_insert trigger: tells listeners on channel "eventsinsert"
 *	  that an event was committed.
 *
 * The payload is slate's {"table", "id", "event"}, but the event is left out
 * when the payload would exceed NOTIFY's limit: slate fails the insert of
 * any event over about 8 kB, we deliver the notification without it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/jsonb.h"
#include "utils/rel.h"

#include "notify.h"

/* async.c's limit: the payload must be shorter than this. */
#define NOTIFY_PAYLOAD_MAX_LENGTH	(BLCKSZ - NAMEDATALEN - 128)

/*
 * Above this stored size an event's text cannot fit whatever it holds, so it
 * is not rendered at all (text is never under a quarter of jsonb's size).
 */
#define EVENT_RENDER_LIMIT	(4 * NOTIFY_PAYLOAD_MAX_LENGTH)

/* restore_events copies many events at once and notifies once for all */
static bool suppressed = false;

void
replicator_suppress_notify(bool suppress)
{
	suppressed = suppress;
}

static void
append_header(StringInfo payload, const char *table, int64 id)
{
	appendStringInfoString(payload, "{\"table\":");
	escape_json(payload, table);
	appendStringInfo(payload, ",\"id\":" INT64_FORMAT, id);
}

/* One notification for restored events: the last id restored. */
void
replicator_notify_restored(int64 last_id)
{
	StringInfoData payload;

	initStringInfo(&payload);
	append_header(&payload, "events", last_id);
	appendStringInfoString(&payload, ",\"restored\":true}");
	Async_Notify(REPLICATOR_NOTIFY_CHANNEL, payload.data);
	pfree(payload.data);
}

/* Where id and event are in the table, looked up once per trigger call site. */
typedef struct EventColumns
{
	Oid			relid;
	int			id_attnum;
	int			event_attnum;
} EventColumns;

static EventColumns *
event_columns(FunctionCallInfo fcinfo, Relation rel)
{
	EventColumns *cols = (EventColumns *) fcinfo->flinfo->fn_extra;

	if (cols == NULL || cols->relid != RelationGetRelid(rel))
	{
		TupleDesc	tupdesc = RelationGetDescr(rel);

		if (cols == NULL)
			cols = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(EventColumns));
		cols->id_attnum = SPI_fnumber(tupdesc, "id");
		cols->event_attnum = SPI_fnumber(tupdesc, "event");
		if (cols->id_attnum <= 0 || cols->event_attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("notify_event_insert() needs columns \"id\" and \"event\" on table \"%s\"",
							RelationGetRelationName(rel))));
		cols->relid = RelationGetRelid(rel);
		fcinfo->flinfo->fn_extra = cols;
	}
	return cols;
}

PG_FUNCTION_INFO_V1(replicator_notify_event_insert);

Datum
replicator_notify_event_insert(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	HeapTuple	tuple;
	EventColumns *cols;
	bool		isnull;
	Datum		id;
	Datum		event;
	StringInfoData payload;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("notify_event_insert() must be fired FOR EACH ROW on INSERT")));

	tupdesc = RelationGetDescr(trigdata->tg_relation);
	tuple = trigdata->tg_trigtuple;
	cols = event_columns(fcinfo, trigdata->tg_relation);

	id = heap_getattr(tuple, cols->id_attnum, tupdesc, &isnull);
	if (isnull || suppressed)
		return PointerGetDatum(tuple);

	initStringInfo(&payload);
	append_header(&payload, RelationGetRelationName(trigdata->tg_relation), DatumGetInt64(id));

	event = heap_getattr(tuple, cols->event_attnum, tupdesc, &isnull);
	if (!isnull && toast_raw_datum_size(event) <= EVENT_RENDER_LIMIT)
	{
		Jsonb	   *jb = DatumGetJsonbP(event);
		char	   *text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
		size_t		len = strlen(text);

		/* ,"event":  + text + closing brace */
		if (payload.len + 9 + len + 1 < NOTIFY_PAYLOAD_MAX_LENGTH)
		{
			appendStringInfoString(&payload, ",\"event\":");
			appendBinaryStringInfo(&payload, text, len);
		}
		pfree(text);
		if ((Pointer) jb != DatumGetPointer(event))
			pfree(jb);
	}
	appendStringInfoChar(&payload, '}');

	Async_Notify(REPLICATOR_NOTIFY_CHANNEL, payload.data);
	pfree(payload.data);

	return PointerGetDatum(tuple);
}
