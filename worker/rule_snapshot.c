/*-------------------------------------------------------------------------
 *
 * rule_snapshot.c
 *	  Mirror one table to a rule's target: rows missing or different there
 *	  are written, rows only there are deleted.
 *
 * As diff does for events, both sides hash before anything moves.  A row
 * is identified by its key rendered as text (ROW(k1::text, ...)::text) and
 * hashed as md5 of ROW(c1::text, ...)::text over the columns both sides
 * have, in the source's order; both sides render with the same settings
 * (pinned here and SET LOCAL on the target), so equal rows give equal
 * hashes.  Rows fall in buckets by the first D hex digits of md5(key text),
 * with D chosen so that a bucket holds about LEAF_ROWS rows: each side
 * sends per bucket a count and an order-independent sum of row hashes.
 * Only the buckets that differ are compared row by row, key and hash
 * sorted by key in byte order on both sides and merged here; only the rows
 * found missing, different or extra cross the network: from the source a
 * json array of each row's values as text, which the target casts with its
 * columns' input functions and upserts (INSERT ... ON CONFLICT (key) DO
 * UPDATE), exactly as COPY would read them (json_populate_recordset would
 * read a jsonb 'null' as SQL NULL); from the target the ctids of the rows
 * to delete.  The target computes its side of each comparison while the
 * source computes its own.  Bucket membership is a function of the key's
 * text, never of a collation: source and target may sort differently.
 *
 * The target's table is locked against other writers (SHARE ROW EXCLUSIVE)
 * for the one transaction that compares and writes, so what was compared
 * is what gets written.  Every statement here names objects qualified and
 * runs with search_path pinned to pg_catalog, pg_temp, on both sides.
 *
 * The source's rows are read and rendered as the table's owner, never as
 * the caller or the extension's owner (superusers): a value's text can run
 * code the owner chose (a cast of an enum, domain or composite type of
 * theirs), which must gain nothing by running in a sync.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "connection.h"
#include "rule_snapshot.h"

#define LEAF_ROWS		16		/* rows per bucket aimed at */
#define MAX_DIGITS		5		/* 16^5 buckets at most */
#define FETCH_ROWS		10000	/* rows per fetch, either side */
#define UPSERT_ROWS		5000	/* rows per upsert statement */
#define UPSERT_BYTES	(8 * 1024 * 1024)
#define DELETE_ROWS		20000	/* ctids per delete statement */

#define CURSOR_NAME		"replicator_rule_snapshot"
#define FETCH_SQL		"FETCH FORWARD " CppAsString2(FETCH_ROWS) " FROM " CURSOR_NAME

/*
 * The settings both sides render values with: the source's are pinned for
 * the duration, the target's SET LOCAL.  Fixed values rather than the
 * caller's: the json sent must read back the same on the target whatever
 * the caller set (extra_float_digits below 1 would lose float digits).
 */
static const char *const pinned_settings[][2] = {
	{"search_path", "pg_catalog, pg_temp"},
	{"DateStyle", "ISO, MDY"},
	{"IntervalStyle", "postgres"},
	{"TimeZone", "UTC"},
	{"extra_float_digits", "3"},
	{"bytea_output", "hex"},
};

typedef struct MirrorState
{
	PGconn	   *conn;
	RuleTable  *table;
	List	   *columns;		/* char *: on both sides, source's order */
	List	   *types;			/* char *: their types on the target */
	char	   *upsert_sql;
	char	   *delete_sql;
	StringInfoData upserts;		/* json array being built */
	int			nupserts;
	StringInfoData deletes;		/* tid[] literal being built */
	int			ndeletes;
	int64		inserted;
	int64		updated;
	int64		deleted;
	int64		rows_sent;
	int64		bytes_sent;
	int64		rows_received;	/* buckets and key hashes from the target */
	int64		bytes_received;
	int64		nsrc;			/* rows on the source */
	int64		ndst;			/* rows on the target before */
	int64		ndiff;			/* buckets that differed */
	int64		nbuckets;
} MirrorState;

