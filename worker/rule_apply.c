/*-------------------------------------------------------------------------
 *
 * rule_apply.c
 *	  Apply a rule's changes to its target.
 *
 * Consecutive changes of one table and one kind form a run, sent as one
 * statement over arrays of the target's row type, written as text in its
 * column order: the target's input functions read each value (record_in),
 * so column order and compatible types may differ between the two sides,
 * with no JSON to parse (three times cheaper).  A run never holds a key
 * twice, so that the rows of one statement are independent of one
 * another (under source-wins, an update of a row the run updated already
 * merges into its change instead).
 *
 * Each statement resolves its own conflicts (rule_status, README): it
 * reads the target rows its changes meet, then writes, all under one
 * snapshot, and returns the conflicts for the worker to record.  Each
 * statement's shape is prepared once per target session (a generic plan
 * that finds rows by key) and executed with the run's arrays as its
 * parameters.  Several statements go in one round trip, and the progress
 * record (the source position applied) is written in the same target
 * transaction as the changes: after any crash the worker resumes exactly
 * after it.  One round trip may be in flight while the next batch is
 * built; commits do not wait for the target's flush, and durable_lsn
 * follows what it has flushed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "connection.h"
#include "rule_apply.h"

#define RULE_MAX_ROWS_PER_STATEMENT 2000

/* What a statement sent applies: counted once its result is in. */
typedef struct StatementOwner
{
	RuleApplyTable *table;
	RuleOp		op;
	int			changes;
} StatementOwner;

static StatementOwner *
statement_owner(RuleApplyTable *table, RuleOp op, int changes)
{
	StatementOwner *owner = palloc(sizeof(StatementOwner));

	owner->table = table;
	owner->op = op;
	owner->changes = changes;
	return owner;
}

/* A batch committed on the target, not known to be flushed there yet. */
typedef struct DurablePoint
{
	XLogRecPtr	target_wal;		/* its commit's end there, or later */
	XLogRecPtr	lsn;			/* the source position it recorded */
} DurablePoint;

/*
 * A row's change, its rows as elements of arrays of the target's row type
 * (row_element()).
 */
typedef struct RunElem
{
	const char *old;			/* the old row, or the key */
	const char *new;			/* NULL for a delete */
	char	   *commit;			/* the source's commit time (last-write-wins) */
} RunElem;

typedef struct RuleRun
{
	RuleApplyTable *table;
	RuleOp		op;
	bool		full;			/* old rows hold every column */
	char	   *unchanged;		/* columns left out of the SET, as a string */
	List	   *elems;			/* RunElem * */
	int			changes;		/* more than elems once updates merged */
	int64		bytes;			/* of the elements */
	HTAB	   *keys;			/* RunKey */
} RuleRun;
#define RULE_MAX_SQL_BYTES (8 * 1024 * 1024)

void
replicator_rule_apply_init(RuleApply *apply, PGconn *conn, const RuleConfig *config,
						   const char *source, const char *slot)
{
	memset(apply, 0, sizeof(RuleApply));
	apply->conn = conn;
	apply->resolution = config->resolution;
	apply->timestamp_column = config->timestamp_column;
	apply->use_origin = config->resolution == RULE_LAST_WRITE_WINS && config->timestamp_column == NULL;
	apply->source = pstrdup(source);
	apply->slot = pstrdup(slot);
	apply->max_rows = RULE_MAX_ROWS_PER_STATEMENT;
	apply->cxt = AllocSetContextCreate(TopMemoryContext, "replicator rule apply",
									   ALLOCSET_DEFAULT_SIZES);
	apply->sent_cxt = AllocSetContextCreate(TopMemoryContext, "replicator rule apply sent",
											ALLOCSET_DEFAULT_SIZES);
	apply->conflict_cxt = AllocSetContextCreate(TopMemoryContext, "replicator rule conflicts",
												ALLOCSET_DEFAULT_SIZES);
	apply->prepared_cxt = AllocSetContextCreate(TopMemoryContext, "replicator rule prepared",
												ALLOCSET_SMALL_SIZES);
	replicator_rule_apply_reset(apply);
}

/*
 * The target's side of table: its columns in order (row_type: the runs'
 * rows are of its row type), those of them the source has too, not
 * generated there (columns: what a rule writes), and whether a trigger
 * on update fires there, in this session (update_triggers: under
 * session_replication_role = replica, only ENABLE ALWAYS or REPLICA ones).
 * In table->cxt.  NULL, or the error if the query failed.
 */
char *
replicator_rule_target_columns(PGconn *conn, RuleApplyTable *table)
{
	const char *values[1] = {table->table->qualified};
	PGresult   *res = replicator_remote_exec(conn,
											 "SELECT attname, attgenerated OPERATOR(pg_catalog.<>) '', attrelid,"
											 " EXISTS (SELECT FROM pg_catalog.pg_trigger g"
											 "  WHERE g.tgrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1) AND NOT g.tgisinternal"
											 "  AND (g.tgtype OPERATOR(pg_catalog.&) 16) OPERATOR(pg_catalog.<>) 0"
											 "  AND g.tgenabled OPERATOR(pg_catalog.=) ANY (CASE pg_catalog.current_setting('session_replication_role')"
											 "   WHEN 'replica' THEN '{A,R}'::\"char\"[] ELSE '{A,O}'::\"char\"[] END))"
											 " FROM pg_catalog.pg_attribute a"
											 " WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)"
											 " AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped"
											 " ORDER BY attnum", 1, values);
	MemoryContext old;
	ListCell   *lc;

	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
		return replicator_remote_expect(conn, res, PGRES_TUPLES_OK);
	old = MemoryContextSwitchTo(table->cxt);
	table->columns = NIL;
	table->row_type = NIL;
	table->layout_n = -1;
	for (int r = 0; r < PQntuples(res); r++)
		table->row_type = lappend(table->row_type, pstrdup(PQgetvalue(res, r, 0)));
	foreach(lc, table->table->columns)
		for (int r = 0; r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, 0), lfirst(lc)) == 0 &&
				strcmp(PQgetvalue(res, r, 1), "f") == 0)
				table->columns = lappend(table->columns, lfirst(lc));
	table->target_relid = PQntuples(res) > 0 ? atooid(PQgetvalue(res, 0, 2)) : InvalidOid;
	table->update_triggers = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 3), "t") == 0;
	MemoryContextSwitchTo(old);
	PQclear(res);
	return NULL;
}

