/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Where the event source and the replica catalog are, and how the
 *	  workers and the SQL functions read them safely: as the extension's
 *	  owner, with the library's own SQL version, deciding the password rule.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/snapmgr.h"

#include "access/xact.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"

#include "catalog.h"

/*
 * What pg_extension says of replicator in this database: false if it is not
 * installed, else its oid, schema, owner and version (palloc'd).  The one
 * scan the lookups below share.
 */
bool
replicator_extension(ReplicatorExtension *ext)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	bool		found;

	memset(ext, 0, sizeof(ReplicatorExtension));
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("replicator"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	found = HeapTupleIsValid(tuple);
	if (found)
	{
		Form_pg_extension form = (Form_pg_extension) GETSTRUCT(tuple);
		bool		isnull;
		Datum		version = heap_getattr(tuple, Anum_pg_extension_extversion,
										   RelationGetDescr(rel), &isnull);

		ext->oid = form->oid;
		ext->nspid = form->extnamespace;
		ext->owner = form->extowner;
		if (!isnull)
			ext->version = TextDatumGetCString(version);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The schema holding the event source (events, id, insert_events), or
 * InvalidOid if the extension is not installed in this database.
 */
Oid
replicator_source_namespace(void)
{
	ReplicatorExtension ext;

	return replicator_extension(&ext) ? ext.nspid : InvalidOid;
}

/* The role that owns the extension and its catalog, or InvalidOid. */
static Oid
extension_owner(void)
{
	ReplicatorExtension ext;

	return replicator_extension(&ext) ? ext.owner : InvalidOid;
}

/*
 * SPI_execute_with_args() as the extension's owner, for statements on
 * replicator.replicas, on which no other role has privileges: the caller's
 * rights were checked before.  Restricted, like a maintenance command run
 * as a table's owner, and with search_path pg_catalog, pg_temp for the
 * statement: an operator or function the caller planted in a schema of its
 * path must never run as the owner, however sql is written.  Needs SPI
 * connected.
 */
int
replicator_spi_execute_as_owner(const char *sql, int nargs, Oid *types, Datum *values,
								const char *nulls, bool read_only)
{
	Oid			owner = extension_owner();

	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"replicator\" is not installed in this database")));
	return replicator_spi_execute_as(owner, false, sql, nargs, types, values, nulls, read_only);
}

/*
 * sql as role, restricted, with search_path pg_catalog, pg_temp (and,
 * with no_row_security, row_security off) for the statement.  Needs SPI
 * connected.
 */
int
replicator_spi_execute_as(Oid role, bool no_row_security, const char *sql, int nargs,
						  Oid *types, Datum *values, const char *nulls, bool read_only)
{
	Oid			saved_userid;
	int			saved_sec_context;
	int			save_nestlevel;
	volatile int ret = 0;

	GetUserIdAndSecContext(&saved_userid, &saved_sec_context);
	SetUserIdAndSecContext(role, saved_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	PG_TRY();
	{
		(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		if (no_row_security)
			(void) set_config_option("row_security", "off", PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_SAVE, true, 0, false);
		ret = SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, 0);
	}
	PG_FINALLY();
	{
		AtEOXact_GUC(false, save_nestlevel);
		SetUserIdAndSecContext(saved_userid, saved_sec_context);
	}
	PG_END_TRY();
	return ret;
}

/*
 * The password rule, decided when connecting: a destination must ask for
 * the password unless the role that added the replica or last changed its
 * conninfo (replicas.changed_by) exists and is a superuser now.  Needs a
 * transaction.
 */
bool
replicator_replica_requires_password(const char *changed_by)
{
	Oid			role = changed_by ? get_role_oid(changed_by, true) : InvalidOid;

	return !(OidIsValid(role) && superuser_arg(role));
}

/*
 * Error out unless the installed SQL objects are those this library was
 * built for: between installing a new library and ALTER EXTENSION UPDATE,
 * the old objects (tables without new columns) would make its statements
 * fail obscurely.
 */
void
replicator_check_sql_version(void)
{
	ReplicatorExtension ext;

	if (replicator_extension(&ext))
		replicator_require_sql_version(ext.version);
}

/* The same, for a version already looked up (NULL: unknown, let it be). */
void
replicator_require_sql_version(const char *version)
{
	if (version != NULL && strcmp(version, REPLICATOR_SQL_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"replicator\" is at version %s, its library at %s", version,
						REPLICATOR_SQL_VERSION),
				 errhint("Run ALTER EXTENSION replicator UPDATE.")));
}

/*
 * A worker's local transaction with SPI and a snapshot, for reading and
 * writing the catalog between its remote work.
 */
void
replicator_begin_local(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

void
replicator_end_local(void)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}