/* A target's result: its cells if it returned rows, NULL otherwise. */
static char **
remote_result(MirrorState *st, const char *what, PGresult *res, int *nrows)
{
	ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

	if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
	{
		char	   *error = replicator_remote_error(st->conn, res);

		if (res)
			PQclear(res);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not mirror table %s: %s failed on the target: %s",
						st->table->qualified, what, error)));
	}
	if (status == PGRES_TUPLES_OK)
	{
		int			n = PQntuples(res);

		if (nrows)
			*nrows = n;
		st->rows_received += n;
		return replicator_result_cells(res, &st->bytes_received);
	}
	PQclear(res);
	if (nrows)
		*nrows = 0;
	return NULL;
}

/* Run sql on the target; its cells if it returns rows, NULL otherwise. */
static char **
remote(MirrorState *st, const char *what, const char *sql, int nparams,
	   const char *const *values, int *nrows)
{
	PGresult   *res = replicator_remote_exec(st->conn, sql, nparams, values);

	for (int i = 0; i < nparams; i++)
		st->bytes_sent += strlen(values[i]);
	return remote_result(st, what, res, nrows);
}

/*
 * Send sql (short, no parameters) to the target without waiting, so that
 * both sides compute at once; remote_collect() waits for its result.
 */
static void
remote_start(MirrorState *st, const char *what, const char *sql)
{
	int			rc;

	if (!PQsendQuery(st->conn, sql))
		(void) remote_result(st, what, NULL, NULL);
	while ((rc = PQflush(st->conn)) > 0)
	{
		(void) WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_SOCKET_WRITEABLE | WL_EXIT_ON_PM_DEATH,
								 PQsocket(st->conn), -1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	if (rc < 0)
		(void) remote_result(st, what, NULL, NULL);
}

static char **
remote_collect(MirrorState *st, const char *what, int *nrows)
{
	return remote_result(st, what, replicator_remote_last_result(st->conn), nrows);
}

/*
 * The columns of the table on the target that can be written, and their
 * types (*types, aligned) as the target names them.
 */
static List *
target_columns(MirrorState *st, List **types)
{
	const char *values[1] = {st->table->qualified};
	int			n;
	char	  **cells = remote(st, "reading the table's columns",
							   "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)"
							   " FROM pg_catalog.pg_attribute a"
							   " WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass"
							   " AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped"
							   " AND a.attgenerated OPERATOR(pg_catalog.=) ''",
							   1, values, &n);
	List	   *columns = NIL;

	*types = NIL;
	for (int i = 0; i < n; i++)
	{
		columns = lappend(columns, cells[2 * i]);
		*types = lappend(*types, cells[2 * i + 1]);
	}
	return columns;
}

static bool
name_in(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
		if (strcmp(lfirst(lc), name) == 0)
			return true;
	return false;
}

/* ROW(t.c1::text, ...)::text over names */
static char *
row_text(List *names)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "ROW(");
	foreach(lc, names)
		appendStringInfo(&buf, "%st.%s::pg_catalog.text", foreach_current_index(lc) ? ", " : "",
						 quote_identifier(lfirst(lc)));
	appendStringInfoString(&buf, ")::pg_catalog.text");
	return buf.data;
}

static char *
name_list(List *names, const char *prefix, const char *suffix)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, names)
		appendStringInfo(&buf, "%s%s%s%s", foreach_current_index(lc) ? ", " : "", prefix,
						 quote_identifier(lfirst(lc)), suffix);
	return buf.data;
}

/* Send the deletes, then the upserts, gathered so far. */
static void
flush(MirrorState *st)
{
	if (st->ndeletes > 0)
	{
		const char *values[1];

		appendStringInfoChar(&st->deletes, '}');
		values[0] = st->deletes.data;
		(void) remote(st, "deleting rows", st->delete_sql, 1, values, NULL);
		st->rows_sent += st->ndeletes;
		resetStringInfo(&st->deletes);
		appendStringInfoChar(&st->deletes, '{');
		st->ndeletes = 0;
	}
	if (st->nupserts > 0)
	{
		const char *values[1];

		appendStringInfoChar(&st->upserts, ']');
		values[0] = st->upserts.data;
		(void) remote(st, "writing rows", st->upsert_sql, 1, values, NULL);
		st->rows_sent += st->nupserts;
		resetStringInfo(&st->upserts);
		appendStringInfoChar(&st->upserts, '[');
		st->nupserts = 0;
	}
}

