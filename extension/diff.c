/*-------------------------------------------------------------------------
 *
 * diff.c
 *	  replicator.diff(): the differences between the source's events and a
 *	  destination's, found without shipping the table.
 *
 * Both sides run the same query over an id range: per bucket, the count and
 * an order-independent sum of row hashes (id, ts in microseconds, event as
 * jsonb text).  Only buckets whose sums differ are split further, and only
 * ranges of at most LEAF_IDS ids are compared row by row, so the rows that
 * cross the network grow with the differences, not with the table.  At the
 * leaves ts is compared to the microsecond and event as jsonb: text forms
 * that jsonb holds equal are not reported.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "connection.h"

#define BUCKETS		16
#define LEAF_IDS	256
#define SHORT_LEN	120
#define PROGRESS_MS 2000

typedef struct DiffState
{
	PGconn	   *conn;
	const char *source_table;	/* schema-qualified on the source */
	Tuplestorestate *store;
	TupleDesc	desc;
	int64		max_diffs;		/* 0: no limit */
	int64		found;
	int64		rows_fetched;	/* from the destination */
	int64		bytes_fetched;
	TimestampTz last_progress;
} DiffState;

/* The row hash both sides compute: exact ts, canonical jsonb text. */
#define ROW_TEXT "id::text || ' ' || ((extract(epoch FROM ts) * 1000000)::bigint)::text || ' ' || event::text"

static bool
done(DiffState *st)
{
	return st->max_diffs > 0 && st->found >= st->max_diffs;
}

static char *
shorten(const char *s)
{
	if (s == NULL)
		return NULL;
	if (strlen(s) <= SHORT_LEN)
		return pstrdup(s);
	return psprintf("%.*s...", SHORT_LEN, s);
}

static void
report(DiffState *st, int64 id, const char *kind, const char *source, const char *destination)
{
	Datum		values[4];
	bool		nulls[4] = {id <= 0, false, source == NULL, destination == NULL};

	if (done(st))
		return;
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(kind);
	values[2] = source ? CStringGetTextDatum(shorten(source)) : (Datum) 0;
	values[3] = destination ? CStringGetTextDatum(shorten(destination)) : (Datum) 0;
	tuplestore_putvalues(st->store, st->desc, values, nulls);
	st->found++;
}

/* Rows of a query as text, from the source (SPI) or the destination. */
typedef struct Rows
{
	int			n;
	int			ncols;
	char	  **cells;			/* n * ncols, NULL for SQL NULL */
} Rows;

static const char *
cell(Rows *r, int row, int col)
{
	return r->cells[row * r->ncols + col];
}

static Rows
local_rows(const char *sql)
{
	Rows		r;

	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "diff: query failed on the source: %s", sql);
	r.n = (int) SPI_processed;
	r.ncols = SPI_tuptable->tupdesc->natts;
	r.cells = palloc(sizeof(char *) * Max(1, r.n * r.ncols));
	for (int i = 0; i < r.n; i++)
		for (int c = 0; c < r.ncols; c++)
			r.cells[i * r.ncols + c] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1);
	return r;
}

static Rows
remote_rows(DiffState *st, const char *sql)
{
	PGresult   *res = replicator_remote_exec(st->conn, sql, 0, NULL);
	Rows		r;

	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		char	   *error = replicator_remote_error(st->conn, res);

		PQclear(res);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("diff: query failed on the destination: %s", error)));
	}
	r.n = PQntuples(res);
	r.ncols = PQnfields(res);
	r.cells = replicator_result_cells(res, &st->bytes_fetched);
	st->rows_fetched += r.n;
	return r;
}

static bool
jsonb_texts_equal(const char *a, const char *b)
{
	if (strcmp(a, b) == 0)
		return true;
	return DatumGetBool(DirectFunctionCall2(jsonb_eq,
											DirectFunctionCall1(jsonb_in, CStringGetDatum(a)),
											DirectFunctionCall1(jsonb_in, CStringGetDatum(b))));
}

/* Compare ids lo..hi row by row. */
static void
compare_rows(DiffState *st, int64 lo, int64 hi)
{
	const char *fmt = "SELECT id, (extract(epoch FROM ts) * 1000000)::bigint, ts::text, event::text"
		" FROM %s WHERE id BETWEEN " INT64_FORMAT " AND " INT64_FORMAT " ORDER BY id";
	Rows		src = local_rows(psprintf(fmt, st->source_table, lo, hi));
	Rows		dst = remote_rows(st, psprintf(fmt, "events", lo, hi));
	int			i = 0,
				j = 0;

	while ((i < src.n || j < dst.n) && !done(st))
	{
		int64		sid = i < src.n ? strtoi64(cell(&src, i, 0), NULL, 10) : PG_INT64_MAX;
		int64		did = j < dst.n ? strtoi64(cell(&dst, j, 0), NULL, 10) : PG_INT64_MAX;

		if (sid < did)
		{
			report(st, sid, "missing", cell(&src, i, 3), NULL);
			i++;
		}
		else if (did < sid)
		{
			report(st, did, "extra", NULL, cell(&dst, j, 3));
			j++;
		}
		else
		{
			if (strcmp(cell(&src, i, 1), cell(&dst, j, 1)) != 0)
				report(st, sid, "different ts", cell(&src, i, 2), cell(&dst, j, 2));
			if (!jsonb_texts_equal(cell(&src, i, 3), cell(&dst, j, 3)))
				report(st, sid, "different event", cell(&src, i, 3), cell(&dst, j, 3));
			i++;
			j++;
		}
	}
}

