/*-------------------------------------------------------------------------
 *
 * rule_decode.c
 *	  The logical decoding output plugin of cdc rules ("replicator").
 *
 * A rule's worker decodes its slot in its own process (rule_worker.c) and
 * sets replicator_rule_decode_sink: every change of a committed transaction
 * reaches it with its rows as their columns' text (RuleRow), which the
 * target's input functions read back, whatever its column order.
 * Anywhere else, as through pg_logical_slot_peek_changes(), the plugin
 * writes each change as a line of JSON: handy to look at.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "access/sysattr.h"
#include "nodes/bitmapset.h"

#include "rule_decode.h"

RuleDecodeSink *replicator_rule_decode_sink = NULL;

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

typedef struct DecodeState
{
	MemoryContext cxt;			/* reset after each change */
	RuleTxn		txn;
} DecodeState;

static void
decode_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	DecodeState *state = palloc0(sizeof(DecodeState));

	state->cxt = AllocSetContextCreate(ctx->context, "replicator decode",
									   ALLOCSET_DEFAULT_SIZES);
	ctx->output_plugin_private = state;
	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;
}

static void
decode_shutdown(LogicalDecodingContext *ctx)
{
	DecodeState *state = ctx->output_plugin_private;

	MemoryContextDelete(state->cxt);
}

static void
set_txn(DecodeState *state, ReorderBufferTXN *txn)
{
	state->txn.xid = txn->xid;
	state->txn.end_lsn = txn->end_lsn;
	state->txn.commit_time = txn->xact_time.commit_time;
}


/* PostgreSQL wants a begin callback; the worker needs nothing at BEGIN */
static void
decode_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
}

static void
decode_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	DecodeState *state = ctx->output_plugin_private;

	set_txn(state, txn);
	if (replicator_rule_decode_sink)
		replicator_rule_decode_sink->commit(replicator_rule_decode_sink->arg, &state->txn);
}

/*
 * A row as its columns' text.  Values are their type's output (as pgoutput
 * sends them), never a cast: a cast is code a type's owner chose, and
 * decoding cannot run SQL.  Columns an update left TOASTed on disk are
 * not in the WAL: they are left out and named in *unchanged.
 */
RuleRow *
replicator_rule_row(TupleDesc desc, Datum *values, bool *nulls, List **unchanged)
{
	RuleRow    *row = palloc(sizeof(RuleRow));

	row->ncols = 0;
	row->names = palloc(sizeof(char *) * desc->natts);
	row->values = palloc(sizeof(char *) * desc->natts);
	row->json = palloc(sizeof(bool) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			typoutput;
		bool		varlena;

		if (att->attisdropped)
			continue;
		/* decoding an update: a value on disk is one it left unchanged */
		if (unchanged && !nulls[i] && att->attlen == -1 &&
			VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(values[i])))
		{
			*unchanged = lappend(*unchanged, pstrdup(NameStr(att->attname)));
			continue;
		}
		row->names[row->ncols] = pstrdup(NameStr(att->attname));
		row->json[row->ncols] = att->atttypid == JSONOID || att->atttypid == JSONBOID;
		if (nulls[i])
			row->values[row->ncols] = NULL;
		else
		{
			getTypeOutputInfo(att->atttypid, &typoutput, &varlena);
			row->values[row->ncols] = OidOutputFunctionCall(typoutput, values[i]);
		}
		row->ncols++;
	}
	return row;
}

/*
 * A row as a JSON object, column name to value: json and jsonb values as
 * JSON, the rest as strings, SQL NULLs left out (so a JSON null is one).
 */
char *
replicator_rule_row_json(const RuleRow *row)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < row->ncols; i++)
	{
		if (row->values[i] == NULL)
			continue;
		if (buf.len > 1)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, row->names[i]);
		appendStringInfoChar(&buf, ':');
		if (row->json[i])
			appendStringInfoString(&buf, row->values[i]);
		else
			escape_json(&buf, row->values[i]);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

static RuleRow *
tuple_row(Relation rel, HeapTuple tuple, List **unchanged)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Datum	   *values = palloc(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);

	heap_deform_tuple(tuple, desc, values, nulls);
	return replicator_rule_row(desc, values, nulls, unchanged);
}