/*
 * Whether the target's table is no longer the one the session knows: a
 * column added or dropped there (the runs' rows are written as its row
 * type), or another table of the name (the statements prepared for it
 * are not for this one).  A statement that failed for that is not the
 * change's fault.
 */
bool
replicator_rule_row_type_changed(PGconn *conn, RuleApplyTable *table)
{
	List	   *before = table->row_type;
	Oid			relid = table->target_relid;
	ListCell   *a,
			   *b;

	if (replicator_rule_target_columns(conn, table) != NULL || relid != table->target_relid)
		return true;
	if (list_length(before) != list_length(table->row_type))
		return true;
	forboth(a, before, b, table->row_type)
	{
		if (strcmp(lfirst(a), lfirst(b)) != 0)
			return true;
	}
	return false;
}

/* Whatever is built for the next round trip lives in apply->cxt. */
static void
start_over(RuleApply *apply)
{
	MemoryContext old;

	MemoryContextReset(apply->cxt);
	old = MemoryContextSwitchTo(apply->cxt);
	initStringInfo(&apply->sql);
	MemoryContextSwitchTo(old);
	apply->owners = NIL;
	apply->runs = NIL;
	apply->to_prepare = NIL;
	apply->run_bytes = 0;
}

static void
append_cols(StringInfo buf, List *cols, const char *prefix)
{
	ListCell   *lc;

	foreach(lc, cols)
		appendStringInfo(buf, "%s%s%s", foreach_current_index(lc) > 0 ? ", " : "",
						 prefix, quote_identifier(lfirst(lc)));
}

/* the columns of the table minus those an update left unchanged */
static List *
set_columns(RuleRun *run)
{
	List	   *cols = NIL;
	ListCell   *lc;

	foreach(lc, run->table->columns)
	{
		char	   *col = lfirst(lc);
		char	   *quoted = psprintf("\x1f%s\x1f", col);

		if (run->unchanged == NULL || strstr(run->unchanged, quoted) == NULL)
			cols = lappend(cols, col);
	}
	return cols;
}

/* A row's values ('n': new, 'o': old). */
static void
append_values(StringInfo buf, List *cols, char which)
{
	ListCell   *lc;

	foreach(lc, cols)
		appendStringInfo(buf, "%s(s.%c).%s", foreach_current_index(lc) > 0 ? ", " : "",
						 which, quote_identifier(lfirst(lc)));
}

static void
append_key_match(StringInfo buf, List *key, const char *left, const char *right)
{
	ListCell   *lc;

	foreach(lc, key)
		appendStringInfo(buf, "%s%s%s = %s%s", foreach_current_index(lc) > 0 ? " AND " : "",
						 left, quote_identifier(lfirst(lc)), right, quote_identifier(lfirst(lc)));
}

/*
 * The writes: w, the rows found (s joined with join_found, by the key in
 * old, "(s.o)." or "(s.n).") and written if write_if; ins, for an update,
 * the rows not in found inserted if insert_if.
 */
static void
append_writes(StringInfo b, RuleRun *run, List *setcols, const char *old, const char *join_found,
			  const char *write_if, const char *insert_if, const char *found)
{
	RuleApplyTable *t = run->table;
	const char *T = t->table->qualified;

	if (run->op == RULE_DELETE)
		appendStringInfo(b, " w AS (DELETE FROM %s t USING s%s WHERE ", T, join_found);
	else
	{
		appendStringInfo(b, " w AS (UPDATE %s t SET (", T);
		append_cols(b, setcols, "");
		appendStringInfoString(b, ") = ROW(");
		append_values(b, setcols, 'n');
		appendStringInfo(b, ") FROM s%s WHERE ", join_found);
	}
	append_key_match(b, t->table->key, "t.", old);
	appendStringInfo(b, " AND %s RETURNING s.ord),", write_if);
	if (run->op == RULE_DELETE)
	{
		appendStringInfoString(b, " ins AS (SELECT WHERE false)");
		return;
	}
	appendStringInfo(b, " ins AS (INSERT INTO %s (", T);
	append_cols(b, t->columns, "");
	appendStringInfoString(b, ") SELECT ");
	append_values(b, t->columns, 'n');
	appendStringInfo(b, " FROM s WHERE %s AND NOT EXISTS (SELECT FROM %s WHERE %s.ord = s.ord)"
					 " ORDER BY s.ord ON CONFLICT DO NOTHING RETURNING 1)", insert_if, found, found);
}

/* s, quoted as in a string literal whose quotes are ' (E'' if escapes) */
static void
append_quoted(StringInfo b, const char *s, bool escapes)
{
	const char *from = s;
	const char *p;

	for (p = s; *p; p++)
		if (*p == '\'' || (escapes && *p == '\\'))
		{
			appendBinaryStringInfo(b, from, p - from + 1);
			from = p;
		}
	appendBinaryStringInfo(b, from, p - from);
}

/*
 * One of the run's arrays ('n': new rows, 'o': old ones, 'c': commit
 * times), as a string literal written straight into b: a run may be
 * megabytes, better not copied again.
 */
static void
append_array_literal(StringInfo b, RuleRun *run, char which)
{
	bool		escapes = false;
	ListCell   *lc;

	foreach(lc, run->elems)
	{
		RunElem    *e = lfirst(lc);
		const char *v = which == 'n' ? e->new : which == 'o' ? e->old : e->commit;

		if (v && strchr(v, '\\') != NULL)
		{
			escapes = true;
			break;
		}
	}
	enlargeStringInfo(b, run->bytes + 16);
	appendStringInfoString(b, escapes ? "E'{" : "'{");
	foreach(lc, run->elems)
	{
		RunElem    *e = lfirst(lc);
		const char *v = which == 'n' ? e->new : which == 'o' ? e->old : e->commit;

		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(b, ',');
		if (v)
			append_quoted(b, v, escapes);
		else
			appendStringInfoString(b, "NULL");
	}
	appendStringInfoString(b, "}'");
}