/* Bucket sums of ids lo..hi, split in BUCKETS of step ids. */
static char *
bucket_sql(const char *table, int64 lo, int64 hi, int64 step)
{
	return psprintf("SELECT (id - " INT64_FORMAT ") / " INT64_FORMAT ", count(*),"
					" sum(('x' || left(md5(" ROW_TEXT "), 15))::bit(60)::bigint)"
					" FROM %s WHERE id BETWEEN " INT64_FORMAT " AND " INT64_FORMAT
					" GROUP BY 1 ORDER BY 1",
					lo, step, table, lo, hi);
}

static const char *
bucket_sum(Rows *r, int64 bucket)
{
	for (int i = 0; i < r->n; i++)
		if (strtoi64(cell(r, i, 0), NULL, 10) == bucket)
			return psprintf("%s/%s", cell(r, i, 1), cell(r, i, 2));
	return "0/";
}

static void
compare_range(DiffState *st, int64 lo, int64 hi, int depth)
{
	int64		step = (hi - lo + BUCKETS) / BUCKETS;
	Rows		src;
	Rows		dst;

	CHECK_FOR_INTERRUPTS();
	src = local_rows(bucket_sql(st->source_table, lo, hi, step));
	dst = remote_rows(st, bucket_sql("events", lo, hi, step));

	for (int64 b = 0; b < BUCKETS && !done(st); b++)
	{
		int64		blo = lo + b * step;
		int64		bhi = Min(hi, blo + step - 1);

		if (blo > hi)
			break;
		if (strcmp(bucket_sum(&src, b), bucket_sum(&dst, b)) != 0)
		{
			if (bhi - blo + 1 <= LEAF_IDS)
				compare_rows(st, blo, bhi);
			else
				compare_range(st, blo, bhi, depth + 1);
		}
		if (depth == 0 &&
			TimestampDifferenceExceeds(st->last_progress, GetCurrentTimestamp(), PROGRESS_MS))
		{
			ereport(NOTICE,
					(errmsg("diff: compared ids up to " INT64_FORMAT " of " INT64_FORMAT ", " INT64_FORMAT " differences so far",
							bhi, hi, st->found)));
			st->last_progress = GetCurrentTimestamp();
		}
	}
}

/*
 * A table's own invariants: ids 1..max, ts never decreasing with id, and
 * every load-generator call (ours or slate's) complete and contiguous.  kind
 * names the side.
 */
static void
validate_side(DiffState *st, const char *kind, const char *table, bool remote)
{
	const char *sqls[3];
	Rows		r;

	sqls[0] = psprintf("SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM %s", table);
	sqls[1] = psprintf("SELECT count(*), min(id) FROM (SELECT id, ts < lag(ts) OVER (ORDER BY id) AS dec FROM %s) s WHERE dec",
					   table);
	/*
	 * Calls of the load generators: ours (validation: program, call, k, n)
	 * and slate's loadPersonData (testingStats: programId, dbOperationId,
	 * dbOperationEventNum, dbOperationEventCount).  Each call's events must
	 * all be there, contiguous, in the order of k.
	 */
	sqls[2] = psprintf("SELECT count(*) FILTER (WHERE NOT ok), min(first_id) FILTER (WHERE NOT ok), count(*) FROM ("
					   " SELECT count(*) = max(n)"
					   "    AND max(id) - min(id) + 1 = count(*)"
					   "    AND count(DISTINCT k) = count(*)"
					   "    AND bool_and(id - k = min_id - 1) AS ok,"
					   "    min(id) AS first_id"
					   " FROM (SELECT id, program, call, k, n,"
					   "        min(id) OVER (PARTITION BY program, call) AS min_id"
					   "       FROM (SELECT id,"
					   "              coalesce('replicator:' || (event #>> '{validation,program}'),"
					   "                       'slate:' || (event #>> '{testingStats,programId}')) AS program,"
					   "              coalesce(event #>> '{validation,call}', event #>> '{testingStats,dbOperationId}') AS call,"
					   "              coalesce(event #>> '{validation,k}', event #>> '{testingStats,dbOperationEventNum}')::bigint AS k,"
					   "              coalesce(event #>> '{validation,n}', event #>> '{testingStats,dbOperationEventCount}')::bigint AS n"
					   "             FROM %s WHERE event ? 'validation' OR event ? 'testingStats') v) e"
					   " GROUP BY program, call) calls",
					   table);

	r = remote ? remote_rows(st, sqls[0]) : local_rows(sqls[0]);
	if (strcmp(cell(&r, 0, 0), cell(&r, 0, 2)) != 0 ||
		(strcmp(cell(&r, 0, 0), "0") != 0 && strcmp(cell(&r, 0, 1), "1") != 0))
		report(st, 0, kind,
			   remote ? NULL : psprintf("ids are not 1..max: %s events, min %s, max %s",
										cell(&r, 0, 0), cell(&r, 0, 1), cell(&r, 0, 2)),
			   remote ? psprintf("ids are not 1..max: %s events, min %s, max %s",
								 cell(&r, 0, 0), cell(&r, 0, 1), cell(&r, 0, 2)) : NULL);

	r = remote ? remote_rows(st, sqls[1]) : local_rows(sqls[1]);
	if (strcmp(cell(&r, 0, 0), "0") != 0)
	{
		char	   *what = psprintf("ts decreases as id grows at %s places", cell(&r, 0, 0));

		report(st, strtoi64(cell(&r, 0, 1), NULL, 10), kind,
			   remote ? NULL : what, remote ? what : NULL);
	}

	r = remote ? remote_rows(st, sqls[2]) : local_rows(sqls[2]);
	if (strcmp(cell(&r, 0, 0), "0") != 0)
	{
		char	   *what = psprintf("%s of %s load-generator calls are incomplete or not contiguous",
									cell(&r, 0, 0), cell(&r, 0, 2));

		report(st, strtoi64(cell(&r, 0, 1), NULL, 10), kind,
			   remote ? NULL : what, remote ? what : NULL);
	}
	ereport(NOTICE,
			(errmsg("diff: %s: checked ids, ts order and %s load-generator calls",
					remote ? "destination" : "source", cell(&r, 0, 2))));
}

