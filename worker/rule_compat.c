/*-------------------------------------------------------------------------
 *
 * rule_compat.c
 *	  The schema compatibility report of a replication rule: each table the
 *	  rule covers, compared with the table of the same qualified name on
 *	  the target.
 *
 * The target's catalog is read in two queries for every table at once
 * (columns, then unique indexes), named by schema and table as text[]
 * parameters.  Types are compared by name: the same type is fine but for
 * its modifier (varchar(50) for varchar(200), numeric(6,2) for
 * numeric(10,2), ...); a known widening (int4 into int8, date into
 * timestamp, anything into text) is fine; a known narrowing (int8 into
 * int4, text into varchar(n), ...) is checked against the source's data
 * now: an error names the rows that do not fit, a warning says that every
 * row fits today.  Any other pair of types is an error.
 *
 * The source's data is read through SPI as the table's owner, restricted,
 * with search_path pg_catalog, every function and operator named by its
 * schema: the callers are a superuser worker and admins, and no operator
 * planted on a search_path may run for them, nor any code the table's
 * owner chose (a cast of a type of theirs, run to render a value) run as
 * anyone but that owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "connection.h"
#include "rule_compat.h"

/* rows named in a "does not fit" detail, and the length of a key value */
#define SAMPLE_ROWS		5
#define SAMPLE_VALUE_LEN 40

/* A column's type, resolved through a domain to its base type. */
typedef struct TypeDesc
{
	char	   *nsp;			/* the base type's schema */
	char	   *name;			/* the base type's name */
	int32		typmod;			/* the base type's modifier */
	char		category;
	char	   *display;		/* the column's type as format_type shows it */
} TypeDesc;

typedef struct SourceColumn
{
	char	   *name;
	TypeDesc	type;
	bool		notnull;
	bool		generated;
} SourceColumn;

typedef struct TargetColumn
{
	char	   *name;
	TypeDesc	type;
	bool		notnull;
	bool		hasdef;
	bool		generated;
	bool		identity;
} TargetColumn;

typedef struct TargetIndex
{
	char	   *name;
	bool		partial;		/* a predicate or an expression */
	List	   *columns;		/* char * */
} TargetIndex;

typedef struct TargetTable
{
	bool		found;
	char		relkind;
	List	   *columns;		/* TargetColumn * */
	List	   *indexes;		/* TargetIndex *: unique ones */
} TargetTable;

/* How a source type's values go into a target type. */
typedef enum FitKind
{
	FIT_OK,						/* always */
	FIT_NEVER,					/* an error */
	FIT_WARN,					/* always, but changed: a warning */
	FIT_CHECK					/* depends on the data: check it */
} FitKind;

typedef struct Fit
{
	FitKind		kind;
	char	   *issue;			/* FIT_WARN, FIT_CHECK */
	char	   *detail;			/* FIT_WARN; FIT_CHECK: the remedy */
	char	   *cond;			/* FIT_CHECK: true for a row that does not fit */
} Fit;

/* The families of built-in types the comparisons know. */
typedef enum TypeFamily
{
	TF_OTHER,
	TF_INT2,
	TF_INT4,
	TF_INT8,
	TF_NUMERIC,
	TF_FLOAT4,
	TF_FLOAT8,
	TF_STRING,
	TF_DATE,
	TF_TIMESTAMP,
	TF_TIMESTAMPTZ,
	TF_JSON,
	TF_JSONB
} TypeFamily;

typedef struct CompatState
{
	const RuleConfig *config;
	List	   *issues;
} CompatState;

static void
add_issue(CompatState *st, const char *table, const char *column, bool error,
		  const char *issue, const char *detail)
{
	RuleCompatIssue *i = palloc0(sizeof(RuleCompatIssue));

	i->table_name = pstrdup(table);
	i->column_name = column ? pstrdup(column) : NULL;
	i->error = error;
	i->issue = pstrdup(issue);
	i->detail = detail ? pstrdup(detail) : NULL;
	st->issues = lappend(st->issues, i);
}

static TypeFamily
type_family(const TypeDesc *t)
{
	static const struct
	{
		const char *name;
		TypeFamily	family;
	}			known[] =
	{
		{"int2", TF_INT2},
		{"int4", TF_INT4},
		{"int8", TF_INT8},
		{"numeric", TF_NUMERIC},
		{"float4", TF_FLOAT4},
		{"float8", TF_FLOAT8},
		{"text", TF_STRING},
		{"varchar", TF_STRING},
		{"bpchar", TF_STRING},
		{"name", TF_STRING},
		{"date", TF_DATE},
		{"timestamp", TF_TIMESTAMP},
		{"timestamptz", TF_TIMESTAMPTZ},
		{"json", TF_JSON},
		{"jsonb", TF_JSONB},
	};

	if (strcmp(t->nsp, "pg_catalog") != 0)
		return TF_OTHER;
	for (size_t i = 0; i < lengthof(known); i++)
		if (strcmp(t->name, known[i].name) == 0)
			return known[i].family;
	return TF_OTHER;
}