/*
 * ", unnest($N) AS alias" (no comma if first): the next parameter of the
 * run's statement, the array which of type (array_literal() writes it).
 */
static void
append_unnest(StringInfo b, List **params, char which, const char *type, const char *alias,
			  bool first)
{
	*params = lappend(*params, psprintf("%c", which));
	appendStringInfo(b, "%spg_catalog.unnest($%d::%s[]) AS %s", first ? "" : ", ",
					 list_length(*params), type, alias);
}

/* A statement prepared in the target session, or being prepared. */
typedef struct Prepared
{
	uint32		hash;			/* of the text */
	char	   *text;
	char	   *name;
	bool		confirmed;		/* it is prepared there */
	RuleApplyTable *table;		/* of the statement that needs it first */
} Prepared;

/* The prepared statement of text, entered (*is_new) if the session has none. */
static Prepared *
prepared_entry(RuleApply *apply, const char *text, bool *is_new)
{
	uint32		hash = hash_bytes((const unsigned char *) text, strlen(text));
	MemoryContext old;
	Prepared   *p;
	ListCell   *lc;

	foreach(lc, apply->prepared)
	{
		p = lfirst(lc);
		if (p->hash == hash && strcmp(p->text, text) == 0)
		{
			*is_new = false;
			return p;
		}
	}
	old = MemoryContextSwitchTo(apply->prepared_cxt);
	p = palloc(sizeof(Prepared));
	p->hash = hash;
	p->text = pstrdup(text);
	p->name = psprintf("replicator_apply_%d", ++apply->prepared_count);
	p->confirmed = false;
	apply->prepared = lappend(apply->prepared, p);
	MemoryContextSwitchTo(old);
	*is_new = true;
	return p;
}

/* Forget the statements not prepared (a failed or discarded batch needed them). */
static void
forget_unprepared(RuleApply *apply)
{
	ListCell   *lc;

	foreach(lc, apply->prepared)
	{
		if (!((Prepared *) lfirst(lc))->confirmed)
			apply->prepared = foreach_delete_current(apply->prepared, lc);
	}
}

/*
 * The name of text prepared in the session (its parameters' types are its
 * casts'), prepared before the next round trip goes if it is not yet
 * (send_built()): on its own, so that the session does not keep the
 * round trip's megabytes as its text.  Its errors are table's, if any.
 */
static const char *
prepared_name(RuleApply *apply, const char *text, RuleApplyTable *table)
{
	bool		is_new;
	Prepared   *p = prepared_entry(apply, text, &is_new);

	if (is_new)
	{
		p->table = table;
		apply->to_prepare = lappend(apply->to_prepare, p);
	}
	return p->name;
}

/*
 * Run the statement text of run, its parameters the run's arrays (params:
 * "n", "o" or "c"): prepared once per session, then
 * executed with the arrays as literals, so that the target parses nothing
 * but them and plans nothing.
 */
static void
execute_run(RuleApply *apply, RuleRun *run, const char *text, List *params)
{
	StringInfo	b = &apply->sql;
	const char *name = prepared_name(apply, text, run->table);
	ListCell   *lc;

	appendStringInfo(b, "EXECUTE %s(", name);
	foreach(lc, params)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoString(b, ", ");
		append_array_literal(b, run, ((char *) lfirst(lc))[0]);
	}
	appendStringInfoString(b, ");\n");
	apply->owners = lappend(apply->owners, statement_owner(run->table, run->op, run->changes));
}

/*
 * The statement of the run built so far.  Its result: one row per
 * conflict (op, kind, key, source row, target row, resolution, set aside).
 */