static void
add_upsert(MirrorState *st, const char *json)
{
	if (st->nupserts > 0)
		appendStringInfoChar(&st->upserts, ',');
	appendStringInfoString(&st->upserts, json);
	if (++st->nupserts >= UPSERT_ROWS || st->upserts.len >= UPSERT_BYTES)
		flush(st);
}

static void
add_delete(MirrorState *st, const char *ctid)
{
	if (st->ndeletes > 0)
		appendStringInfoChar(&st->deletes, ',');
	appendStringInfo(&st->deletes, "\"%s\"", ctid);
	if (++st->ndeletes >= DELETE_ROWS)
		flush(st);
}

/*
 * Buckets that differ, as a text[] literal (NULL: compare every row), and
 * how many there are in *ndiff.
 */
static char *
differing_buckets(MirrorState *st, const char *from, int digits, int64 *ndiff,
				  int64 *nbuckets_out)
{
	char	   *sql = psprintf("SELECT b, n, h FROM (SELECT pg_catalog.left(pg_catalog.md5(kt), %d) AS b,"
							   " pg_catalog.count(*) AS n,"
							   " pg_catalog.sum(('x' OPERATOR(pg_catalog.||) pg_catalog.left(rh, 15))::pg_catalog.bit(60)::pg_catalog.int8) AS h"
							   " FROM %s GROUP BY 1) g ORDER BY b COLLATE pg_catalog.\"C\"",
							   digits, from);
	int			ns;
	int			nt;
	char	  **tcells;
	StringInfoData buf;
	int			i = 0,
				j = 0;
	int64		nbuckets = 0;

	remote_start(st, "hashing buckets", sql);
	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not hash the buckets of %s", st->table->qualified);
	ns = (int) SPI_processed;
	tcells = remote_collect(st, "hashing buckets", &nt);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	*ndiff = 0;
	while (i < ns || j < nt)
	{
		char	   *sb = i < ns ? SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1) : NULL;
		char	   *tb = j < nt ? tcells[j * 3] : NULL;
		int			cmp = sb == NULL ? 1 : tb == NULL ? -1 : strcmp(sb, tb);
		const char *differs = NULL;

		if (cmp < 0)
			differs = sb, i++;
		else if (cmp > 0)
			differs = tb, j++;
		else
		{
			if (strcmp(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2), tcells[j * 3 + 1]) != 0 ||
				strcmp(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3), tcells[j * 3 + 2]) != 0)
				differs = sb;
			i++, j++;
		}
		nbuckets++;
		if (differs)
		{
			appendStringInfo(&buf, "%s%s", *ndiff ? "," : "", differs);
			(*ndiff)++;
		}
	}
	appendStringInfoChar(&buf, '}');
	SPI_freetuptable(SPI_tuptable);
	/* most buckets differ (a first copy): one pass over everything */
	*nbuckets_out = nbuckets;
	if (*ndiff * 2 > nbuckets)
		return NULL;
	return buf.data;
}

/* One side's rows, key text and hash in key byte order, fetched in batches. */
typedef struct Side
{
	bool		remote;
	Portal		portal;			/* source */
	char	  **cells;			/* target */
	int			ncols;
	int			n;
	int			pos;
	bool		done;
	bool		started;		/* target: a FETCH is under way */
	MemoryContext cxt;			/* what the current batch allocated */
} Side;

static void
side_fetch(MirrorState *st, Side *side)
{
	MemoryContext old;

	side->pos = 0;
	MemoryContextReset(side->cxt);
	old = MemoryContextSwitchTo(side->cxt);
	if (side->remote && side->started)
	{
		side->cells = remote_collect(st, "reading keys and hashes", &side->n);
		side->started = false;
	}
	else if (side->remote)
		side->cells = remote(st, "reading keys and hashes", FETCH_SQL, 0, NULL, &side->n);
	else
	{
		if (SPI_tuptable)
			SPI_freetuptable(SPI_tuptable);
		SPI_cursor_fetch(side->portal, true, FETCH_ROWS);
		side->n = (int) SPI_processed;
		side->cells = palloc(sizeof(char *) * Max(1, side->n * side->ncols));
		for (int i = 0; i < side->n; i++)
			for (int c = 0; c < side->ncols; c++)
				side->cells[i * side->ncols + c] =
					SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1);
	}
	MemoryContextSwitchTo(old);
	side->done = side->n == 0;
}