static bool
is_int(TypeFamily f)
{
	return f == TF_INT2 || f == TF_INT4 || f == TF_INT8;
}

/* The most characters a string type takes, -1 for no limit. */
static int
string_limit(const TypeDesc *t)
{
	if (strcmp(t->name, "name") == 0)
		return NAMEDATALEN - 1;
	if ((strcmp(t->name, "varchar") == 0 || strcmp(t->name, "bpchar") == 0) &&
		t->typmod >= VARHDRSZ)
		return t->typmod - VARHDRSZ;
	return -1;
}

/* numeric(p, s) of a typmod; false for unconstrained numeric */
static bool
numeric_typmod(int32 typmod, int *precision, int *scale)
{
	if (typmod < VARHDRSZ)
		return false;
	*precision = ((typmod - VARHDRSZ) >> 16) & 0xffff;
	/* an 11-bit signed scale since PostgreSQL 15 */
	*scale = (((typmod - VARHDRSZ) & 0x7ff) ^ 1024) - 1024;
	return true;
}

/* fractional digits of a time type, 6 if unspecified */
static int
time_precision(const TypeDesc *t)
{
	return t->typmod >= 0 ? t->typmod : 6;
}

static Fit
fit(FitKind kind)
{
	Fit			f;

	memset(&f, 0, sizeof(f));
	f.kind = kind;
	return f;
}

/* A narrowing: the rows for which cond is true do not fit. */
static Fit
fit_check(const TypeDesc *s, const TypeDesc *t, char *cond, const char *qualified,
		  const char *col)
{
	Fit			f = fit(FIT_CHECK);

	f.issue = psprintf("target type %s is narrower than source type %s", t->display, s->display);
	f.detail = psprintf("Widen the target column: ALTER TABLE %s ALTER COLUMN %s TYPE %s;",
						qualified, col, s->display);
	f.cond = cond;
	return f;
}

static Fit
fit_warn(char *issue, char *detail)
{
	Fit			f = fit(FIT_WARN);

	f.issue = issue;
	f.detail = detail;
	return f;
}

/* col::numeric, in the data checks */
static char *
as_numeric(const char *col)
{
	return psprintf("%s::pg_catalog.numeric", col);
}

static Fit
fit_int_range(const TypeDesc *s, const TypeDesc *t, TypeFamily ft, const char *qualified,
			  const char *col)
{
	const char *lo = ft == TF_INT2 ? "-32768" : ft == TF_INT4 ? "-2147483648" : "-9223372036854775808";
	const char *hi = ft == TF_INT2 ? "32767" : ft == TF_INT4 ? "2147483647" : "9223372036854775807";
	char	   *n = as_numeric(col);

	return fit_check(s, t,
					 psprintf("(%s OPERATOR(pg_catalog.<>) pg_catalog.trunc(%s)"
							  " OR %s OPERATOR(pg_catalog.<) '%s'::pg_catalog.numeric"
							  " OR %s OPERATOR(pg_catalog.>) '%s'::pg_catalog.numeric)",
							  n, n, n, lo, n, hi),
					 qualified, col);
}

static Fit
fit_numeric(const TypeDesc *s, TypeFamily fs, const TypeDesc *t, const char *qualified,
			const char *col)
{
	int			p,
				sc,
				p0,
				s0;
	char	   *n = as_numeric(col);
	char	   *r;

	if (!numeric_typmod(t->typmod, &p, &sc))
		return fit(FIT_OK);
	if (is_int(fs) && sc >= 0 &&
		p - sc >= (fs == TF_INT2 ? 5 : fs == TF_INT4 ? 10 : 19))
		return fit(FIT_OK);
	if (fs == TF_NUMERIC && numeric_typmod(s->typmod, &p0, &s0) &&
		s0 <= sc && p0 - s0 <= p - sc)
		return fit(FIT_OK);
	/* rounded to the target's scale, and then too many integer digits */
	r = psprintf("pg_catalog.round(%s, %d)", n, sc);
	return fit_check(s, t,
					 psprintf("(%s OPERATOR(pg_catalog.<>) 'NaN'::pg_catalog.numeric"
							  " AND (%s OPERATOR(pg_catalog.<>) %s"
							  " OR pg_catalog.abs(%s) OPERATOR(pg_catalog.>=) '1e%d'::pg_catalog.numeric))",
							  n, n, r, r, p - sc),
					 qualified, col);
}