static void
append_run_statement(RuleApply *apply, RuleRun *run)
{
	StringInfoData stmt;
	StringInfo	b = &stmt;
	List	   *params = NIL;	/* the arrays: "n", "o" or "c" */
	RuleApplyTable *t = run->table;
	const char *T = t->table->qualified;
	List	   *cols = t->columns;
	List	   *setcols = set_columns(run);
	List	   *key = t->table->key;
	const char *op = run->op == RULE_INSERT ? "insert" :
		run->op == RULE_UPDATE ? "update" : "delete";
	const char *source_newer;
	const char *changed;
	const char *apply_existing;
	const char *insert_missing;
	const char *set_aside;
	StringInfoData k;
	StringInfoData src;
	bool		old_is_new = true;
	const char *old;			/* the old row's columns */
	ListCell   *lc;

	/* old rows that are the new ones (no key changed) need not go twice */
	foreach(lc, run->elems)
		old_is_new &= ((RunElem *) lfirst(lc))->old == ((RunElem *) lfirst(lc))->new;
	old = old_is_new ? "(s.n)." : "(s.o).";

	/* when is the target's row newer than the source's change */
	if (apply->resolution != RULE_LAST_WRITE_WINS)
		source_newer = "true";
	else if (apply->timestamp_column)
		source_newer = psprintf("(t.%s IS NULL OR t.%s <= s.committed)",
								quote_identifier(apply->timestamp_column),
								quote_identifier(apply->timestamp_column));
	else
		/* rows the rule wrote carry its origin: they are the source's */
		source_newer = "(c.roident = o.roident"
			" OR c.timestamp IS NULL OR c.timestamp <= s.committed)";

	/* a row the target changed since the source last wrote it */
	if (run->op == RULE_INSERT)
		changed = "false";
	else if (run->full)
	{
		StringInfoData c;

		initStringInfo(&c);
		appendStringInfoString(&c, "ROW(");
		append_cols(&c, cols, "t.");
		appendStringInfoString(&c, ")::text IS DISTINCT FROM ROW(");
		append_values(&c, cols, 'o');
		appendStringInfoString(&c, ")::text");
		changed = c.data;
	}
	else if (apply->resolution == RULE_LAST_WRITE_WINS)
		changed = psprintf("NOT %s", source_newer);
	else
		changed = "false";

	/* write over an existing row? */
	if (run->op == RULE_INSERT)
		apply_existing = apply->resolution == RULE_SOURCE_WINS ? "NOT cur.same" :
			apply->resolution == RULE_LAST_WRITE_WINS ? "NOT cur.same AND cur.newer" : "false";
	else
		apply_existing = apply->resolution == RULE_SOURCE_WINS ? "true" :
			apply->resolution == RULE_LAST_WRITE_WINS ? "cur.newer" : "NOT cur.changed";
	/* insert a row the change did not find? */
	insert_missing = run->op == RULE_INSERT ? "true" :
		run->op == RULE_DELETE ? "false" :
		/* the WAL lacks the unchanged TOASTed values the row would need */
		run->unchanged != NULL ? "false" :
		(apply->resolution == RULE_SOURCE_WINS || apply->resolution == RULE_LAST_WRITE_WINS) ? "true" : "false";
	set_aside = apply->resolution == RULE_ERROR ? "true" :
		run->op == RULE_UPDATE && run->unchanged != NULL ? "cur.ord IS NULL" : "false";

	initStringInfo(&k);
	appendStringInfoString(&k, "pg_catalog.jsonb_build_object(");
	foreach(lc, key)
		appendStringInfo(&k, "%s%s, %s%s", foreach_current_index(lc) > 0 ? ", " : "",
						 quote_literal_cstr(lfirst(lc)), old, quote_identifier(lfirst(lc)));
	appendStringInfoChar(&k, ')');

	/* the source row of a conflict: the columns it writes */
	initStringInfo(&src);
	if (run->op == RULE_DELETE)
		appendStringInfoString(&src, "NULL::pg_catalog.jsonb");
	else
	{
		appendStringInfoString(&src, "(SELECT pg_catalog.jsonb_object_agg(f.key, f.value)"
							   " FROM pg_catalog.jsonb_each(pg_catalog.to_jsonb(s.n)) f"
							   " WHERE f.key OPERATOR(pg_catalog.=) ANY (ARRAY[");
		foreach(lc, setcols)
			appendStringInfo(&src, "%s%s", foreach_current_index(lc) > 0 ? ", " : "",
							 quote_literal_cstr(lfirst(lc)));
		appendStringInfoString(&src, "]::pg_catalog.text[]))");
	}

	/*
	 * s: the run's changes, rows of the target's row type read by its input
	 * functions (record_in), whatever the column order, ord their order.
	 * The arrays are parameters: the generic plan expects a few rows and
	 * finds them by key however long the run.
	 */
	initStringInfo(&stmt);
	appendStringInfoString(b, "WITH s AS MATERIALIZED (SELECT ");
	if (run->op == RULE_DELETE)
		appendStringInfo(b, "NULL::%s AS n, u.o", T);
	else if (old_is_new)
		appendStringInfoString(b, "u.n");
	else
		appendStringInfoString(b, "u.n, u.o");
	appendStringInfo(b, ", %s AS committed, pg_catalog.row_number() OVER () AS ord FROM (SELECT ",
					 apply->resolution == RULE_LAST_WRITE_WINS ? "u.committed" : "NULL::pg_catalog.timestamptz");
	if (run->op != RULE_DELETE)
		append_unnest(b, &params, 'n', T, "n", true);
	if (run->op == RULE_DELETE || !old_is_new)
		append_unnest(b, &params, 'o', T, "o", run->op == RULE_DELETE);
	if (apply->resolution == RULE_LAST_WRITE_WINS)
		append_unnest(b, &params, 'c', "pg_catalog.timestamptz", "committed", false);
	appendStringInfoString(b, ") u),");
	/*
	 * Source-wins, the old row only a key: an update or delete writes
	 * whatever row it finds, and a row it did not find is the only
	 * conflict (an update then inserts it).  The statement's own write
	 * says which rows it found, with no read and no lock before it.
	 */
	if (apply->resolution == RULE_SOURCE_WINS && !run->full && run->unchanged == NULL &&
		run->op != RULE_INSERT)
	{
		append_writes(b, run, setcols, old, "", "true", "true", "w");
		appendStringInfo(b,
						 ", c AS (SELECT '%s' AS op, 'row missing' AS kind, %s AS key,"
						 " %s AS source_row,"
						 " NULL::pg_catalog.jsonb AS target_row, 'source-wins' AS resolution, false AS set_aside"
						 " FROM s WHERE NOT EXISTS (SELECT FROM w WHERE w.ord = s.ord)"
						 " AND (SELECT count(*) FROM ins) >= 0)",
						 op, k.data, src.data);
	}
	else
	{
		/*
		 * The target rows the changes meet, before any write.  same: an
		 * insert finds the very row (as text: json, xml or point have no =
		 * operator).  Only a conflict's target row is rendered.
		 */
		appendStringInfoString(b, " cur AS MATERIALIZED (SELECT s.ord, ");
		if (run->op == RULE_INSERT)
		{
			/* an insert that meets a row is a conflict, unless it is the same */
			appendStringInfoString(b, "pg_catalog.to_jsonb(t.*) AS row, ROW(");
			append_cols(b, cols, "t.");
			appendStringInfoString(b, ")::text IS NOT DISTINCT FROM ROW(");
			append_values(b, cols, 'n');
			appendStringInfoString(b, ")::text AS same");
		}
		else
			appendStringInfo(b, "CASE WHEN %s THEN pg_catalog.to_jsonb(t.*) END AS row, false AS same",
							 changed);
		appendStringInfo(b, ", %s AS changed, %s AS newer FROM s JOIN %s t ON ", changed,
						 source_newer, T);
		append_key_match(b, key, "t.", old);
		if (apply->use_origin)
			appendStringInfoString(b, " LEFT JOIN LATERAL pg_catalog.pg_xact_commit_timestamp_origin(t.xmin) c ON true"
								   " LEFT JOIN LATERAL (SELECT roident FROM pg_catalog.pg_replication_origin"
								   "  WHERE roname OPERATOR(pg_catalog.=) pg_catalog.current_setting('replicator.origin', true)) o ON true");
		appendStringInfoString(b, " FOR UPDATE OF t),");

		append_writes(b, run, setcols, old, " JOIN cur USING (ord)", apply_existing, insert_missing,
					  "cur");

		/*
		 * The conflicts, and what became of them.  A rule's stream keeps them
		 * on the target, in the batch's own transaction, until they are
		 * recorded here: a crash never loses a change set aside.
		 */
		appendStringInfo(b,
						 ", c AS (SELECT '%s' AS op, CASE WHEN cur.ord IS NULL THEN 'row missing'"
						 "  WHEN '%s' = 'insert' THEN 'key exists' ELSE 'changed on target' END AS kind,"
						 " %s AS key, %s AS source_row,"
						 " cur.row AS target_row, r.resolution, r.resolution = 'set aside' AS set_aside"
						 " FROM s LEFT JOIN cur USING (ord) LEFT JOIN w USING (ord),"
						 " LATERAL (SELECT CASE WHEN w.ord IS NOT NULL"
						 "  OR (cur.ord IS NULL AND (%s OR '%s' = 'delete') AND NOT (%s)) THEN 'source-wins'"
						 "  WHEN %s THEN 'set aside' ELSE 'target-wins' END AS resolution) r"
						 " WHERE (SELECT count(*) FROM ins) >= 0 AND (%s))",
						 op, op, k.data, src.data,
						 insert_missing, op, set_aside, set_aside,
						 run->op == RULE_INSERT ? "cur.ord IS NOT NULL AND NOT cur.same" :
						 "cur.ord IS NULL OR cur.changed");
	}
	if (apply->slot[0] != '\0')
		appendStringInfo(b,
						 " INSERT INTO replicator_apply.conflicts"
						 " (source, slot, table_name, op, kind, key, source_row, target_row, resolution, set_aside)"
						 " SELECT %s, %s, %s, c.* FROM c"
						 " RETURNING id, op, kind, key, source_row, target_row, resolution, set_aside",
						 quote_literal_cstr(apply->source), quote_literal_cstr(apply->slot),
						 quote_literal_cstr(t->table->qualified));
	else
		appendStringInfoString(b, " SELECT 0, c.* FROM c");
	execute_run(apply, run, stmt.data, params);
}

