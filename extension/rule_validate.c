/*-------------------------------------------------------------------------
 *
 * rule_validate.c
 *	  replicator.validate_rule(): the schema compatibility report of a rule,
 *	  one row per issue (rule_compat.c), checked on its target now.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "connection.h"
#include "replicas.h"
#include "rule_catalog.h"
#include "rule_compat.h"
#include "rules.h"

PG_FUNCTION_INFO_V1(replicator_validate_rule);

Datum
replicator_validate_rule(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	RuleConfig	config;
	List	   *tables;
	List	   *missing = NIL;
	List	   *issues = NIL;
	ListCell   *lc;
	char	   *error = NULL;
	PGconn	   *volatile conn = NULL;

	replicator_check_admin();
	replicator_rule_get(name, &config);
	InitMaterializedSRF(fcinfo, 0);
	tables = replicator_rule_resolve(&config, &missing);

	PG_TRY();
	{
		conn = replicator_remote_connect(config.conninfo,
										 psprintf("replicator:rule:%s:validate", config.name),
										 REPLICATOR_SESSION_QUERY,
										 replicator_replica_requires_password(config.changed_by),
										 &error, NULL);
		if (conn == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("validate_rule: could not connect to replica \"%s\", target of rule \"%s\": %s",
							config.target, config.name, error)));
		issues = replicator_rule_compat(conn, &config, tables, missing);
	}
	PG_FINALLY();
	{
		replicator_remote_close(conn);
	}
	PG_END_TRY();

	foreach(lc, issues)
	{
		RuleCompatIssue *issue = lfirst(lc);
		Datum		values[5];
		bool		nulls[5] = {false, issue->column_name == NULL, false, false, issue->detail == NULL};

		values[0] = CStringGetTextDatum(issue->table_name);
		values[1] = issue->column_name ? CStringGetTextDatum(issue->column_name) : (Datum) 0;
		values[2] = CStringGetTextDatum(issue->error ? "error" : "warning");
		values[3] = CStringGetTextDatum(issue->issue);
		values[4] = issue->detail ? CStringGetTextDatum(issue->detail) : (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