static Fit
fit_abs_above(const TypeDesc *s, const TypeDesc *t, const char *limit, const char *qualified,
			  const char *col)
{
	return fit_check(s, t,
					 psprintf("pg_catalog.abs(%s) OPERATOR(pg_catalog.>) '%s'::pg_catalog.numeric",
							  as_numeric(col), limit),
					 qualified, col);
}

static Fit
fit_length(const TypeDesc *s, const TypeDesc *t, int limit, const char *qualified,
		   const char *col)
{
	return fit_check(s, t,
					 psprintf("pg_catalog.length(%s::pg_catalog.text) OPERATOR(pg_catalog.>) %d",
							  col, limit),
					 qualified, col);
}

/*
 * How values of source type s go into target type t.  col: the column,
 * quoted; qualified: the target table, for the remedies.
 */
static Fit
type_fit(const TypeDesc *s, const TypeDesc *t, const char *qualified, const char *col)
{
	TypeFamily	fs = type_family(s);
	TypeFamily	ft = type_family(t);
	int			sl,
				tl;

	if (strcmp(s->nsp, t->nsp) == 0 && strcmp(s->name, t->name) == 0)
	{
		/* the same type: its modifier may narrow it */
		if (s->typmod == t->typmod)
			return fit(FIT_OK);
		if (ft == TF_STRING)
		{
			sl = string_limit(s);
			tl = string_limit(t);
			if (tl >= 0 && (sl < 0 || sl > tl))
				return fit_length(s, t, tl, qualified, col);
			return fit(FIT_OK);
		}
		if (ft == TF_NUMERIC)
			return fit_numeric(s, fs, t, qualified, col);
		if (strcmp(t->nsp, "pg_catalog") == 0 &&
			(ft == TF_TIMESTAMP || ft == TF_TIMESTAMPTZ ||
			 strcmp(t->name, "time") == 0 || strcmp(t->name, "timetz") == 0))
		{
			if (time_precision(t) < time_precision(s))
				return fit_warn(psprintf("target type %s rounds the fractional seconds of source type %s",
										 t->display, s->display),
								psprintf("Values are rounded to %d fractional digits. Keep every digit: ALTER TABLE %s ALTER COLUMN %s TYPE %s;",
										 time_precision(t), qualified, col, s->display));
			return fit(FIT_OK);
		}
		if (t->category == TYPCATEGORY_ARRAY && t->typmod >= 0)
			return fit_warn(psprintf("target type %s constrains the elements of source type %s",
									 t->display, s->display),
							psprintf("The elements of the arrays are not checked against it. Use the source's type: ALTER TABLE %s ALTER COLUMN %s TYPE %s;",
									 qualified, col, s->display));
		return fit(FIT_OK);
	}

	switch (ft)
	{
		case TF_INT2:
		case TF_INT4:
		case TF_INT8:
			if (is_int(fs) && fs <= ft)
				return fit(FIT_OK);
			if (is_int(fs) || fs == TF_NUMERIC || fs == TF_FLOAT4 || fs == TF_FLOAT8)
				return fit_int_range(s, t, ft, qualified, col);
			break;
		case TF_NUMERIC:
			if (is_int(fs) || fs == TF_NUMERIC || fs == TF_FLOAT4 || fs == TF_FLOAT8)
				return fit_numeric(s, fs, t, qualified, col);
			break;
		case TF_FLOAT8:
		case TF_FLOAT4:
			if (fs == TF_INT2 || (ft == TF_FLOAT8 && (fs == TF_INT4 || fs == TF_FLOAT4)))
				return fit(FIT_OK);
			/* integers are exact up to 2^53 in a float8, 2^24 in a float4 */
			if (is_int(fs))
				return fit_abs_above(s, t, ft == TF_FLOAT8 ? "9007199254740992" : "16777216",
									 qualified, col);
			if (fs == TF_NUMERIC || fs == TF_FLOAT4 || fs == TF_FLOAT8)
				return fit_warn(psprintf("target type %s may round values of source type %s",
										 t->display, s->display),
								psprintf("A %s keeps about %d significant digits. Keep every value exactly: ALTER TABLE %s ALTER COLUMN %s TYPE %s;",
										 t->display, ft == TF_FLOAT8 ? 15 : 6, qualified, col, s->display));
			break;
		case TF_STRING:
			tl = string_limit(t);
			if (fs == TF_STRING)
			{
				sl = string_limit(s);
				if (tl >= 0 && (sl < 0 || sl > tl))
					return fit_length(s, t, tl, qualified, col);
				return fit(FIT_OK);
			}
			/* any value has a text form */
			if (tl >= 0)
				return fit_length(s, t, tl, qualified, col);
			return fit_warn(psprintf("target type %s stores source type %s as text",
									 t->display, s->display),
							psprintf("Values are copied in their text form; the target compares and sorts them as text. Keep the type: ALTER TABLE %s ALTER COLUMN %s TYPE %s;",
									 qualified, col, s->display));
		case TF_TIMESTAMP:
		case TF_TIMESTAMPTZ:
			if (fs == TF_DATE)
				return fit(FIT_OK);
			if (fs == TF_TIMESTAMP || fs == TF_TIMESTAMPTZ)
				return fit_warn(psprintf("target type %s differs from source type %s in time zone handling",
										 t->display, s->display),
								psprintf("Values are converted through the TimeZone setting of the target's session and may shift. Use the same type on both sides: ALTER TABLE %s ALTER COLUMN %s TYPE %s;",
										 qualified, col, s->display));
			break;
		case TF_JSON:
			if (fs == TF_JSONB)
				return fit(FIT_OK);
			break;
		case TF_JSONB:
			if (fs == TF_JSON)
				return fit_warn(psprintf("target type %s normalizes values of source type %s",
										 t->display, s->display),
								psprintf("Whitespace, key order and duplicate keys of the json values are not kept. Keep the text: ALTER TABLE %s ALTER COLUMN %s TYPE %s;",
										 qualified, col, s->display));
			break;
		default:
			break;
	}
	return fit(FIT_NEVER);
}


