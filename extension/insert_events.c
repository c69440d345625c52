/*-------------------------------------------------------------------------
 *
 * insert_events.c
 *	  insert_events() and insert_events_array(): the only ways rows enter the
 *	  events table.
 *
 * Ids are allocated by updating the one row of the id table; the row lock is
 * held until commit, so ids are gapless (a rollback returns them) and are
 * committed in id order.  ts is taken once the lock is held, as
 * greatest(clock_timestamp(), last call's ts + 1 microsecond): every event of
 * a call shares it and it increases strictly from one call to the next.
 *
 * slate's text form is parsed, never executed: each row must be
 * ($1[k], $2, '<json>'), and its JSON goes down the same path as
 * insert_events_array(jsonb[]).  The two have different names because slate's
 * replicator requires exactly one routine named insert_events.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "node_guard.h"
#include "shmem.h"
#include "write_guard.h"

/* Saved plans, for the schema the extension was created in. */
typedef struct InsertPlans
{
	Oid			nspid;
	char	   *nspname;
	SPIPlanPtr	allocate;
	SPIPlanPtr	insert;
} InsertPlans;

static InsertPlans plans = {InvalidOid, NULL, NULL, NULL};

/* What a call inserted. */
typedef struct InsertResult
{
	int64		first_id;
	int64		count;
	TimestampTz ts;
} InsertResult;

static void
prepare_plans(Oid nspid)
{
	const char *nspname = get_namespace_name(nspid);
	const char *qnsp;
	char	   *sql;
	Oid			allocate_types[1] = {INT8OID};
	Oid			insert_types[3] = {INT8OID, TIMESTAMPTZOID, JSONBARRAYOID};
	SPIPlanPtr	allocate;
	SPIPlanPtr	insert;

	if (nspname == NULL)
		elog(ERROR, "cache lookup failed for namespace %u", nspid);
	if (plans.nspid == nspid && strcmp(plans.nspname, nspname) == 0)
		return;

	qnsp = quote_identifier(nspname);

	sql = psprintf("UPDATE %s.id"
				   " SET id = id OPERATOR(pg_catalog.+) $1,"
				   "     last_ts = GREATEST(pg_catalog.clock_timestamp(),"
				   "         last_ts OPERATOR(pg_catalog.+) '1 microsecond'::pg_catalog.interval)"
				   " RETURNING id OPERATOR(pg_catalog.-) $1, last_ts",
				   qnsp);
	allocate = SPI_prepare(sql, 1, allocate_types);
	if (allocate == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));

	sql = psprintf("INSERT INTO %s.events (id, ts, event)"
				   " SELECT $1 OPERATOR(pg_catalog.+) u.o OPERATOR(pg_catalog.-) 1, $2, u.e"
				   " FROM pg_catalog.unnest($3) WITH ORDINALITY AS u(e, o)",
				   qnsp);
	insert = SPI_prepare(sql, 3, insert_types);
	if (insert == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));

	SPI_keepplan(allocate);
	SPI_keepplan(insert);
	if (plans.allocate)
		SPI_freeplan(plans.allocate);
	if (plans.insert)
		SPI_freeplan(plans.insert);
	if (plans.nspname)
		pfree(plans.nspname);
	plans.allocate = allocate;
	plans.insert = insert;
	plans.nspname = MemoryContextStrdup(TopMemoryContext, nspname);
	plans.nspid = nspid;
}

static Oid
source_relid(const char *relname, Oid nspid)
{
	Oid			relid = get_relname_relid(relname, nspid);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" does not exist",
						get_namespace_name(nspid), relname),
				 errhint("Recreate the extension: DROP EXTENSION replicator; CREATE EXTENSION replicator;")));
	return relid;
}

/*
 * Allocate ids for the events and insert them, in the schema nspid (where the
 * calling function lives).  events is a one-dimensional jsonb array without
 * NULLs.
 */