/* Open the target transaction, if not yet: with its origin, if it has one. */
static void
open_xact(RuleApply *apply)
{
	if (apply->xact_open)
		return;
	appendStringInfoString(&apply->sql, "BEGIN;\n");
	apply->owners = lappend(apply->owners, NULL);
	if (apply->use_origin)
	{
		appendStringInfo(&apply->sql,
						 "SELECT pg_catalog.set_config('replicator.origin', %s, true);\n",
						 quote_literal_cstr(apply->slot));
		apply->owners = lappend(apply->owners, NULL);
	}
	apply->xact_open = true;
}

/* End a run: its statement joins those to send. */
static void
end_run(RuleApply *apply, RuleRun *run)
{
	MemoryContext old = MemoryContextSwitchTo(apply->cxt);

	apply->run_bytes -= run->bytes;
	open_xact(apply);
	append_run_statement(apply, run);
	apply->runs = list_delete_ptr(apply->runs, run);
	MemoryContextSwitchTo(old);
}

/* End every run, in the order they began. */
static void
end_runs(RuleApply *apply)
{
	while (apply->runs != NIL)
		end_run(apply, linitial(apply->runs));
}

typedef struct RunKey
{
	char		key[NAMEDATALEN];	/* hash of the key text */
	RunElem    *elem;			/* the change that met it */
	bool		is_new;			/* as its new key (not its old one) */
} RunKey;

/* The run's entry for key, entered if new (*found false); NULL: no key. */
static RunKey *
run_key(RuleApply *apply, RuleRun *run, const char *key, bool *found)
{
	RunKey		entry;
	RunKey	   *e;
	uint32		h1;
	uint64		h2;

	*found = false;
	if (key == NULL)
		return NULL;
	if (run->keys == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(RunKey);
		ctl.hcxt = apply->cxt;
		run->keys = hash_create("replicator run keys", 256, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&entry, 0, sizeof(entry));
	h1 = hash_bytes((const unsigned char *) key, strlen(key));
	h2 = hash_bytes_extended((const unsigned char *) key, strlen(key), 0x5eed);
	snprintf(entry.key, sizeof(entry.key), "%08x%016" INT64_MODIFIER "x%zu", h1, h2, strlen(key));
	e = hash_search(run->keys, entry.key, HASH_ENTER, found);
	if (!*found)
	{
		e->elem = NULL;
		e->is_new = false;
	}
	return e;
}

/* the source's commit time of txn, an array element */
static char *
commit_element(const RuleTxn *txn)
{
	return psprintf("\"%s\"", timestamptz_to_str(txn->commit_time));
}

static int
list_index_of_name(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
	{
		if (strcmp(lfirst(lc), name) == 0)
			return foreach_current_index(lc);
	}
	return -1;
}

/*
 * For each column of the target's row type, where row has its value (-1:
 * nowhere): computed once for each layout of the rows (the decoder's rows
 * of one relation share one, unless an update left TOASTed columns out).
 */
static const int *
row_layout(RuleApplyTable *t, const RuleRow *row)
{
	MemoryContext old;
	bool		same = t->layout_n == row->ncols;
	ListCell   *lc;

	for (int j = 0; same && j < row->ncols; j++)
		same = strcmp(t->layout[j], row->names[j]) == 0;
	if (same)
		return t->row_type_from;
	old = MemoryContextSwitchTo(t->cxt);
	t->layout_n = row->ncols;
	t->layout = palloc(sizeof(char *) * Max(row->ncols, 1));
	for (int j = 0; j < row->ncols; j++)
		t->layout[j] = pstrdup(row->names[j]);
	t->row_type_from = palloc(sizeof(int) * Max(list_length(t->row_type), 1));
	foreach(lc, t->row_type)
	{
		int			j = -1;

		/* only the columns the rule writes: the rest stay NULL */
		if (list_index_of_name(t->columns, lfirst(lc)) >= 0)
			for (j = row->ncols - 1; j >= 0 && strcmp(row->names[j], lfirst(lc)) != 0; j--)
				;
		t->row_type_from[foreach_current_index(lc)] = j;
	}
	MemoryContextSwitchTo(old);
	return t->row_type_from;
}

/*
 * v, a field of a composite literal (record_in) within the quotes of an
 * array element (array_in).  Quoted where record_out would quote it; a
 * quote or backslash in it is escaped once for each.
 */
static void
append_field(StringInfo b, const char *v)
{
	size_t		plain = strcspn(v, "\"\\(), \t\n\r\v\f");

	if (v[0] != '\0' && v[plain] == '\0')
	{
		appendBinaryStringInfo(b, v, plain);
		return;
	}
	appendStringInfoString(b, "\\\"");
	for (;;)
	{
		size_t		n = strcspn(v, "\"\\");

		appendBinaryStringInfo(b, v, n);
		if (v[n] == '\0')
			break;
		appendStringInfoString(b, "\\\\\\");
		appendStringInfoChar(b, v[n]);
		v += n + 1;
	}
	appendStringInfoString(b, "\\\"");
}

/*
 * row as an element of an array of the target's row type: its columns in
 * the target's order, those it lacks (or the target writes itself) NULL,
 * as json_populate_record would leave them.
 */
static char *
row_element(RuleApplyTable *t, const RuleRow *row)
{
	int			n = list_length(t->row_type);
	const int  *from = row_layout(t, row);
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoString(&b, "\"(");
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoChar(&b, ',');
		if (from[i] >= 0 && row->values[from[i]] != NULL)
			append_field(&b, row->values[from[i]]);
	}
	appendStringInfoString(&b, ")\"");
	return b.data;
}

