/*-------------------------------------------------------------------------
 *
 * utility_hook.c
 *	  DDL the workers must hear of at once: DROP DATABASE must not find them
 *	  holding the database open, and DROP EXTENSION, ALTER EXTENSION UPDATE
 *	  or CREATE DATABASE (from a template that has the extension) change
 *	  what should run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "shmem.h"
#include "utility_hook.h"

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
	volatile Oid dropped_db = InvalidOid;

	/*
	 * Stop the workers only for a drop that can go ahead: by the owner (or a
	 * superuser), outside a transaction block.  Anyone else's DROP DATABASE
	 * fails on its own and must not stop streaming on the way.
	 */
	if (IsA(parsetree, DropdbStmt) && !IsTransactionBlock())
	{
		Oid			dboid = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);

		if (OidIsValid(dboid) && dboid != MyDatabaseId &&
			pg_database_ownercheck(dboid, GetUserId()))
		{
			dropped_db = dboid;
			replicator_stop_database_workers(dropped_db);
		}
	}
	else if (drops_this_extension(parsetree) ||
			 (IsA(parsetree, AlterExtensionStmt) &&
			  strcmp(((AlterExtensionStmt *) parsetree)->extname, "replicator") == 0))
	{
		/*
		 * An update can change what runs (the launcher may have skipped a
		 * database whose SQL did not match the library): read it again.
		 */
		replicator_request_rescan_at_commit();
	}

	PG_TRY();
	{
		if (prev_utility_hook)
			prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
							  queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		/* still in use, say: stream again now, not after the pause */
		if (OidIsValid(dropped_db))
			replicator_database_drop_failed(dropped_db);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (OidIsValid(dropped_db))
		replicator_forget_database(dropped_db);
	else if (IsA(parsetree, CreatedbStmt))
	{
		Oid			dboid = get_database_oid(((CreatedbStmt *) parsetree)->dbname, true);

		if (OidIsValid(dboid))
			replicator_request_rescan_of_created(dboid);
	}
}

void
replicator_install_utility_hook(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = replicator_utility;
}