/*
 * The rows of table for which cond is true: their number, and up to
 * SAMPLE_ROWS of their keys (*sample: "id=3, id=17 ... (12 rows)"), in
 * the caller's memory context.
 */
static int64
misfits(const RuleTable *table, const char *cond, char **sample)
{
	MemoryContext caller = CurrentMemoryContext;
	StringInfoData sql;
	StringInfoData keys;
	StringInfoData out;
	ListCell   *lc;
	int64		count = 0;
	int			ret;

	initStringInfo(&keys);
	foreach(lc, table->key)
		appendStringInfo(&keys, "%s%s", keys.len > 0 ? ", " : "", quote_identifier(lfirst(lc)));
	if (table->key == NIL)
		appendStringInfoString(&keys, "ctid");
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT pg_catalog.count(*) OVER (), %s FROM %s WHERE %s ORDER BY %s LIMIT %d",
					 keys.data, table->qualified, cond, keys.data, SAMPLE_ROWS);

	initStringInfo(&out);
	SPI_connect();
	ret = replicator_rule_spi_as_owner(table->relid, sql.data, 0, NULL, NULL, NULL, true);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not check the data of %s: %s", table->qualified,
			 SPI_result_code_string(ret));
	if (SPI_processed > 0)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], desc, 1, &isnull));
		for (uint64 row = 0; row < SPI_processed; row++)
		{
			if (row > 0)
				appendStringInfoString(&out, ", ");
			if (desc->natts > 2)
				appendStringInfoChar(&out, '(');
			for (int c = 2; c <= desc->natts; c++)
			{
				char	   *value = SPI_getvalue(SPI_tuptable->vals[row], desc, c);

				if (value == NULL)
					value = "NULL";
				else if (strlen(value) > SAMPLE_VALUE_LEN)
					value = psprintf("%.*s...", SAMPLE_VALUE_LEN, value);
				appendStringInfo(&out, "%s%s=%s", c > 2 ? ", " : "", SPI_fname(desc, c), value);
			}
			if (desc->natts > 2)
				appendStringInfoChar(&out, ')');
		}
		if (count > (int64) SPI_processed)
			appendStringInfoString(&out, " ...");
		appendStringInfo(&out, " (" INT64_FORMAT " row%s)", count, count == 1 ? "" : "s");
	}
	*sample = MemoryContextStrdup(caller, out.data);
	SPI_finish();
	return count;
}