static char *
unchanged_string(List *unchanged)
{
	StringInfoData buf;
	ListCell   *lc;

	if (unchanged == NIL)
		return NULL;
	initStringInfo(&buf);
	foreach(lc, unchanged)
		appendStringInfo(&buf, "\x1f%s\x1f", (char *) lfirst(lc));
	return buf.data;
}

static bool
same_string(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* Add a change to the open target transaction, sending when enough. */
void
replicator_rule_apply_change(RuleApply *apply, RuleApplyTable *table, const RuleTxn *txn,
							 RuleChange *change)
{
	MemoryContext old = MemoryContextSwitchTo(apply->cxt);
	char	   *unchanged = unchanged_string(change->unchanged);
	bool		full = change->old_is_full && change->old_row != NULL;

	RuleRun    *run = NULL;
	RunElem    *elem;
	ListCell   *lc;
	const char *old_key;

	if (change->op == RULE_TRUNCATE)
	{
		end_runs(apply);
		open_xact(apply);
		appendStringInfo(&apply->sql, "TRUNCATE ONLY %s;\n", table->table->qualified);
		apply->owners = lappend(apply->owners, statement_owner(table, RULE_TRUNCATE, 0));
		apply->changes++;
		MemoryContextSwitchTo(old);
		return;
	}

	/* under REPLICA IDENTITY FULL the old key is the new one */
	old_key = change->old_key && change->key && strcmp(change->old_key, change->key) == 0 ?
		NULL : change->old_key;
	foreach(lc, apply->runs)
		if (((RuleRun *) lfirst(lc))->table == table)
			run = lfirst(lc);
	if (run && (run->op != change->op || run->full != full ||
				!same_string(run->unchanged, unchanged) ||
				list_length(run->elems) >= apply->max_rows))
	{
		end_run(apply, run);
		run = NULL;
	}
	if (run)
	{
		bool		found;
		RunKey	   *k = run_key(apply, run, change->key, &found);

		/*
		 * An update of a row the run updated already: under source-wins the
		 * two are one change, from the first's old row to this new one (the
		 * target ends the same, with the same conflicts).  Hot rows do not
		 * cut runs short.  Not where a trigger would see the updates.
		 */
		if (found && k->is_new && old_key == NULL && change->op == RULE_UPDATE &&
			apply->resolution == RULE_SOURCE_WINS && !table->update_triggers)
		{
			const char *new = row_element(table, change->new_row);

			apply->run_bytes -= run->bytes;
			run->bytes += strlen(new);
			apply->run_bytes += run->bytes;
			k->elem->new = new;
			run->changes++;
			apply->changes++;
			MemoryContextSwitchTo(old);
			return;
		}
		/* otherwise a key met twice (old or new) starts a new run */
		if (found || (old_key && (run_key(apply, run, old_key, &found), found)))
		{
			end_run(apply, run);
			run = NULL;
		}
	}
	/* in the source's order, unless the target lets changes of tables commute */
	if (run == NULL && !apply->reorder)
		end_runs(apply);

	if (run == NULL)
	{
		bool		found;

		run = palloc0(sizeof(RuleRun));
		run->table = table;
		run->op = change->op;
		run->full = full;
		run->unchanged = unchanged;
		apply->runs = lappend(apply->runs, run);
		(void) run_key(apply, run, change->key, &found);
		if (old_key)
			(void) run_key(apply, run, old_key, &found);
	}

	elem = palloc(sizeof(RunElem));
	elem->new = change->new_row ? row_element(table, change->new_row) : NULL;
	elem->old = change->old_row ? row_element(table, change->old_row) : elem->new;
	elem->commit = txn && apply->resolution == RULE_LAST_WRITE_WINS ? commit_element(txn) : NULL;
	run->elems = lappend(run->elems, elem);
	/* the entries made above (or before this change cut a run) point here */
	{
		bool		found;
		RunKey	   *k = run_key(apply, run, change->key, &found);

		if (k)
		{
			k->elem = elem;
			k->is_new = true;
		}
		if (old_key && (k = run_key(apply, run, old_key, &found)) != NULL && k->elem == NULL)
			k->elem = elem;
	}
	apply->run_bytes -= run->bytes;
	run->bytes += strlen(elem->old) + (elem->new && elem->new != elem->old ? strlen(elem->new) : 0) + 48;
	apply->run_bytes += run->bytes;
	run->changes++;
	apply->changes++;
	MemoryContextSwitchTo(old);

	if (apply->sql.len + apply->run_bytes > RULE_MAX_SQL_BYTES)
		(void) replicator_rule_apply_send(apply, NULL);
}

/* Rows of an initial copy (replicator_rule_row()): inserts without a txn. */
void
replicator_rule_apply_rows(RuleApply *apply, RuleApplyTable *table, RuleRow **rows, int n)
{
	for (int i = 0; i < n; i++)
	{
		RuleChange	change;

		memset(&change, 0, sizeof(change));
		change.op = RULE_INSERT;
		change.relid = table->table->relid;
		change.new_row = rows[i];
		/* a copy never meets a key twice */
		change.key = NULL;
		replicator_rule_apply_change(apply, table, NULL, &change);
	}
}

/*
 * Row r of res, a row of replicator_apply.conflicts as a statement returns
 * it (id, op, kind, key, source_row, target_row, resolution, set_aside),
 * joins apply->conflicts; table_name is its table's.
 */
void
replicator_rule_read_conflict(RuleApply *apply, PGresult *res, int r, const char *table_name)
{
	MemoryContext old = MemoryContextSwitchTo(apply->conflict_cxt);
	RuleConflict *c = palloc0(sizeof(RuleConflict));

#define CELL(col) (PQgetisnull(res, r, col) ? NULL : pstrdup(PQgetvalue(res, r, col)))
	c->target_id = pg_strtoint64(PQgetvalue(res, r, 0));
	c->op = CELL(1);
	c->kind = CELL(2);
	c->key = CELL(3);
	c->source_row = CELL(4);
	c->target_row = CELL(5);
	c->resolution = CELL(6);
	c->set_aside = strcmp(PQgetvalue(res, r, 7), "t") == 0;
#undef CELL
	c->table_name = pstrdup(table_name);
	apply->conflicts = lappend(apply->conflicts, c);
	MemoryContextSwitchTo(old);
}

/*
 * The batch failed: first error wins.  res NULL: the connection broke.
 * table: the statement's table, NULL if not a table's.
 */
static void
note_error(RuleApply *apply, PGresult *res, RuleApplyTable *table)
{
	MemoryContext old;

	if (apply->error != NULL)
		return;
	old = MemoryContextSwitchTo(apply->conflict_cxt);
	apply->error = replicator_remote_error(apply->conn, res);
	apply->error_table = table;
	apply->error_transient = replicator_remote_error_transient(res);
	MemoryContextSwitchTo(old);
}

static void
each_result(PGresult *res, int i, void *arg)
{
	RuleApply  *apply = arg;
	StatementOwner *owner = i < list_length(apply->sent_owners) ?
		list_nth(apply->sent_owners, i) : NULL;
	ExecStatusType status = PQresultStatus(res);

	if (status == PGRES_FATAL_ERROR)
	{
		note_error(apply, res, owner ? owner->table : NULL);
		return;
	}
	/* a failed batch's counts are dropped (replicator_rule_apply_reset) */
	if (owner && owner->op == RULE_INSERT)
		owner->table->inserted += owner->changes;
	else if (owner && owner->op == RULE_UPDATE)
		owner->table->updated += owner->changes;
	else if (owner && owner->op == RULE_DELETE)
		owner->table->deleted += owner->changes;
	/* the target's WAL positions after a commit */
	if (status == PGRES_TUPLES_OK && owner == NULL && PQnfields(res) == 2 &&
		strcmp(PQfname(res, 0), "replicator_commit_wal") == 0 && PQntuples(res) == 1)
	{
		apply->commit_wal = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
															CStringGetDatum(PQgetvalue(res, 0, 0))));
		apply->flushed_wal = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
															 CStringGetDatum(PQgetvalue(res, 0, 1))));
		return;
	}
	if (status != PGRES_TUPLES_OK || owner == NULL || PQnfields(res) != 8)
		return;
	for (int r = 0; r < PQntuples(res); r++)
	{
		replicator_rule_read_conflict(apply, res, r, owner->table->table->qualified);
		owner->table->conflicts++;
		apply->batch_conflicts = true;
	}
}

