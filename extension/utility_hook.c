/*-------------------------------------------------------------------------
 *
 * utility_hook.c
 *	  DDL the workers must hear of at once: DROP DATABASE must not find them
 *	  holding the database open, and DROP EXTENSION or CREATE DATABASE
 *	  (from a template that has the extension) change what should run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"

#include "replicator.h"
#include "worker.h"

static ProcessUtility_hook_type prev_utility_hook = NULL;

static bool
drops_this_extension(Node *parsetree)
{
	DropStmt   *drop;
	ListCell   *lc;

	if (!IsA(parsetree, DropStmt))
		return false;
	drop = (DropStmt *) parsetree;
	if (drop->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, drop->objects)
		if (strcmp(strVal(lfirst(lc)), "replicator") == 0)
			return true;
	return false;
}

static void
replicator_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	Oid			dropped_db = InvalidOid;

	if (IsA(parsetree, DropdbStmt))
	{
		dropped_db = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);
		if (OidIsValid(dropped_db))
			replicator_stop_database_workers(dropped_db);
	}
	else if (drops_this_extension(parsetree))
		replicator_request_rescan_at_commit();

	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	if (OidIsValid(dropped_db))
		replicator_forget_database(dropped_db);
	else if (IsA(parsetree, CreatedbStmt))
	{
		/* CREATE DATABASE runs outside a transaction block: signal now */
		Oid			dboid = get_database_oid(((CreatedbStmt *) parsetree)->dbname, true);

		if (OidIsValid(dboid))
			replicator_request_rescan(dboid);
	}
}

void
replicator_install_utility_hook(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = replicator_utility;
}