/* Report a data-dependent finding: an error if rows do not fit now. */
static void
check_data(CompatState *st, const RuleTable *table, const char *column, const Fit *f,
		   const char *misfit_what, const char *fits_now)
{
	char	   *sample;
	int64		count = misfits(table, f->cond, &sample);

	if (count > 0)
		add_issue(st, table->qualified, column, true, f->issue,
				  psprintf("%s: %s. %s", misfit_what, sample, f->detail));
	else
		add_issue(st, table->qualified, column, false, f->issue,
				  psprintf("%s %s", fits_now, f->detail));
}

static void
source_type(Oid typid, int32 typmod, TypeDesc *t)
{
	HeapTuple	tup;
	Form_pg_type typ;
	Oid			base;
	int32		base_typmod = typmod;

	t->display = format_type_with_typemod(typid, typmod);
	base = getBaseTypeAndTypmod(typid, &base_typmod);
	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(base));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", base);
	typ = (Form_pg_type) GETSTRUCT(tup);
	t->name = pstrdup(NameStr(typ->typname));
	t->nsp = get_namespace_name(typ->typnamespace);
	t->category = typ->typcategory;
	t->typmod = base_typmod;
	ReleaseSysCache(tup);
}

/* The columns of a source table, generated ones too; NIL if it is gone. */
static List *
source_columns(const RuleTable *table, List **uniques, bool *found)
{
	Relation	rel = try_relation_open(table->relid, AccessShareLock);
	TupleDesc	desc;
	List	   *columns = NIL;
	List	   *indexes;
	ListCell   *lc;

	*uniques = NIL;
	*found = rel != NULL;
	if (rel == NULL)
		return NIL;
	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		SourceColumn *c;

		if (att->attisdropped)
			continue;
		c = palloc0(sizeof(SourceColumn));
		c->name = pstrdup(NameStr(att->attname));
		source_type(att->atttypid, att->atttypmod, &c->type);
		c->notnull = att->attnotnull;
		c->generated = att->attgenerated != '\0';
		columns = lappend(columns, c);
	}

	/* column sets unique on the source: whole-table, on plain columns */
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index index;
		List	   *cols = NIL;
		bool		plain = true;

		if (!HeapTupleIsValid(tup))
			continue;
		index = (Form_pg_index) GETSTRUCT(tup);
		if (index->indisunique &&
			heap_attisnull(tup, Anum_pg_index_indexprs, NULL) &&
			heap_attisnull(tup, Anum_pg_index_indpred, NULL))
		{
			for (int k = 0; k < index->indnkeyatts; k++)
			{
				AttrNumber	attnum = index->indkey.values[k];

				if (attnum <= 0)
					plain = false;
				else
					cols = lappend(cols, pstrdup(NameStr(TupleDescAttr(desc, attnum - 1)->attname)));
			}
			if (plain)
				*uniques = lappend(*uniques, cols);
		}
		ReleaseSysCache(tup);
	}
	list_free(indexes);
	/* keep the lock: the data checks read the same table */
	relation_close(rel, NoLock);
	return columns;
}

static bool
in_names(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
		if (strcmp(lfirst(lc), name) == 0)
			return true;
	return false;
}

static SourceColumn *
find_source_column(List *columns, const char *name)
{
	ListCell   *lc;

	foreach(lc, columns)
		if (strcmp(((SourceColumn *) lfirst(lc))->name, name) == 0)
			return lfirst(lc);
	return NULL;
}

static TargetColumn *
find_target_column(List *columns, const char *name)
{
	ListCell   *lc;

	foreach(lc, columns)
		if (strcmp(((TargetColumn *) lfirst(lc))->name, name) == 0)
			return lfirst(lc);
	return NULL;
}

/* {"a","b"}: a text[] parameter */
static char *
text_array_literal(List *items)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	foreach(lc, items)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfoChar(&buf, '"');
		for (const char *p = lfirst(lc); *p; p++)
		{
			if (*p == '"' || *p == '\\')
				appendStringInfoChar(&buf, '\\');
			appendStringInfoChar(&buf, *p);
		}
		appendStringInfoChar(&buf, '"');
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* The rows of a query on the target, or an error naming the target. */
static char **
remote_rows(PGconn *conn, const RuleConfig *config, const char *sql, const char *const *params,
			int *nrows)
{
	PGresult   *res = replicator_remote_exec(conn, sql, 2, params);

	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		char	   *error = replicator_remote_error(conn, res);

		PQclear(res);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not read the tables of replica \"%s\", target of rule \"%s\": %s",
						config->target, config->name, error)));
	}
	*nrows = PQntuples(res);
	return replicator_result_cells(res, NULL);
}