/*
 * A commit's results are in: what is flushed on the target now.  A
 * synchronous commit is flushed, and so is everything before it.
 */
static void
note_durable(RuleApply *apply)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	if (apply->in_flight_durable || apply->batch_conflicts)
	{
		apply->durable_lsn = apply->committed_lsn;
		list_free_deep(apply->not_flushed);
		apply->not_flushed = NIL;
	}
	else if (apply->commit_wal != InvalidXLogRecPtr)
	{
		DurablePoint *p = palloc(sizeof(DurablePoint));

		p->target_wal = apply->commit_wal;
		p->lsn = apply->committed_lsn;
		apply->not_flushed = lappend(apply->not_flushed, p);
	}
	while (apply->not_flushed != NIL &&
		   ((DurablePoint *) linitial(apply->not_flushed))->target_wal <= apply->flushed_wal)
	{
		DurablePoint *p = linitial(apply->not_flushed);

		apply->durable_lsn = Max(apply->durable_lsn, p->lsn);
		apply->not_flushed = list_delete_first(apply->not_flushed);
		pfree(p);
	}
	apply->commit_wal = InvalidXLogRecPtr;
	apply->batch_conflicts = false;
	MemoryContextSwitchTo(old);
}

/*
 * Send what is built, one round trip at a time on the connection: first
 * the results of what is in flight.  With wait, its results too; without,
 * building goes on meanwhile (replicator_rule_apply_wait() collects them).
 * commit_lsn: what the target records if it commits.
 */