static const char *
side_value(Side *side, int col)
{
	return side->done ? NULL : side->cells[side->pos * side->ncols + col];
}

static void
side_next(MirrorState *st, Side *side)
{
	if (++side->pos >= side->n)
		side_fetch(st, side);
}

/*
 * Compare key by key the rows of the differing buckets (filter NULL: every
 * row), and write what differs.  Both sides sort by key text in byte order
 * (COLLATE "C", as strcmp here).
 */
static void
compare_rows(MirrorState *st, const char *key_text, const char *row_hash,
			 int digits, const char *filter)
{
	const char *table = st->table->qualified;
	char	   *where = filter == NULL ? "" :
		psprintf(" WHERE pg_catalog.left(pg_catalog.md5(s.kt), %d) IN"
				 " (SELECT pg_catalog.unnest($1::pg_catalog.text[]))", digits);
	char	   *src_sql = psprintf("SELECT s.kt, s.rh, s.j FROM (SELECT %s AS kt, pg_catalog.md5(%s) AS rh,"
								   " pg_catalog.to_json(ARRAY[%s]::pg_catalog.text[])::pg_catalog.text AS j"
								   " FROM %s t) s%s ORDER BY s.kt COLLATE pg_catalog.\"C\"",
								   key_text, row_hash, name_list(st->columns, "t.", "::pg_catalog.text"),
								   table, where);
	char	   *dst_sql = psprintf("DECLARE " CURSOR_NAME " NO SCROLL CURSOR FOR"
								   " SELECT s.kt, s.rh, s.tid::pg_catalog.text FROM (SELECT %s AS kt,"
								   " pg_catalog.md5(%s) AS rh, t.ctid AS tid FROM %s t) s%s"
								   " ORDER BY s.kt COLLATE pg_catalog.\"C\"",
								   key_text, row_hash, table, where);
	Side		src = {.remote = false, .ncols = 3};
	Side		dst = {.remote = true, .ncols = 3};
	const char *values[1] = {filter};
	Oid			types[1] = {TEXTOID};
	Datum		args[1];

	src.cxt = AllocSetContextCreate(CurrentMemoryContext, "replicator mirror source rows",
									ALLOCSET_DEFAULT_SIZES);
	dst.cxt = AllocSetContextCreate(CurrentMemoryContext, "replicator mirror target rows",
									ALLOCSET_DEFAULT_SIZES);
	if (filter)
		args[0] = CStringGetTextDatum(filter);
	/* read-only: under the caller's snapshot, as the bucket hashes were */
	/* the target scans and sorts for its first fetch while the source does */
	(void) remote(st, "opening a cursor", dst_sql, filter ? 1 : 0, values, NULL);
	remote_start(st, "reading keys and hashes", FETCH_SQL);
	dst.started = true;
	src.portal = SPI_cursor_open_with_args(CURSOR_NAME, src_sql, filter ? 1 : 0, types, args,
										   NULL, true, 0);
	side_fetch(st, &src);
	side_fetch(st, &dst);

	while (!src.done || !dst.done)
	{
		const char *sk = side_value(&src, 0);
		const char *tk = side_value(&dst, 0);
		int			cmp = sk == NULL ? 1 : tk == NULL ? -1 : strcmp(sk, tk);

		CHECK_FOR_INTERRUPTS();
		if (cmp < 0)
		{
			add_upsert(st, side_value(&src, 2));
			st->inserted++;
			side_next(st, &src);
		}
		else if (cmp > 0)
		{
			add_delete(st, side_value(&dst, 2));
			st->deleted++;
			side_next(st, &dst);
		}
		else
		{
			if (strcmp(side_value(&src, 1), side_value(&dst, 1)) != 0)
			{
				add_upsert(st, side_value(&src, 2));
				st->updated++;
			}
			side_next(st, &src);
			side_next(st, &dst);
		}
	}
	flush(st);
	(void) remote(st, "closing the cursor", "CLOSE " CURSOR_NAME, 0, NULL, NULL);
	SPI_cursor_close(src.portal);
	MemoryContextDelete(src.cxt);
	MemoryContextDelete(dst.cxt);
}