#define TARGET_TABLES \
	" FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[]))" \
	"  WITH ORDINALITY AS t(nsp, rel, i)" \
	" JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) t.nsp::pg_catalog.name" \
	" JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid" \
	"  AND c.relname OPERATOR(pg_catalog.=) t.rel::pg_catalog.name"

static const char *target_columns_sql =
"SELECT t.i, c.relkind, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),"
" bn.nspname, b.typname, b.typcategory,"
" CASE WHEN ty.typtype OPERATOR(pg_catalog.=) 'd' THEN ty.typtypmod ELSE a.atttypmod END,"
" a.attnotnull, a.atthasdef, a.attgenerated OPERATOR(pg_catalog.<>) '', a.attidentity OPERATOR(pg_catalog.<>) ''"
TARGET_TABLES
" LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid"
"  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped"
" LEFT JOIN pg_catalog.pg_type ty ON ty.oid OPERATOR(pg_catalog.=) a.atttypid"
" LEFT JOIN pg_catalog.pg_type b ON b.oid OPERATOR(pg_catalog.=)"
"  CASE WHEN ty.typtype OPERATOR(pg_catalog.=) 'd' THEN ty.typbasetype ELSE ty.oid END"
" LEFT JOIN pg_catalog.pg_namespace bn ON bn.oid OPERATOR(pg_catalog.=) b.typnamespace"
" ORDER BY t.i, a.attnum";

static const char *target_indexes_sql =
"SELECT t.i, ic.relname, i.indpred IS NOT NULL OR i.indexprs IS NOT NULL, a.attname"
TARGET_TABLES
" JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisunique"
" JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid"
" CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(attnum, n)"
" LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid"
"  AND a.attnum OPERATOR(pg_catalog.=) k.attnum"
" WHERE k.n OPERATOR(pg_catalog.<=) i.indnkeyatts"
" ORDER BY t.i, ic.relname, k.n";

/* The target's side of every table, in the order of tables. */
static TargetTable *
read_target(PGconn *conn, const RuleConfig *config, List *tables)
{
	int			ntables = list_length(tables);
	TargetTable *targets = palloc0(sizeof(TargetTable) * Max(1, ntables));
	List	   *nsps = NIL;
	List	   *rels = NIL;
	const char *params[2];
	char	  **cells;
	int			nrows;
	ListCell   *lc;
	TargetIndex *index = NULL;
	int			index_table = 0;

	if (ntables == 0)
		return targets;
	foreach(lc, tables)
	{
		RuleTable  *t = lfirst(lc);

		nsps = lappend(nsps, t->nspname);
		rels = lappend(rels, t->relname);
	}
	params[0] = text_array_literal(nsps);
	params[1] = text_array_literal(rels);

	cells = remote_rows(conn, config, target_columns_sql, params, &nrows);
	for (int r = 0; r < nrows; r++)
	{
		char	  **row = cells + r * 12;
		int			i = atoi(row[0]) - 1;
		TargetColumn *c;

		if (i < 0 || i >= ntables)
			continue;
		targets[i].found = true;
		targets[i].relkind = row[1][0];
		if (row[2] == NULL)
			continue;			/* a table without columns */
		c = palloc0(sizeof(TargetColumn));
		c->name = row[2];
		c->type.display = row[3];
		c->type.nsp = row[4] ? row[4] : "";
		c->type.name = row[5] ? row[5] : "";
		c->type.category = row[6] ? row[6][0] : '\0';
		c->type.typmod = row[7] ? atoi(row[7]) : -1;
		c->notnull = row[8][0] == 't';
		c->hasdef = row[9][0] == 't';
		c->generated = row[10][0] == 't';
		c->identity = row[11][0] == 't';
		targets[i].columns = lappend(targets[i].columns, c);
	}

	cells = remote_rows(conn, config, target_indexes_sql, params, &nrows);
	for (int r = 0; r < nrows; r++)
	{
		char	  **row = cells + r * 4;
		int			i = atoi(row[0]) - 1;

		if (i < 0 || i >= ntables)
			continue;
		if (index == NULL || index_table != i || strcmp(index->name, row[1]) != 0)
		{
			index = palloc0(sizeof(TargetIndex));
			index->name = row[1];
			index->partial = row[2][0] == 't';
			index_table = i;
			targets[i].indexes = lappend(targets[i].indexes, index);
		}
		if (row[3] == NULL)
			index->partial = true;	/* an expression */
		else
			index->columns = lappend(index->columns, row[3]);
	}
	return targets;
}