PG_FUNCTION_INFO_V1(replicator_diff);

Datum
replicator_diff(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name;
	Oid			nspid = replicator_source_namespace();
	DiffState	st;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	char	   *conninfo;
	bool		require_password;
	char	   *error = NULL;
	PGconn	   *volatile conn = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("replica must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	memset(&st, 0, sizeof(st));
	st.max_diffs = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
	if (!PG_ARGISNULL(1) && st.max_diffs < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_diffs must be at least 1, or null for no limit")));

	InitMaterializedSRF(fcinfo, 0);
	st.store = rsinfo->setResult;
	st.desc = rsinfo->setDesc;
	st.source_table = psprintf("%s.events", quote_identifier(get_namespace_name(nspid)));
	st.last_progress = GetCurrentTimestamp();

	SPI_connect();
	args[0] = CStringGetTextDatum(name);
	/* only the extension's owner reads the catalog (EXECUTE was checked) */
	if (replicator_spi_execute_as_owner("SELECT conninfo, changed_by FROM replicator.replicas"
										" WHERE name OPERATOR(pg_catalog.=) $1",
										1, argtypes, args, NULL, true) != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.replicas");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("replica \"%s\" does not exist", name)));
	conninfo = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	require_password = replicator_replica_requires_password(SPI_getvalue(SPI_tuptable->vals[0],
																		 SPI_tuptable->tupdesc, 2));

	PG_TRY();
	{
		Rows		src;
		Rows		dst;
		int64		src_max;
		int64		dst_max;

		conn = replicator_remote_connect(conninfo, psprintf("replicator:%s:diff", name),
										 REPLICATOR_SESSION_QUERY, require_password,
										 &error, NULL);
		if (conn == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("diff: could not connect to replica \"%s\": %s", name, error)));
		st.conn = conn;

		/* counts and max ids first, as slate's eventsDiff does */
		src = local_rows(psprintf("SELECT count(*), coalesce(max(id), 0) FROM %s", st.source_table));
		dst = remote_rows(&st, "SELECT count(*), coalesce(max(id), 0) FROM events");
		src_max = strtoi64(cell(&src, 0, 1), NULL, 10);
		dst_max = strtoi64(cell(&dst, 0, 1), NULL, 10);
		ereport(NOTICE,
				(errmsg("diff: source %s events (max id %s), destination \"%s\" %s events (max id %s)",
						cell(&src, 0, 0), cell(&src, 0, 1), name, cell(&dst, 0, 0), cell(&dst, 0, 1))));

		if (!PG_ARGISNULL(2) && PG_GETARG_BOOL(2))
		{
			validate_side(&st, "invalid source", st.source_table, false);
			validate_side(&st, "invalid destination", "events", true);
		}
		if (Max(src_max, dst_max) > 0 && !done(&st))
			compare_range(&st, 1, Max(src_max, dst_max), 0);

		ereport(NOTICE,
				(errmsg("diff: " INT64_FORMAT " differences; fetched " INT64_FORMAT " rows (" INT64_FORMAT " bytes) from the destination",
						st.found, st.rows_fetched, st.bytes_fetched)));
	}
	PG_FINALLY();
	{
		replicator_remote_close(conn);
	}
	PG_END_TRY();
	SPI_finish();
	return (Datum) 0;
}