static InsertResult
insert_event_array(Oid nspid, ArrayType *events, int64 count)
{
	InsertResult result;
	Oid			id_relid;
	Oid			events_relid;
	Datum		args[3];
	bool		isnull;
	int			ret;

	result.count = count;

	/*
	 * A slave or a fenced master refuses before waiting for the id row, or
	 * for the table: planning locks it, and a promotion or an attach may be
	 * queued for it.
	 */
	replicator_check_insert_allowed();
	SPI_connect();
	prepare_plans(nspid);
	id_relid = source_relid("id", nspid);
	events_relid = source_relid("events", nspid);
	PG_TRY();
	{
		args[0] = Int64GetDatum(count);
		replicator_allow_next_write(id_relid);
		ret = SPI_execute_plan(plans.allocate, args, NULL, false, 0);
		replicator_forbid_writes();
		/* and again holding it: a promotion holds it while it changes roles */
		replicator_check_insert_allowed();
		if (ret != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "id allocation failed: %s", SPI_result_code_string(ret));
		if (SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("table \"%s.id\" must hold exactly one row, it holds " UINT64_FORMAT,
							plans.nspname, SPI_processed)));
		result.first_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 1, &isnull));
		result.ts = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 2, &isnull));

		args[0] = Int64GetDatum(result.first_id);
		args[1] = TimestampTzGetDatum(result.ts);
		args[2] = PointerGetDatum(events);
		replicator_allow_next_write(events_relid);
		ret = SPI_execute_plan(plans.insert, args, NULL, false, 0);
		replicator_forbid_writes();
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "insert into events failed: %s", SPI_result_code_string(ret));
		if (SPI_processed != (uint64) count)
			elog(ERROR, "inserted " UINT64_FORMAT " events instead of " INT64_FORMAT,
				 SPI_processed, count);
	}
	PG_FINALLY();
	{
		replicator_forbid_writes();
	}
	PG_END_TRY();

	SPI_finish();
	replicator_wake_workers_at_commit();
	return result;
}

/* ----------------------------------------------------------------
 * insert_events_array(jsonb[]); the C symbol keeps its 1.0 name, so that a
 * 1.0 install works with this library until ALTER EXTENSION UPDATE.
 * ----------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(replicator_insert_events_jsonb);

Datum
replicator_insert_events_jsonb(PG_FUNCTION_ARGS)
{
	ArrayType  *events;
	int64		count;
	InsertResult result;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("events must not be null")));
	events = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(events) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("events must be a one-dimensional array, not %d-dimensional",
						ARR_NDIM(events))));
	count = ArrayGetNItems(ARR_NDIM(events), ARR_DIMS(events));
	if (count == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must hold at least one event")));
	if (ARR_HASNULL(events))
	{
		bits8	   *bitmap = ARR_NULLBITMAP(events);

		for (int64 i = 0; i < count; i++)
			if (!(bitmap[i / 8] & (1 << (i % 8))))
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("event %lld of %lld is null",
								(long long) (i + 1), (long long) count)));
	}

	result = insert_event_array(get_func_namespace(fcinfo->flinfo->fn_oid), events, count);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum(result.first_id);
	values[1] = Int64GetDatum(result.first_id + result.count - 1);
	values[2] = TimestampTzGetDatum(result.ts);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* ----------------------------------------------------------------
 * slate's text form
 * ----------------------------------------------------------------
 */

static void
row_error(int row, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("row %d of insert_events() input: %s", row, what),
			 errdetail("Each row must be ($1[k], $2, '<json>'), with k the row's number counting from 1.")));
}

/* k if node is $1[k], else -1 */
static int
id_parameter_index(Node *node)
{
	A_Indirection *ind;
	A_Indices  *sub;
	A_Const    *k;

	if (!IsA(node, A_Indirection))
		return -1;
	ind = (A_Indirection *) node;
	if (!IsA(ind->arg, ParamRef) || ((ParamRef *) ind->arg)->number != 1 ||
		list_length(ind->indirection) != 1 ||
		!IsA(linitial(ind->indirection), A_Indices))
		return -1;
	sub = (A_Indices *) linitial(ind->indirection);
	if (sub->is_slice || sub->uidx == NULL || !IsA(sub->uidx, A_Const))
		return -1;
	k = (A_Const *) sub->uidx;
	if (k->isnull || !IsA(&k->val, Integer))
		return -1;
	return intVal(&k->val);
}

/* The JSON text of the event column, or NULL if it is not a string literal. */
static char *
event_literal(Node *node)
{
	A_Const    *c;

	if (IsA(node, TypeCast))
	{
		TypeCast   *cast = (TypeCast *) node;
		char	   *typname = strVal(llast(cast->typeName->names));

		if (cast->typeName->arrayBounds != NIL ||
			(strcmp(typname, "json") != 0 && strcmp(typname, "jsonb") != 0))
			return NULL;
		node = cast->arg;
	}
	if (!IsA(node, A_Const))
		return NULL;
	c = (A_Const *) node;
	if (c->isnull || !IsA(&c->val, String))
		return NULL;
	return strVal(&c->val);
}