/* Is every row unique on index's columns, given the source's unique sets? */
static bool
unique_on_source(List *uniques, const TargetIndex *index)
{
	ListCell   *lc;

	if (index->partial)
		return false;
	foreach(lc, uniques)
	{
		List	   *set = lfirst(lc);
		ListCell   *c;
		bool		covered = true;

		foreach(c, set)
			covered &= in_names(index->columns, lfirst(c));
		if (covered)
			return true;
	}
	return false;
}

static char *
name_list(List *names)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, names)
		appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", quote_identifier(lfirst(lc)));
	return buf.data;
}

static void
check_table(CompatState *st, const RuleTable *table, TargetTable *target)
{
	const RuleConfig *config = st->config;
	const char *q = table->qualified;
	const char *ts_column = config->resolution == RULE_LAST_WRITE_WINS ? config->timestamp_column : NULL;
	List	   *uniques;
	bool		found;
	List	   *columns = source_columns(table, &uniques, &found);
	ListCell   *lc;

	if (!found)
	{
		add_issue(st, q, NULL, true, "table missing on the source",
				  "The table was dropped while the rule was being checked. Check the rule again.");
		return;
	}

	if (table->key == NIL)
		add_issue(st, q, NULL, true, "no primary key or replica identity index",
				  psprintf("%s Add one on the source: ALTER TABLE %s ADD PRIMARY KEY (...); or ALTER TABLE %s REPLICA IDENTITY USING INDEX <a unique index of NOT NULL columns>;",
						   config->cdc ?
						   "A cdc rule finds the target row of each change by its key." :
						   "A snapshot rule matches the rows of source and target by their key to find what changed.",
						   q, q));

	if (ts_column != NULL && find_source_column(columns, ts_column) == NULL)
		add_issue(st, q, ts_column, true, "timestamp_column missing on the source",
				  psprintf("last-write-wins compares this column of both rows. Add it to the source table (ALTER TABLE %s ADD COLUMN %s timestamptz;), or change the rule's timestamp_column.",
						   q, quote_identifier(ts_column)));

	if (!target->found)
	{
		add_issue(st, q, NULL, true, "table missing on the target",
				  psprintf("Create it on the target with the same name and the source's columns: pg_dump --schema-only --table=%s gives its definition.",
						   q));
		return;
	}
	if (target->relkind != RELKIND_RELATION && target->relkind != RELKIND_PARTITIONED_TABLE)
	{
		add_issue(st, q, NULL, true, "target is not a table",
				  psprintf("The target's %s is a %s. The rule writes into an ordinary or partitioned table of that name.",
						   q, target->relkind == RELKIND_VIEW ? "view" :
						   target->relkind == RELKIND_FOREIGN_TABLE ? "foreign table" :
						   target->relkind == RELKIND_MATVIEW ? "materialized view" : "relation other than a table"));
		return;
	}

	if (ts_column != NULL && find_source_column(columns, ts_column) != NULL &&
		find_target_column(target->columns, ts_column) == NULL)
		add_issue(st, q, ts_column, true, "timestamp_column missing on the target",
				  psprintf("last-write-wins compares this column of both rows. Add it on the target: ALTER TABLE %s ADD COLUMN %s %s;",
						   q, quote_identifier(ts_column),
						   find_source_column(columns, ts_column)->type.display));

	foreach(lc, columns)
	{
		SourceColumn *s = lfirst(lc);
		TargetColumn *t = find_target_column(target->columns, s->name);
		const char *col = quote_identifier(s->name);
		Fit			f;

		if (s->generated)
		{
			/* not copied; a NOT NULL target column without default: below */
			if (t != NULL && !t->generated &&
				!(t->notnull && !t->hasdef && !t->identity))
				add_issue(st, q, s->name, false, "source column is generated and not copied",
						  psprintf("The target's plain column keeps its default instead of the source's value. Make it generated on the target with the source's expression (ALTER TABLE %s DROP COLUMN %s, ADD COLUMN %s %s GENERATED ALWAYS AS (...) STORED;), or drop it.",
								   q, col, col, s->type.display));
			continue;
		}
		if (t == NULL)
		{
			if (ts_column == NULL || strcmp(s->name, ts_column) != 0)
				add_issue(st, q, s->name, true, "column missing on the target",
						  psprintf("The rule copies every column of the source. Add it on the target: ALTER TABLE %s ADD COLUMN %s %s;",
								   q, col, s->type.display));
			continue;
		}
		if (t->generated)
		{
			add_issue(st, q, s->name, true, "target column is generated",
					  psprintf("The rule writes every column of the source, and the target refuses values for a generated column. Make it a plain column on the target (ALTER TABLE %s ALTER COLUMN %s DROP EXPRESSION;), or generated on the source too.",
							   q, col));
			continue;
		}

		f = type_fit(&s->type, &t->type, q, col);
		switch (f.kind)
		{
			case FIT_OK:
				break;
			case FIT_NEVER:
				add_issue(st, q, s->name, true,
						  psprintf("target type %s cannot take source type %s",
								   t->type.display, s->type.display),
						  psprintf("Values of %s do not convert to %s. Change the target column: ALTER TABLE %s ALTER COLUMN %s TYPE %s;",
								   s->type.display, t->type.display, q, col, s->type.display));
				break;
			case FIT_WARN:
				add_issue(st, q, s->name, false, f.issue, f.detail);
				break;
			case FIT_CHECK:
				check_data(st, table, s->name, &f, "Rows that do not fit",
						   "Every current value fits; one that does not will stop the rule.");
				break;
		}

		if (t->notnull && !s->notnull)
		{
			f = fit(FIT_CHECK);
			f.issue = "target column is NOT NULL, source column allows NULL";
			f.detail = psprintf("Make the source column NOT NULL, or drop the target's constraint: ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL;",
								q, col);
			f.cond = psprintf("%s IS NULL", col);
			check_data(st, table, s->name, &f, "Rows with NULL",
					   "No row is NULL there now; one that is will stop the rule.");
		}
	}

	/* target columns the rule does not write */
	foreach(lc, target->columns)
	{
		TargetColumn *t = lfirst(lc);
		SourceColumn *s = find_source_column(columns, t->name);

		if ((s == NULL || s->generated) &&
			t->notnull && !t->hasdef && !t->identity && !t->generated)
			add_issue(st, q, t->name, true,
					  s == NULL ? "target column is NOT NULL without a default, and the source has no such column" :
					  "target column is NOT NULL without a default, and the source's column is generated (not copied)",
					  psprintf("Each row the rule inserts leaves it NULL. Give it a default (ALTER TABLE %s ALTER COLUMN %s SET DEFAULT ...;), drop NOT NULL, or add the column to the source.",
							   q, quote_identifier(t->name)));
	}

	foreach(lc, target->indexes)
	{
		TargetIndex *index = lfirst(lc);

		if (unique_on_source(uniques, index))
			continue;
		add_issue(st, q, list_length(index->columns) == 1 && !index->partial ?
				  (char *) linitial(index->columns) : NULL,
				  false,
				  psprintf("unique index %s only on the target", quote_identifier(index->name)),
				  psprintf("%s: rows the source holds may collide there, and the rule stops at the first that does. Add the same unique constraint on the source, or drop the index on the target.",
						   index->partial ? "A partial or expression unique index of the target" :
						   psprintf("The source has no unique index within (%s)", name_list(index->columns))));
	}
}

