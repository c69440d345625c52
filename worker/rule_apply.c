/*-------------------------------------------------------------------------
 *
 * rule_apply.c
 *	  Apply a rule's changes to its target.
 *
 * Consecutive changes of one table and one kind form a run, sent as one
 * statement over a JSON array: the target turns each element back into
 * its own row type (json_populate_record), so column order and compatible
 * types may differ between the two sides.  A run never holds a key twice,
 * so that the rows of one statement are independent of one another (under
 * source-wins, an update of a row the run updated already merges into its
 * change instead).
 *
 * Each statement resolves its own conflicts (rule_status, README): it
 * reads the target rows its changes meet, then writes, all under one
 * snapshot, and returns the conflicts for the worker to record.  Several
 * statements go in one round trip, and the progress record (the source
 * position applied) is written in the same target transaction as the
 * changes: after any crash the worker resumes exactly after it.  One
 * round trip may be in flight while the next batch is built; commits do
 * not wait for the target's flush, and durable_lsn follows what it has
 * flushed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
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

/* One element of a run's JSON array: a row's change. */
typedef struct RunElem
{
	const char *old;			/* the old row, or the key */
	const char *new;			/* NULL for a delete */
	char	   *commit;			/* the source's commit time, a JSON string */
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
	replicator_rule_apply_reset(apply);
}

/*
 * The columns of table that its target table has too (not generated
 * there): what a rule writes.  NULL and *error if the query failed.
 * *update_triggers: whether a trigger on update fires there, in this
 * session (under session_replication_role = replica, only ENABLE ALWAYS
 * or REPLICA ones).
 */
List *
replicator_rule_target_columns(PGconn *conn, RuleTable *table, bool *update_triggers,
							   char **error)
{
	const char *values[1] = {table->qualified};
	PGresult   *res = replicator_remote_exec(conn,
											 "SELECT attname, EXISTS (SELECT FROM pg_catalog.pg_trigger g"
											 "  WHERE g.tgrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1) AND NOT g.tgisinternal"
											 "  AND (g.tgtype OPERATOR(pg_catalog.&) 16) OPERATOR(pg_catalog.<>) 0"
											 "  AND g.tgenabled OPERATOR(pg_catalog.=) ANY (CASE pg_catalog.current_setting('session_replication_role')"
											 "   WHEN 'replica' THEN '{A,R}'::\"char\"[] ELSE '{A,O}'::\"char\"[] END))"
											 " FROM pg_catalog.pg_attribute a"
											 " WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)"
											 " AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped"
											 " AND attgenerated OPERATOR(pg_catalog.=) ''", 1, values);
	List	   *cols = NIL;
	ListCell   *lc;

	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		*error = replicator_remote_expect(conn, res, PGRES_TUPLES_OK);
		return NULL;
	}
	foreach(lc, table->columns)
		for (int r = 0; r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, 0), lfirst(lc)) == 0)
				cols = lappend(cols, lfirst(lc));
	if (update_triggers)
		*update_triggers = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	PQclear(res);
	*error = NULL;
	return cols;
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

/*
 * A row's values ('n': new, 'o': old).  json_populate_record would make a
 * json or jsonb column's JSON null a SQL NULL: the element leaves SQL NULLs
 * out (rule_decode.c), so a null that is there is a JSON null.
 */