static int64
local_count(const char *table)
{
	bool		isnull;

	if (SPI_execute(psprintf("SELECT pg_catalog.count(*) FROM %s", table), true, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not count the rows of %s", table);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Session settings of the target transaction: those pinned here. */
static void
pin_target_settings(MirrorState *st)
{
	StringInfoData sql;
	const char *values[lengthof(pinned_settings) * 2];

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT");
	for (int i = 0; i < (int) lengthof(pinned_settings); i++)
	{
		appendStringInfo(&sql, "%s pg_catalog.set_config($%d, $%d, true)", i ? "," : "",
						 2 * i + 1, 2 * i + 2);
		values[2 * i] = pinned_settings[i][0];
		values[2 * i + 1] = pinned_settings[i][1];
	}
	(void) remote(st, "setting the session", sql.data, lengthof(values), values, NULL);
}

/*
 * The owner of table, locked (AccessShareLock, until the transaction ends)
 * so that it stays the owner while its rows are read.
 */
static Oid
table_owner(const RuleTable *table)
{
	HeapTuple	tup;
	Oid			owner;

	LockRelationOid(table->relid, AccessShareLock);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(table->relid));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s cannot be mirrored: it was dropped", table->qualified)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/* The comparison and the writes, on a connected SPI and a settled source. */
static void
mirror(MirrorState *st)
{
	RuleTable  *table = st->table;
	List	   *target_cols;
	List	   *target_types;
	List	   *others = NIL;
	ListCell   *lc;
	ListCell   *tc;
	char	   *key_text;
	char	   *row_hash;
	char	   *from;
	char	   *filter = "";
	int			digits = 0;
	int			n;
	char	  **cells;

	(void) remote(st, "BEGIN", "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL);
	pin_target_settings(st);

	/* the columns both sides have, in the source's order; the key among them */
	target_cols = target_columns(st, &target_types);
	foreach(lc, table->columns)
	{
		char	   *col = lfirst(lc);
		int			at = -1;

		for (int i = 0; i < list_length(target_cols) && at < 0; i++)
			if (strcmp(list_nth(target_cols, i), col) == 0)
				at = i;
		if (at < 0)
			continue;
		st->columns = lappend(st->columns, col);
		st->types = lappend(st->types, list_nth(target_types, at));
		if (!name_in(table->key, col))
			others = lappend(others, col);
	}
	foreach(lc, table->key)
		if (!name_in(st->columns, lfirst(lc)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("table %s cannot be mirrored: key column %s is missing on the target",
							table->qualified, quote_identifier(lfirst(lc))),
					 errhint("SELECT * FROM replicator.validate_rule('<rule>') reports what differs between the two tables.")));

	key_text = row_text(table->key);
	row_hash = row_text(st->columns);
	st->delete_sql = psprintf("DELETE FROM %s WHERE ctid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.tid[])",
							  table->qualified);
	{
		StringInfoData cast;

		initStringInfo(&cast);
		forboth(lc, st->columns, tc, st->types)
			appendStringInfo(&cast, "%s(r.v OPERATOR(pg_catalog.->>) %d)::%s",
							 foreach_current_index(lc) ? ", " : "", foreach_current_index(lc),
							 (char *) lfirst(tc));
		st->upsert_sql = psprintf("INSERT INTO %s AS t (%s) OVERRIDING SYSTEM VALUE SELECT %s"
								  " FROM pg_catalog.json_array_elements($1::pg_catalog.json) r(v)"
								  " ON CONFLICT (%s) DO ",
								  table->qualified, name_list(st->columns, "", ""), cast.data,
								  name_list(table->key, "", ""));
	}
	if (others == NIL)
		st->upsert_sql = psprintf("%sNOTHING", st->upsert_sql);
	else
	{
		StringInfoData set;

		initStringInfo(&set);
		foreach(lc, others)
			appendStringInfo(&set, "%s%s = EXCLUDED.%s", foreach_current_index(lc) ? ", " : "",
							 quote_identifier(lfirst(lc)), quote_identifier(lfirst(lc)));
		st->upsert_sql = psprintf("%sUPDATE SET %s", st->upsert_sql, set.data);
	}

	/* no other writer on the target until this transaction ends */
	(void) remote(st, "locking the table",
				  psprintf("LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE", table->qualified),
				  0, NULL, NULL);

	/* about LEAF_ROWS rows per bucket on the larger side */
	remote_start(st, "counting rows", psprintf("SELECT pg_catalog.count(*) FROM %s", table->qualified));
	st->nsrc = local_count(table->qualified);
	cells = remote_collect(st, "counting rows", &n);
	st->ndst = strtoi64(cells[0], NULL, 10);
	while (digits < MAX_DIGITS && ((int64) 1 << (4 * digits)) * LEAF_ROWS < Max(st->nsrc, st->ndst))
		digits++;

	if (digits > 0)
	{
		from = psprintf("(SELECT %s AS kt, pg_catalog.md5(%s) AS rh FROM %s t) s",
						key_text, row_hash, table->qualified);
		filter = differing_buckets(st, from, digits, &st->ndiff, &st->nbuckets);
	}
	else
		filter = NULL;
	if (digits == 0 || st->ndiff > 0)
		compare_rows(st, key_text, row_hash, digits, filter);

	(void) remote(st, "COMMIT", "COMMIT", 0, NULL, NULL);
}

void
replicator_rule_mirror_table(PGconn *conn, RuleTable *table, int64 *inserted,
							 int64 *updated, int64 *deleted, int64 *rows_sent)
{
	MirrorState st;
	TimestampTz start = GetCurrentTimestamp();
	Oid			owner;
	int			nestlevel;
	Oid			saved_userid;
	int			saved_sec_context;
	long		secs;
	int			usecs;

	if (table->key == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s cannot be mirrored: it has no primary key or replica identity index",
						table->qualified),
				 errdetail("A snapshot matches rows on both sides by their key."),
				 errhint("ALTER TABLE %s ADD PRIMARY KEY (...), or set REPLICA IDENTITY USING INDEX on a unique index.",
						 table->qualified)));

	memset(&st, 0, sizeof(st));
	st.conn = conn;
	st.table = table;
	initStringInfo(&st.upserts);
	appendStringInfoChar(&st.upserts, '[');
	initStringInfo(&st.deletes);
	appendStringInfoChar(&st.deletes, '{');

	/*
	 * The source is read as the table's owner, restricted, as PostgreSQL
	 * runs a table owner's code in maintenance commands: the rule, which
	 * only an admin adds, decides what is copied; the owner decides what
	 * rendering a row runs, and gains nothing by it.  row_security off: a
	 * policy forced on the owner makes the mirror fail, never copy a
	 * subset and delete the rest on the target.
	 */
	owner = table_owner(table);
	SPI_connect();
	GetUserIdAndSecContext(&saved_userid, &saved_sec_context);
	SetUserIdAndSecContext(owner, saved_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	nestlevel = NewGUCNestLevel();
	PG_TRY();
	{
		for (int i = 0; i < (int) lengthof(pinned_settings); i++)
			(void) set_config_option(pinned_settings[i][0], pinned_settings[i][1], PGC_USERSET,
									 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("row_security", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		mirror(&st);
	}
	PG_FINALLY();
	{
		AtEOXact_GUC(false, nestlevel);
		SetUserIdAndSecContext(saved_userid, saved_sec_context);
	}
	PG_END_TRY();
	SPI_finish();

	TimestampDifference(start, GetCurrentTimestamp(), &secs, &usecs);
	ereport(DEBUG1,
			(errmsg("mirrored table %s: " INT64_FORMAT " inserted, " INT64_FORMAT " updated, " INT64_FORMAT " deleted;"
					" sent " INT64_FORMAT " rows (" INT64_FORMAT " bytes), received " INT64_FORMAT " rows (" INT64_FORMAT " bytes);"
					" " INT64_FORMAT " of " INT64_FORMAT " buckets differed; source " INT64_FORMAT " rows, target " INT64_FORMAT " rows before; %ld.%03d s",
					table->qualified, st.inserted, st.updated, st.deleted,
					st.rows_sent, st.bytes_sent, st.rows_received, st.bytes_received,
					st.ndiff, st.nbuckets, st.nsrc, st.ndst, secs, usecs / 1000)));
	*inserted += st.inserted;
	*updated += st.updated;
	*deleted += st.deleted;
	*rows_sent += st.rows_sent;
}