static int
issue_cmp(const ListCell *a, const ListCell *b)
{
	const RuleCompatIssue *x = lfirst(a);
	const RuleCompatIssue *y = lfirst(b);
	int			c = strcmp(x->table_name, y->table_name);

	if (c != 0)
		return c;
	if ((x->column_name == NULL) != (y->column_name == NULL))
		return x->column_name == NULL ? -1 : 1;
	if (x->column_name != NULL && (c = strcmp(x->column_name, y->column_name)) != 0)
		return c;
	if (x->error != y->error)
		return x->error ? -1 : 1;
	return strcmp(x->issue, y->issue);
}

List *
replicator_rule_compat(PGconn *conn, const RuleConfig *config, List *tables, List *missing)
{
	CompatState st;
	TargetTable *targets;
	ListCell   *lc;

	st.config = config;
	st.issues = NIL;
	foreach(lc, missing)
		add_issue(&st, lfirst(lc), NULL, true, "table missing on the source",
				  psprintf("Rule \"%s\" names this table, and this database no longer has it. Create it again, or drop the rule and add it with the tables it should copy.",
						   config->name));

	targets = read_target(conn, config, tables);
	foreach(lc, tables)
	{
		CHECK_FOR_INTERRUPTS();
		check_table(&st, lfirst(lc), &targets[foreach_current_index(lc)]);
	}
	list_sort(st.issues, issue_cmp);
	return st.issues;
}

bool
replicator_rule_compat_has_errors(List *issues)
{
	ListCell   *lc;

	foreach(lc, issues)
		if (((RuleCompatIssue *) lfirst(lc))->error)
			return true;
	return false;
}