/* The replica identity's values, as text: equal keys, equal strings. */
static char *
tuple_key(Relation rel, HeapTuple tuple)
{
	Bitmapset  *attrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData buf;
	int			x = -1;

	/* REPLICA IDENTITY FULL: the rule identifies rows by the primary key */
	if (bms_is_empty(attrs))
		attrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	initStringInfo(&buf);
	while ((x = bms_next_member(attrs, x)) >= 0)
	{
		AttrNumber	attnum = x + FirstLowInvalidHeapAttributeNumber;
		bool		isnull;
		Datum		value;
		Oid			typoutput;
		bool		varlena;

		if (attnum <= 0)
			continue;
		value = heap_getattr(tuple, attnum, desc, &isnull);
		if (!isnull)
		{
			getTypeOutputInfo(TupleDescAttr(desc, attnum - 1)->atttypid, &typoutput, &varlena);
			appendStringInfoString(&buf, OidOutputFunctionCall(typoutput, value));
		}
		appendStringInfoChar(&buf, '\x1f');
	}
	return buf.data;
}

static void
write_text(LogicalDecodingContext *ctx, RuleChange *change)
{
	OutputPluginPrepareWrite(ctx, true);
	appendStringInfo(ctx->out, "{\"op\":\"%c\",\"table\":", change->op);
	escape_json(ctx->out, get_rel_name(change->relid));
	if (change->new_row)
		appendStringInfo(ctx->out, ",\"new\":%s", replicator_rule_row_json(change->new_row));
	if (change->old_row)
		appendStringInfo(ctx->out, ",\"old\":%s", replicator_rule_row_json(change->old_row));
	appendStringInfoChar(ctx->out, '}');
	OutputPluginWrite(ctx, true);
}

static void
decode_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation rel,
			  ReorderBufferChange *rb_change)
{
	DecodeState *state = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(state->cxt);
	RuleChange	change;
	Oid			saved_user;
	int			saved_context;

	/*
	 * Rendering a row can run code the table's owner chose (a cast of a
	 * type of theirs to json): it runs as them, never as the worker's
	 * superuser.  An error aborts the transaction, which restores the user.
	 */
	GetUserIdAndSecContext(&saved_user, &saved_context);
	SetUserIdAndSecContext(rel->rd_rel->relowner,
						   saved_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);

	memset(&change, 0, sizeof(change));
	change.relid = RelationGetRelid(rel);
	change.old_is_full = rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL;
	switch (rb_change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			change.op = RULE_INSERT;
			change.new_row = tuple_row(rel, &rb_change->data.tp.newtuple->tuple, NULL);
			change.key = tuple_key(rel, &rb_change->data.tp.newtuple->tuple);
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			change.op = RULE_UPDATE;
			change.new_row = tuple_row(rel, &rb_change->data.tp.newtuple->tuple, &change.unchanged);
			change.key = tuple_key(rel, &rb_change->data.tp.newtuple->tuple);
			if (rb_change->data.tp.oldtuple)
			{
				change.old_row = tuple_row(rel, &rb_change->data.tp.oldtuple->tuple, NULL);
				change.old_key = tuple_key(rel, &rb_change->data.tp.oldtuple->tuple);
			}
			else
				change.old_is_full = false;
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			change.op = RULE_DELETE;
			/* without a replica identity there is nothing to find the row by */
			if (rb_change->data.tp.oldtuple == NULL)
				goto done;
			change.old_row = tuple_row(rel, &rb_change->data.tp.oldtuple->tuple, NULL);
			change.key = tuple_key(rel, &rb_change->data.tp.oldtuple->tuple);
			break;
		default:
			goto done;
	}
	SetUserIdAndSecContext(saved_user, saved_context);
	set_txn(state, txn);
	if (replicator_rule_decode_sink)
		replicator_rule_decode_sink->change(replicator_rule_decode_sink->arg, &state->txn, &change);
	else
		write_text(ctx, &change);
done:
	SetUserIdAndSecContext(saved_user, saved_context);
	MemoryContextSwitchTo(old);
	MemoryContextReset(state->cxt);
}

static void
decode_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations,
				Relation relations[], ReorderBufferChange *rb_change)
{
	DecodeState *state = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(state->cxt);

	set_txn(state, txn);
	for (int i = 0; i < nrelations; i++)
	{
		RuleChange	change;

		memset(&change, 0, sizeof(change));
		change.op = RULE_TRUNCATE;
		change.relid = RelationGetRelid(relations[i]);
		if (replicator_rule_decode_sink)
			replicator_rule_decode_sink->change(replicator_rule_decode_sink->arg, &state->txn, &change);
		else
			write_text(ctx, &change);
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(state->cxt);
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = decode_startup;
	cb->begin_cb = decode_begin;
	cb->change_cb = decode_change;
	cb->truncate_cb = decode_truncate;
	cb->commit_cb = decode_commit;
	cb->shutdown_cb = decode_shutdown;
}