/*
 * Parse slate's VALUES text into a jsonb array, with slate's errors for
 * the id parameters (same messages and hints), and ours for anything else.
 */
static ArrayType *
parse_values_text(const char *values, int *nrows)
{
	List	   *stmts;
	RawStmt    *raw;
	InsertStmt *ins;
	SelectStmt *sel;
	ListCell   *lc;
	int			count = 0;
	int			last = 0;
	int			row;
	Datum	   *events;

	if (strspn(values, " \t\r\n\f\v") == strlen(values))
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("No inserted rows found with parameters"),
				 errhint("id column for row to be inserted must be a parameter of the form \"$1[x]\" where x is the 1-indexed based index of the row")));

	stmts = raw_parser(psprintf("INSERT INTO events (id, ts, event) VALUES %s", values),
					   RAW_PARSE_DEFAULT);
	raw = list_length(stmts) == 1 ? linitial_node(RawStmt, stmts) : NULL;
	ins = (raw && IsA(raw->stmt, InsertStmt)) ? (InsertStmt *) raw->stmt : NULL;
	sel = (ins && ins->selectStmt && IsA(ins->selectStmt, SelectStmt)) ?
		(SelectStmt *) ins->selectStmt : NULL;
	if (sel == NULL || sel->valuesLists == NIL ||
		ins->returningList != NIL || ins->onConflictClause != NULL ||
		sel->sortClause != NIL || sel->limitCount != NULL ||
		sel->limitOffset != NULL || sel->lockingClause != NIL ||
		sel->withClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("insert_events() input must be a VALUES list and nothing else"),
				 errdetail("Each row must be ($1[k], $2, '<json>'), rows separated by commas.")));

	/* slate's checks on the sequence of $1[k], before anything else */
	foreach(lc, sel->valuesLists)
	{
		List	   *cols = lfirst_node(List, lc);
		int			k = list_length(cols) >= 1 ? id_parameter_index(linitial(cols)) : -1;

		if (k < 0)
			continue;
		count++;
		if (count > 1 && k != last + 1)
			ereport(ERROR,
					(errcode(ERRCODE_RAISE_EXCEPTION),
					 errmsg("Parameter index is not consecutive at ------> %d,  previous index ------> %d", k, last),
					 errhint("Parameter for id column of the form \"$1[x]\" where x is the 1-based index for the row to be inserted is not greater than the previous row's index")));
		last = k;
	}
	if (count < 1)
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("No inserted rows found with parameters"),
				 errhint("id column for row to be inserted must be a parameter of the form \"$1[x]\" where x is the 1-indexed based index of the row")));
	if (count != last)
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("Number of rows to be inserted %d does not match the highest row index %d", count, last),
				 errhint("The highest id column parameter index does not match the number of rows to be inserted")));

	/* each row exactly ($1[k], $2, '<json>') */
	events = palloc(sizeof(Datum) * list_length(sel->valuesLists));
	row = 0;
	foreach(lc, sel->valuesLists)
	{
		List	   *cols = lfirst_node(List, lc);
		Node	   *ts;
		char	   *json;

		row++;
		if (list_length(cols) != 3)
			row_error(row, psprintf("%d values instead of 3", list_length(cols)));
		if (id_parameter_index(linitial(cols)) != row)
			row_error(row, "id is not $1[k]");
		ts = lsecond(cols);
		if (!IsA(ts, ParamRef) || ((ParamRef *) ts)->number != 2)
			row_error(row, "ts is not $2");
		json = event_literal(lthird(cols));
		if (json == NULL)
			row_error(row, "event is not a string literal");
		events[row - 1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
	}

	*nrows = row;
	return construct_array(events, row, JSONBOID, -1, false, TYPALIGN_INT);
}

PG_FUNCTION_INFO_V1(replicator_insert_events_text);

Datum
replicator_insert_events_text(PG_FUNCTION_ARGS)
{
	ArrayType  *events;
	int			count;
	InsertResult result;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("insertValues must not be null")));

	events = parse_values_text(text_to_cstring(PG_GETARG_TEXT_PP(0)), &count);
	result = insert_event_array(get_func_namespace(fcinfo->flinfo->fn_oid), events, count);
	PG_RETURN_INT32((int32) result.count);
}