static void
append_values(StringInfo buf, List *cols, List *json_columns, char which)
{
	ListCell   *lc;

	foreach(lc, cols)
	{
		const char *col = lfirst(lc);
		const char *q = quote_identifier(col);
		bool		is_json = false;
		ListCell   *jc;

		foreach(jc, json_columns)
			is_json |= strcmp(lfirst(jc), col) == 0;
		if (foreach_current_index(lc) > 0)
			appendStringInfoString(buf, ", ");
		if (!is_json)
			appendStringInfo(buf, "(s.%c).%s", which, q);
		else
			appendStringInfo(buf,
							 "CASE WHEN pg_catalog.json_typeof(s.j OPERATOR(pg_catalog.->) '%c'"
							 " OPERATOR(pg_catalog.->) %s) OPERATOR(pg_catalog.=) 'null'"
							 " THEN 'null' ELSE (s.%c).%s END",
							 which, quote_literal_cstr(col), which, q);
	}
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
 * The writes: w, the rows found (s joined with join_found) and written if
 * write_if; ins, for an update, the rows not in found inserted if
 * insert_if.
 */
static void
append_writes(StringInfo b, RuleRun *run, List *setcols, const char *join_found,
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
		append_values(b, setcols, t->table->json_columns, 'n');
		appendStringInfo(b, ") FROM s%s WHERE ", join_found);
	}
	append_key_match(b, t->table->key, "t.", "(s.o).");
	appendStringInfo(b, " AND %s RETURNING s.ord),", write_if);
	if (run->op == RULE_DELETE)
	{
		appendStringInfoString(b, " ins AS (SELECT WHERE false)");
		return;
	}
	appendStringInfo(b, " ins AS (INSERT INTO %s (", T);
	append_cols(b, t->columns, "");
	appendStringInfoString(b, ") SELECT ");
	append_values(b, t->columns, t->table->json_columns, 'n');
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
 * The run's changes as a JSON array, in a string literal written straight
 * into b: a run may be megabytes, better not copied three times.
 */
static void
append_elements_literal(StringInfo b, RuleRun *run)
{
	bool		escapes = false;
	ListCell   *lc;

	foreach(lc, run->elems)
	{
		RunElem    *e = lfirst(lc);

		escapes |= strchr(e->old, '\\') != NULL || (e->new && strchr(e->new, '\\') != NULL);
	}
	enlargeStringInfo(b, run->bytes + 16);
	appendStringInfoString(b, escapes ? "E'[" : "'[");
	foreach(lc, run->elems)
	{
		RunElem    *e = lfirst(lc);

		/* a missing "n" (a delete) is SQL NULL to json_populate_record */
		appendStringInfoString(b, foreach_current_index(lc) > 0 ? ",{\"o\":" : "{\"o\":");
		append_quoted(b, e->old, escapes);
		if (e->new)
		{
			appendStringInfoString(b, ",\"n\":");
			append_quoted(b, e->new, escapes);
		}
		if (e->commit)
		{
			appendStringInfoString(b, ",\"c\":");
			append_quoted(b, e->commit, escapes);
		}
		appendStringInfoChar(b, '}');
	}
	appendStringInfoString(b, "]'");
}

/*
 * The statement of the run built so far.  Its result: one row per
 * conflict (op, kind, key, source row, target row, resolution, set aside).
 */
static void
append_run_statement(RuleApply *apply, RuleRun *run)
{
	StringInfo	b = &apply->sql;
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
	ListCell   *lc;


	/* when is the target's row newer than the source's change */
	if (apply->resolution != RULE_LAST_WRITE_WINS)
		source_newer = "true";
	else if (apply->timestamp_column)
		source_newer = psprintf("(t.%s IS NULL OR t.%s <= (s.j OPERATOR(pg_catalog.->>) 'c')::pg_catalog.timestamptz)",
								quote_identifier(apply->timestamp_column),
								quote_identifier(apply->timestamp_column));
	else
		/* rows the rule wrote carry its origin: they are the source's */
		source_newer = "(c.roident = o.roident"
			" OR c.timestamp IS NULL OR c.timestamp <= (s.j OPERATOR(pg_catalog.->>) 'c')::pg_catalog.timestamptz)";

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
		append_values(&c, cols, t->table->json_columns, 'o');
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
		appendStringInfo(&k, "%s%s, (s.o).%s", foreach_current_index(lc) > 0 ? ", " : "",
						 quote_literal_cstr(lfirst(lc)), quote_identifier(lfirst(lc)));
	appendStringInfoChar(&k, ')');

	appendStringInfo(b,
					 "WITH s AS MATERIALIZED (SELECT e.ord, e.j,"
					 " pg_catalog.json_populate_record(NULL::%s, e.j OPERATOR(pg_catalog.->) 'n') AS n,"
					 " pg_catalog.json_populate_record(NULL::%s, e.j OPERATOR(pg_catalog.->) 'o') AS o"
					 " FROM pg_catalog.json_array_elements(",
					 T, T);
	append_elements_literal(b, run);
	appendStringInfoString(b, "::pg_catalog.json) WITH ORDINALITY AS e(j, ord)),");
	/*
	 * Source-wins, the old row only a key: an update or delete writes
	 * whatever row it finds, and a row it did not find is the only
	 * conflict (an update then inserts it).  The statement's own write
	 * says which rows it found, with no read and no lock before it.
	 */
	if (apply->resolution == RULE_SOURCE_WINS && !run->full && run->unchanged == NULL &&
		run->op != RULE_INSERT)
	{
		append_writes(b, run, setcols, "", "true", "true", "w");
		appendStringInfo(b,
						 ", c AS (SELECT '%s' AS op, 'row missing' AS kind, %s AS key,"
						 " (s.j OPERATOR(pg_catalog.->) 'n')::pg_catalog.jsonb AS source_row,"
						 " NULL::pg_catalog.jsonb AS target_row, 'source-wins' AS resolution, false AS set_aside"
						 " FROM s WHERE NOT EXISTS (SELECT FROM w WHERE w.ord = s.ord)"
						 " AND (SELECT count(*) FROM ins) >= 0)",
						 op, k.data);
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
			append_values(b, cols, t->table->json_columns, 'n');
			appendStringInfoString(b, ")::text AS same");
		}
		else
			appendStringInfo(b, "CASE WHEN %s THEN pg_catalog.to_jsonb(t.*) END AS row, false AS same",
							 changed);
		appendStringInfo(b, ", %s AS changed, %s AS newer FROM s JOIN %s t ON ", changed,
						 source_newer, T);
		append_key_match(b, key, "t.", "(s.o).");
		if (apply->use_origin)
			appendStringInfoString(b, " LEFT JOIN LATERAL pg_catalog.pg_xact_commit_timestamp_origin(t.xmin) c ON true"
								   " LEFT JOIN LATERAL (SELECT roident FROM pg_catalog.pg_replication_origin"
								   "  WHERE roname OPERATOR(pg_catalog.=) pg_catalog.current_setting('replicator.origin', true)) o ON true");
		appendStringInfoString(b, " FOR UPDATE OF t),");

		append_writes(b, run, setcols, " JOIN cur USING (ord)", apply_existing, insert_missing,
					  "cur");

		/*
		 * The conflicts, and what became of them.  A rule's stream keeps them
		 * on the target, in the batch's own transaction, until they are
		 * recorded here: a crash never loses a change set aside.
		 */
		appendStringInfo(b,
						 ", c AS (SELECT '%s' AS op, CASE WHEN cur.ord IS NULL THEN 'row missing'"
						 "  WHEN '%s' = 'insert' THEN 'key exists' ELSE 'changed on target' END AS kind,"
						 " %s AS key, (s.j OPERATOR(pg_catalog.->) 'n')::pg_catalog.jsonb AS source_row,"
						 " cur.row AS target_row, r.resolution, r.resolution = 'set aside' AS set_aside"
						 " FROM s LEFT JOIN cur USING (ord) LEFT JOIN w USING (ord),"
						 " LATERAL (SELECT CASE WHEN w.ord IS NOT NULL"
						 "  OR (cur.ord IS NULL AND (%s OR '%s' = 'delete') AND NOT (%s)) THEN 'source-wins'"
						 "  WHEN %s THEN 'set aside' ELSE 'target-wins' END AS resolution) r"
						 " WHERE (SELECT count(*) FROM ins) >= 0 AND (%s))",
						 op, op, k.data,
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
	appendStringInfoString(b, ";\n");
	apply->owners = lappend(apply->owners, statement_owner(t, run->op, run->changes));
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

/* the source's commit time of txn, a JSON string */
static char *
commit_json(const RuleTxn *txn)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, timestamptz_to_str(txn->commit_time));
	return buf.data;
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
			apply->run_bytes -= run->bytes;
			run->bytes += strlen(change->new_row) - strlen(k->elem->new);
			apply->run_bytes += run->bytes;
			k->elem->new = pstrdup(change->new_row);
			if (txn)
				k->elem->commit = commit_json(txn);
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
	elem->old = pstrdup(change->old_row ? change->old_row : change->new_row);
	elem->new = change->new_row ? pstrdup(change->new_row) : NULL;
	elem->commit = txn ? commit_json(txn) : NULL;
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
	run->bytes += strlen(elem->old) + (elem->new ? strlen(elem->new) : 0) + 48;
	apply->run_bytes += run->bytes;
	run->changes++;
	apply->changes++;
	MemoryContextSwitchTo(old);

	if (apply->sql.len + apply->run_bytes > RULE_MAX_SQL_BYTES)
		(void) replicator_rule_apply_send(apply, NULL);
}

/* Rows of an initial copy (replicator_rule_row_json): inserts without a txn. */
void
replicator_rule_apply_rows(RuleApply *apply, RuleApplyTable *table, char **rows, int n)
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

static void
each_result(PGresult *res, int i, void *arg)
{
	RuleApply  *apply = arg;
	StatementOwner *owner = i < list_length(apply->sent_owners) ?
		list_nth(apply->sent_owners, i) : NULL;
	ExecStatusType status = PQresultStatus(res);
	MemoryContext old;

	if (status == PGRES_FATAL_ERROR)
	{
		if (apply->error == NULL)
		{
			old = MemoryContextSwitchTo(apply->conflict_cxt);
			apply->error = replicator_remote_error(apply->conn, res);
			apply->error_table = owner ? owner->table : NULL;
			apply->error_transient = replicator_remote_error_transient(res);
			MemoryContextSwitchTo(old);
		}
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

	if (!replicator_rule_apply_wait(apply))
		return false;
	if (apply->sql.len == 0)
		return true;
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
		MemoryContext old = MemoryContextSwitchTo(apply->conflict_cxt);

		apply->error = replicator_remote_error(apply->conn, NULL);
		MemoryContextSwitchTo(old);
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
	if (!ok && apply->error == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(apply->conflict_cxt);

		apply->error = replicator_remote_error(apply->conn, NULL);
		MemoryContextSwitchTo(old);
	}
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

/* The statement that records in the target how far it has applied. */
char *
replicator_rule_progress_sql(RuleApply *apply, XLogRecPtr lsn)
{
	return psprintf("INSERT INTO replicator_apply.progress (source, slot, lsn)"
					" VALUES (%s, %s, '%X/%X')"
					" ON CONFLICT (source, slot) DO UPDATE SET lsn = excluded.lsn,"
					" applied_at = pg_catalog.now();\n",
					quote_literal_cstr(apply->source), quote_literal_cstr(apply->slot),
					LSN_FORMAT_ARGS(lsn));
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
	appendStringInfoString(&apply->sql, replicator_rule_progress_sql(apply, lsn));
	apply->owners = lappend(apply->owners, NULL);
	if (durable)
		appendStringInfoString(&apply->sql,
							   "SELECT pg_catalog.set_config('synchronous_commit', 'on', true);\n");
	else
		appendStringInfo(&apply->sql,
						 "SELECT pg_catalog.set_config('synchronous_commit', 'on', true)"
						 " FROM replicator_apply.conflicts WHERE source = %s AND slot = %s LIMIT 1;\n",
						 quote_literal_cstr(apply->source), quote_literal_cstr(apply->slot));
	apply->owners = lappend(apply->owners, NULL);
	appendStringInfoString(&apply->sql, "COMMIT;\n");
	apply->owners = lappend(apply->owners, NULL);
	appendStringInfoString(&apply->sql,
						   "SELECT pg_catalog.pg_current_wal_insert_lsn() AS replicator_commit_wal,"
						   " pg_catalog.pg_current_wal_flush_lsn();\n");
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