static bool
send_built(RuleApply *apply, bool wait, XLogRecPtr commit_lsn, bool durable)
{
	MemoryContext sent;
	bool		ok;
	ListCell   *lc;

	if (!replicator_rule_apply_wait(apply))
		return false;
	if (apply->sql.len == 0)
		return true;
	foreach(lc, apply->to_prepare)
	{
		Prepared   *p = lfirst(lc);
		PGresult   *res = replicator_remote_prepare(apply->conn, p->name, p->text);

		if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
			note_error(apply, res, p->table);
		PQclear(res);
		if (apply->error)
			return false;
		p->confirmed = true;
	}
	apply->to_prepare = NIL;
	ok = replicator_remote_send(apply->conn, apply->sql.data);
	/* what was sent lives until its results are in */
	sent = apply->cxt;
	apply->cxt = apply->sent_cxt;
	apply->sent_cxt = sent;
	apply->sent_owners = apply->owners;
	apply->sent_open = apply->xact_open;
	apply->in_flight_durable = durable;
	apply->in_flight = true;
	apply->in_flight_lsn = commit_lsn;
	start_over(apply);
	if (!ok)
	{
		note_error(apply, NULL, NULL);
		apply->in_flight = false;
		MemoryContextReset(apply->sent_cxt);
		return false;
	}
	return !wait || replicator_rule_apply_wait(apply);
}

/*
 * The results of what is in flight, if anything.  False if the connection
 * broke or a statement failed (apply->error).
 */
bool
replicator_rule_apply_wait(RuleApply *apply)
{
	bool		ok;

	if (!apply->in_flight)
		return apply->error == NULL;
	ok = replicator_remote_collect_each(apply->conn, each_result, apply);
	apply->in_flight = false;
	apply->sent_owners = NIL;
	MemoryContextReset(apply->sent_cxt);
	if (!ok)
		note_error(apply, NULL, NULL);
	if (apply->error)
		return false;
	if (apply->in_flight_lsn != InvalidXLogRecPtr)
	{
		apply->committed_lsn = apply->in_flight_lsn;
		note_durable(apply);
	}
	return true;
}

/*
 * Send the statements built so far (and extra_sql after them) in one round
 * trip.  False if the connection broke or a statement failed (apply->error).
 */
bool
replicator_rule_apply_send(RuleApply *apply, const char *extra_sql)
{
	MemoryContext old;

	end_runs(apply);
	old = MemoryContextSwitchTo(apply->cxt);
	if (extra_sql)
	{
		appendStringInfoString(&apply->sql, extra_sql);
		apply->owners = lappend(apply->owners, NULL);
	}
	MemoryContextSwitchTo(old);
	return send_built(apply, true, InvalidXLogRecPtr, false);
}

/* The statement that records in the target how far it has applied (lsn). */
static char *
progress_sql(RuleApply *apply, const char *lsn)
{
	return psprintf("INSERT INTO replicator_apply.progress (source, slot, lsn)"
					" VALUES (%s, %s, %s)"
					" ON CONFLICT (source, slot) DO UPDATE SET lsn = excluded.lsn,"
					" applied_at = pg_catalog.now()",
					quote_literal_cstr(apply->source), quote_literal_cstr(apply->slot), lsn);
}

/*
 * Commit the open target transaction with lsn (every change before it
 * applied) recorded in it, and extra_sql (the copy's record) before that.
 * Without wait, the commit is in flight: apply->committed_lsn reaches lsn
 * once replicator_rule_apply_wait() (or the next send) has its results.
 *
 * The commit is asynchronous there (it waits for no flush), unless durable
 * or the target holds conflicts not yet recorded here (they must not be
 * recorded twice): apply->durable_lsn says what is flushed.
 */
bool
replicator_rule_apply_commit(RuleApply *apply, XLogRecPtr lsn, const char *extra_sql, bool wait,
							 bool durable)
{
	MemoryContext old;

	end_runs(apply);
	old = MemoryContextSwitchTo(apply->cxt);
	open_xact(apply);
	if (extra_sql)
	{
		appendStringInfoString(&apply->sql, extra_sql);
		apply->owners = lappend(apply->owners, NULL);
	}
	/* the same few statements end every batch: prepared too */
	appendStringInfo(&apply->sql, "EXECUTE %s('%X/%X');\n",
					 prepared_name(apply, progress_sql(apply, "$1::pg_catalog.pg_lsn"), NULL),
					 LSN_FORMAT_ARGS(lsn));
	apply->owners = lappend(apply->owners, NULL);
	if (durable)
		appendStringInfoString(&apply->sql,
							   "SELECT pg_catalog.set_config('synchronous_commit', 'on', true);\n");
	else
		appendStringInfo(&apply->sql, "EXECUTE %s;\n",
						 prepared_name(apply,
									   psprintf("SELECT pg_catalog.set_config('synchronous_commit', 'on', true)"
												" FROM replicator_apply.conflicts WHERE source = %s AND slot = %s LIMIT 1",
												quote_literal_cstr(apply->source), quote_literal_cstr(apply->slot)),
									   NULL));
	apply->owners = lappend(apply->owners, NULL);
	appendStringInfoString(&apply->sql, "COMMIT;\n");
	apply->owners = lappend(apply->owners, NULL);
	appendStringInfo(&apply->sql, "EXECUTE %s;\n",
					 prepared_name(apply,
								   "SELECT pg_catalog.pg_current_wal_insert_lsn() AS replicator_commit_wal,"
								   " pg_catalog.pg_current_wal_flush_lsn()", NULL));
	apply->owners = lappend(apply->owners, NULL);
	apply->xact_open = false;
	apply->changes = 0;
	MemoryContextSwitchTo(old);
	return send_built(apply, wait, lsn, durable);
}

/* After a failure: nothing pending, the target rolled back (or will). */
void
replicator_rule_apply_reset(RuleApply *apply)
{
	/* the connection's results, whatever they are, are read */
	if (apply->in_flight)
		(void) replicator_rule_apply_wait(apply);
	start_over(apply);
	apply->xact_open = false;
	apply->sent_open = false;
	apply->batch_conflicts = false;
	apply->changes = 0;
	forget_unprepared(apply);
	replicator_rule_apply_recorded(apply);
}

/* The conflicts were recorded (or are moot): forget them. */
void
replicator_rule_apply_recorded(RuleApply *apply)
{
	apply->conflicts = NIL;
	apply->error = NULL;
	apply->error_table = NULL;
	apply->error_transient = false;
	MemoryContextReset(apply->conflict_cxt);
}
