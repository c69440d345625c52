/*-------------------------------------------------------------------------
 *
 * rule_errors.c
 *	  retry_rule_error() and skip_rule_error(): act on a change that
 *	  conflict_resolution 'error' set aside (replicator.rule_errors).
 *
 * A retry makes the target's row what the source's row is now: the set
 * aside change may have been overtaken by later ones, and applying it as
 * it was would write history back.  The source's current row is upserted
 * (source wins), or the target's row deleted if the source has none.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"

#include "catalog.h"
#include "connection.h"
#include "replicas.h"
#include "rule_apply.h"
#include "rule_catalog.h"
#include "rule_decode.h"
#include "rules.h"

typedef struct SetAside
{
	char	   *rule;
	char	   *table_name;
	char	   *key;
} SetAside;

static SetAside
read_set_aside(int64 id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};
	MemoryContext cxt = CurrentMemoryContext;
	SetAside	e;

	SPI_connect();
	if (replicator_spi_execute_as_owner("SELECT rule, table_name, key::text FROM replicator.rule_errors"
										" WHERE id OPERATOR(pg_catalog.=) $1",
										1, types, values, NULL, true) != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.rule_errors");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("there is no set aside change with id " INT64_FORMAT, id),
				 errhint("SELECT id, rule, table_name, key, reason FROM replicator.rule_errors lists them.")));
	e.rule = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	e.table_name = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	e.key = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3));
	SPI_finish();
	return e;
}

static void
forget(int64 id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};

	SPI_connect();
	if (replicator_spi_execute_as_owner("DELETE FROM replicator.rule_errors WHERE id OPERATOR(pg_catalog.=) $1",
										1, types, values, NULL, false) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from replicator.rule_errors");
	SPI_finish();
}

/* The source's row of that key now, as the decoder renders it; NULL if none. */
static RuleRow *
source_row(RuleTable *table, const char *key)
{
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext old;
	StringInfoData sql;
	ListCell   *lc;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(key)};
	RuleRow    *row = NULL;
	Oid			saved_user;
	int			saved_context;
	Oid			owner;
	int			ret;

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT t.* FROM ONLY %s t,"
					 " pg_catalog.jsonb_populate_record(NULL::%s, $1::pg_catalog.jsonb) k WHERE ",
					 table->qualified, table->qualified);
	foreach(lc, table->key)
		appendStringInfo(&sql, "%st.%s OPERATOR(pg_catalog.=) k.%s",
						 foreach_current_index(lc) > 0 ? " AND " : "",
						 quote_identifier(lfirst(lc)), quote_identifier(lfirst(lc)));
	/* as the table's owner, as the rule's worker reads it (rule_catalog.c) */
	SPI_connect();
	owner = replicator_rule_table_owner(table->relid);
	GetUserIdAndSecContext(&saved_user, &saved_context);
	ret = replicator_rule_spi_as_owner(table->relid, sql.data, 1, types, values, NULL, true);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read %s", table->qualified);
	if (SPI_processed == 1)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum	   *values = palloc(sizeof(Datum) * desc->natts);
		bool	   *isnull = palloc(sizeof(bool) * desc->natts);

		heap_deform_tuple(SPI_tuptable->vals[0], desc, values, isnull);
		SetUserIdAndSecContext(owner, saved_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		old = MemoryContextSwitchTo(cxt);
		row = replicator_rule_row(desc, values, isnull, NULL);
		MemoryContextSwitchTo(old);
		SetUserIdAndSecContext(saved_user, saved_context);
	}
	SPI_finish();
	return row;
}

/* A set aside change's key (a JSON object) as a row of its columns. */
static RuleRow *
key_row(const char *key)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(key)};
	RuleRow    *row = palloc(sizeof(RuleRow));

	SPI_connect();
	if (SPI_execute_with_args("SELECT key, value FROM pg_catalog.jsonb_each_text($1::pg_catalog.jsonb)",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the key of a set aside change");
	row->ncols = (int) SPI_processed;
	row->names = MemoryContextAlloc(cxt, sizeof(char *) * Max(row->ncols, 1));
	row->values = MemoryContextAlloc(cxt, sizeof(char *) * Max(row->ncols, 1));
	row->json = MemoryContextAllocZero(cxt, sizeof(bool) * Max(row->ncols, 1));
	for (int i = 0; i < row->ncols; i++)
	{
		char	   *value = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		row->names[i] = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[i],
															  SPI_tuptable->tupdesc, 1));
		row->values[i] = value ? MemoryContextStrdup(cxt, value) : NULL;
	}
	SPI_finish();
	return row;
}

PG_FUNCTION_INFO_V1(replicator_retry_rule_error);

Datum
replicator_retry_rule_error(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	SetAside	e;
	RuleConfig	config;
	RuleTable  *table;
	RuleApplyTable target;
	RuleChange	change;
	RuleApply	apply;
	Oid			relid;
	PGconn	   *conn;
	PGresult   *res;
	char	   *error = NULL;
	bool		transient;

	replicator_check_admin();
	e = read_set_aside(id);
	replicator_rule_get(e.rule, &config);
	relid = RangeVarGetRelid(makeRangeVarFromNameList(stringToQualifiedNameList(e.table_name)),
							 AccessShareLock, true);
	if (!OidIsValid(relid) || (table = replicator_rule_table(relid)) == NULL || table->key == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s of the set aside change no longer exists on the source, or has no key",
						e.table_name),
				 errhint("SELECT replicator.skip_rule_error(" INT64_FORMAT ") drops the change.", id)));

	memset(&change, 0, sizeof(change));
	change.relid = relid;
	change.new_row = source_row(table, e.key);
	change.op = change.new_row ? RULE_INSERT : RULE_DELETE;
	change.old_row = change.new_row ? NULL : key_row(e.key);

	conn = replicator_remote_connect(config.conninfo, "replicator retry_rule_error",
									 REPLICATOR_SESSION_QUERY,
									 replicator_replica_requires_password(config.changed_by),
									 &error, &transient);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to replica \"%s\", the target of rule \"%s\"",
						config.target, config.name),
				 errdetail("%s", error)));
	PG_TRY();
	{
		memset(&target, 0, sizeof(target));
		target.table = table;
		target.cxt = CurrentMemoryContext;
		res = replicator_remote_exec(conn, "SET search_path = pg_catalog, pg_temp", 0, NULL);
		if ((error = replicator_remote_expect(conn, res, PGRES_COMMAND_OK)) != NULL)
			elog(ERROR, "%s", error);
		error = replicator_rule_target_columns(conn, &target);
		if (error)
			elog(ERROR, "%s", error);

		config.resolution = RULE_SOURCE_WINS;
		config.timestamp_column = NULL;
		replicator_rule_apply_init(&apply, conn, &config, "", "");
		replicator_rule_apply_change(&apply, &target, NULL, &change);
		if (!replicator_rule_apply_send(&apply, "COMMIT;\n"))
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the target of rule \"%s\" did not take the change: %s",
							config.name, apply.error ? apply.error : "connection lost"),
					 errhint("The change stays set aside: fix the target and retry, or skip it.")));
	}
	PG_FINALLY();
	{
		replicator_remote_close(conn);
	}
	PG_END_TRY();
	MemoryContextDelete(apply.cxt);
	MemoryContextDelete(apply.conflict_cxt);
	forget(id);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_skip_rule_error);

Datum
replicator_skip_rule_error(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);

	replicator_check_admin();
	(void) read_set_aside(id);
	forget(id);
	PG_RETURN_VOID();
}
