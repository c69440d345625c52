/*-------------------------------------------------------------------------
 *
 * replicator.c
 *	  Module initialisation: configuration parameters and preload state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"

#include "replicator.h"
#include "worker.h"

PG_MODULE_MAGIC;


int			replicator_max_events_per_write = 10000;
int			replicator_connect_timeout = 15000;
int			replicator_poll_interval = 1000;
char	   *replicator_destination_synchronous_commit = NULL;
int			replicator_destination_sessions = 2;
int			replicator_max_databases = 64;
bool		replicator_preloaded = false;

void		_PG_init(void);

/*
 * The destination sessions send this value in their startup packet: a
 * value the server refuses would make every connection fail, so refuse it
 * here, where the mistake is made.
 */
static bool
check_destination_synchronous_commit(char **newval, void **extra, GucSource source)
{
	static const char *const values[] = {"local", "remote_write", "remote_apply", NULL};
	bool		b;

	if (parse_bool(*newval, &b))
		return true;
	for (int i = 0; values[i] != NULL; i++)
		if (pg_strcasecmp(*newval, values[i]) == 0)
			return true;
	GUC_check_errdetail("Valid values are on, off, local, remote_write and remote_apply.");
	return false;
}

void
_PG_init(void)
{
	DefineCustomIntVariable("replicator.max_events_per_write",
							"Maximum number of events written to a destination in one transaction.",
							NULL,
							&replicator_max_events_per_write,
							10000, 1, 10000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("replicator.connect_timeout",
							"Maximum time to wait for a connection to a destination.",
							NULL,
							&replicator_connect_timeout,
							15000, 1000, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("replicator.poll_interval",
							"How often an idle streaming worker looks for new events.",
							"Workers are woken at the commit of every insert_events() call; this is only the backstop.",
							&replicator_poll_interval,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("replicator.destination_synchronous_commit",
							   "synchronous_commit of the streaming workers' destination sessions.",
							   "off is safe: a batch a destination crash loses is sent again, since the position is the destination's own max(id).",
							   &replicator_destination_synchronous_commit,
							   "off",
							   PGC_SIGHUP, 0,
							   check_destination_synchronous_commit, NULL, NULL);

	DefineCustomIntVariable("replicator.destination_sessions",
							"Sessions each streaming worker opens to its destination.",
							"While catching up, large batches are applied in these sessions side by side and committed in id order.",
							&replicator_destination_sessions,
							2, 1, REPLICATOR_MAX_SESSIONS,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	/* shared memory is sized by it: only while the postmaster loads us */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("replicator.max_databases",
								"Databases with the extension that the launcher serves at once.",
								"Databases without the extension take no entry once scanned.",
								&replicator_max_databases,
								64, 1, 65536,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);

	MarkGUCPrefixReserved("replicator");

	if (!process_shared_preload_libraries_in_progress)
		return;

	replicator_preloaded = true;
	replicator_shmem_request();
	replicator_install_utility_hook();

	/*
	 * pg_upgrade runs its servers in binary-upgrade mode: nothing may stream
	 * from (or write to) a cluster while it is being upgraded.
	 */
	if (!IsBinaryUpgrade)
		replicator_register_launcher();
}

PG_FUNCTION_INFO_V1(replicator_streaming_available);

/*
 * Streaming needs the postmaster to have loaded us; backends forked from it
 * inherit the flag set in _PG_init.
 */
Datum
replicator_streaming_available(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(replicator_preloaded);
}

/*
 * The schema holding the event source (events, id, insert_events), or
 * InvalidOid if the extension is not installed in this database.
 */
Oid
replicator_source_namespace(void)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	Oid			nspid = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("replicator"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		nspid = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nspid;
}

/* The role that owns the extension and its catalog, or InvalidOid. */
static Oid
extension_owner(void)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	Oid			owner = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("replicator"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		owner = ((Form_pg_extension) GETSTRUCT(tuple))->extowner;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return owner;
}

/*
 * SPI_execute_with_args() as the extension's owner, for statements on
 * replicator.replicas, on which no other role has privileges: the caller's
 * rights were checked before.  Restricted, like a maintenance command run
 * as a table's owner; every operator and function in sql must be
 * schema-qualified, since the search_path is still the caller's.  Needs
 * SPI connected.
 */
int
replicator_spi_execute_as_owner(const char *sql, int nargs, Oid *types, Datum *values,
								const char *nulls, bool read_only)
{
	Oid			owner = extension_owner();
	Oid			saved_userid;
	int			saved_sec_context;
	volatile int ret = 0;

	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"replicator\" is not installed in this database")));
	GetUserIdAndSecContext(&saved_userid, &saved_sec_context);
	SetUserIdAndSecContext(owner, saved_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		ret = SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, 0);
	}
	PG_FINALLY();
	{
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
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("replicator"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (version != NULL && strcmp(version, REPLICATOR_SQL_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"replicator\" is at version %s, its library at %s", version,
						REPLICATOR_SQL_VERSION),
				 errhint("Run ALTER EXTENSION replicator UPDATE.")));
}
