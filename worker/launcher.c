/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher starts one streaming worker per enabled destination of
 *	  every database that has the extension, and starts them again when they
 *	  die.  It learns what to run from scan workers, one per database, which
 *	  read that database's replica catalog into shared memory.
 *
 * Only the launcher starts workers; it keeps their handles.  Scans are
 * asked for at commit by whatever changed a catalog (CREATE EXTENSION, the
 * management functions, DROP EXTENSION, CREATE DATABASE), and once for
 * every database when the launcher starts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "launcher.h"
#include "routing.h"
#include "rule_catalog.h"
#include "rule_worker.h"
#include "settings.h"
#include "shmem.h"
#include "stream.h"
#include "topology_doc.h"

/* Longest wait between two restarts of a worker that keeps dying. */
#define MAX_RESTART_DELAY_MS	30000

static BackgroundWorkerHandle **scan_handles;	/* replicator.max_databases */
static BackgroundWorkerHandle *stream_handles[REPLICATOR_MAX_REPLICAS];

static void
fill_worker(BackgroundWorker *bgw, const char *function, const char *type)
{
	memset(bgw, 0, sizeof(BackgroundWorker));
	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	snprintf(bgw->bgw_library_name, BGW_MAXLEN, "replicator");
	snprintf(bgw->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(bgw->bgw_type, BGW_MAXLEN, "%s", type);
}

void
replicator_register_launcher(void)
{
	BackgroundWorker bgw;

	fill_worker(&bgw, "replicator_launcher_main", "replicator launcher");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "replicator launcher");
	bgw.bgw_restart_time = 1;
	RegisterBackgroundWorker(&bgw);
}

static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	ReplicatorState->launcher_latch = NULL;
	ReplicatorState->launcher_pid = 0;
	LWLockRelease(ReplicatorState->lock);
}

/*
 * Databases still to scan once the launcher started: as many as there are
 * free entries at a time, since the scans of those without the extension
 * free theirs.
 */
static List *unscanned_databases = NIL;

static void
scan_unscanned_databases(void)
{
	while (unscanned_databases != NIL &&
		   replicator_try_rescan(linitial_oid(unscanned_databases)))
		unscanned_databases = list_delete_first(unscanned_databases);
}

/* Every database that accepts connections gets a scan. */
static void
scan_all_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
		{
			/* kept past the transaction */
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			unscanned_databases = lappend_oid(unscanned_databases, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	scan_unscanned_databases();
}

static bool
handle_running(BackgroundWorkerHandle **handle)
{
	pid_t		pid;

	if (*handle == NULL)
		return false;
	if (GetBackgroundWorkerPid(*handle, &pid) == BGWH_STOPPED)
	{
		pfree(*handle);
		*handle = NULL;
		return false;
	}
	return true;
}

static BackgroundWorkerHandle *
start_worker(BackgroundWorker *bgw)
{
	BackgroundWorkerHandle *handle;

	bgw->bgw_restart_time = BGW_NEVER_RESTART;
	bgw->bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(bgw, &handle))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("replicator could not start \"%s\": no background worker slot is free", bgw->bgw_name),
				 errhint("Raise max_worker_processes: replicator needs one for its launcher and one per destination.")));
		return NULL;
	}
	return handle;
}

/*
 * One pass: start the scans asked for, start the workers wanted and not
 * running, stop those no longer wanted.  Returns how long to sleep.
 */
static long
launcher_pass(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = 1000;
	BackgroundWorker bgw;

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);

	for (int i = 0; i < replicator_max_databases; i++)
	{
		DatabaseEntry *db = &ReplicatorState->databases[i];

		/* a scan is due when the catalog changed since the last one started */
		if (!OidIsValid(db->dboid) || db->scanned_generation == db->catalog_generation ||
			db->dropping_until > now ||
			handle_running(&scan_handles[i]))
			continue;
		fill_worker(&bgw, "replicator_scan_main", "replicator scan");
		snprintf(bgw.bgw_name, BGW_MAXLEN, "replicator scan of database %u", db->dboid);
		bgw.bgw_main_arg = ObjectIdGetDatum(db->dboid);
		scan_handles[i] = start_worker(&bgw);
		if (scan_handles[i] != NULL)
			db->scanned_generation = db->catalog_generation;
	}

	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *slot = &ReplicatorState->slots[i];
		bool		running = handle_running(&stream_handles[i]) || slot->pid > 0;
		bool		dropping = false;

		if (!slot->in_use)
			continue;
		for (int d = 0; d < replicator_max_databases; d++)
			if (ReplicatorState->databases[d].dboid == slot->dboid &&
				ReplicatorState->databases[d].dropping_until > now)
				dropping = true;

		if (!slot->wanted)
		{
			if (slot->pid > 0)
				kill(slot->pid, SIGTERM);
			else if (!running)
			{
				slot->in_use = false;
				/* scan again: a database left with no slot may free its entry */
				for (int d = 0; d < replicator_max_databases; d++)
					if (ReplicatorState->databases[d].dboid == slot->dboid)
						ReplicatorState->databases[d].catalog_generation++;
			}
			continue;
		}
		if (running || dropping)
			continue;
		if (slot->start_after > now)
		{
			long		wait = (long) ((slot->start_after - now) / 1000);

			sleep_ms = Min(sleep_ms, Max(wait, 10));
			continue;
		}

		if (slot->is_rule)
		{
			fill_worker(&bgw, "replicator_rule_main", "replicator rule");
			snprintf(bgw.bgw_name, BGW_MAXLEN, "replicator rule %s", slot->name);
		}
		else
		{
			fill_worker(&bgw, "replicator_stream_main", "replicator streaming");
			snprintf(bgw.bgw_name, BGW_MAXLEN, "replicator streaming to %s", slot->name);
		}
		bgw.bgw_main_arg = Int32GetDatum(i);
		memcpy(bgw.bgw_extra, &slot->generation, sizeof(uint32));
		stream_handles[i] = start_worker(&bgw);
		/* the next start, should this one die, waits longer each time */
		slot->start_after = TimestampTzPlusMilliseconds(now,
														Min(MAX_RESTART_DELAY_MS,
															1000 << Min(slot->failed_starts, 5)));
		slot->failed_starts++;
	}

	LWLockRelease(ReplicatorState->lock);
	return sleep_ms;
}

void
replicator_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* no database: the launcher reads only the shared catalog pg_database */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	scan_handles = MemoryContextAllocZero(TopMemoryContext,
										  sizeof(BackgroundWorkerHandle *) * replicator_max_databases);

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	ReplicatorState->launcher_latch = MyLatch;
	ReplicatorState->launcher_pid = MyProcPid;
	LWLockRelease(ReplicatorState->lock);
	before_shmem_exit(launcher_detach, 0);

	ereport(LOG, (errmsg("replicator launcher started")));
	scan_all_databases();

	for (;;)
	{
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		scan_unscanned_databases();
		sleep_ms = launcher_pass();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ----------------------------------------------------------------
 * Scan worker: read one database's replica catalog into shared memory.
 * ----------------------------------------------------------------
 */

static void
scan_detach(int code, Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	for (int i = 0; i < replicator_max_databases; i++)
		if (ReplicatorState->databases[i].dboid == dboid &&
			ReplicatorState->databases[i].scan_pid == MyProcPid)
			ReplicatorState->databases[i].scan_pid = 0;
	if (ReplicatorState->launcher_latch)
		SetLatch(ReplicatorState->launcher_latch);
	LWLockRelease(ReplicatorState->lock);
}

void
replicator_scan_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	List	   *names = NIL;
	List	   *rules = NIL;
	ListCell   *lc;
	uint64		generation = 0;
	bool		installed;
	ReplicatorExtension ext;
	ScanTopology topology;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	for (int i = 0; i < replicator_max_databases; i++)
		if (ReplicatorState->databases[i].dboid == dboid)
		{
			ReplicatorState->databases[i].scan_pid = MyProcPid;
			generation = ReplicatorState->databases[i].scanned_generation;
		}
	LWLockRelease(ReplicatorState->lock);
	before_shmem_exit(scan_detach, arg);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	/* as the streaming worker: the database's search_path must not apply */
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("replicator scan");

	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	memset(&topology, 0, sizeof(topology));
	installed = replicator_extension(&ext);
	/* a new library before ALTER EXTENSION UPDATE: stream nothing, say why */
	if (installed && strcmp(ext.version, REPLICATOR_SQL_VERSION) != 0)
		ereport(WARNING,
				(errmsg("replicator: database \"%s\" has version %s of the extension's SQL objects, the library needs %s: nothing is streamed",
						get_database_name(dboid), ext.version, REPLICATOR_SQL_VERSION),
				 errhint("Run ALTER EXTENSION replicator UPDATE in that database.")));
	else if (installed)
	{
		/*
		 * Streamed: the enabled, valid slaves, by a master or a standalone
		 * source; never this node itself, and nothing by a slave.
		 */
		int			ret = SPI_execute("SELECT r.name FROM replicator.replicas r"
									  " LEFT JOIN replicator.node_state n ON true"
									  " WHERE r.enabled AND r.stream_events AND r.invalid_reason IS NULL"
									  " AND r.role OPERATOR(pg_catalog.=) 'slave'"
									  " AND (n.name IS NULL OR (n.master OPERATOR(pg_catalog.=) n.name"
									  "  AND r.name OPERATOR(pg_catalog.<>) n.name))",
									  true, 0);

		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not read replicator.replicas: %s", SPI_result_code_string(ret));
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			names = lappend(names, SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1));
			MemoryContextSwitchTo(old);
		}
		/* cdc rules run a worker each; slots of dropped rules go */
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			rules = replicator_rule_names(true);
			MemoryContextSwitchTo(old);
		}
		replicator_rule_drop_orphan_slots();
		/* what read_replica() routes by */
		replicator_topology_read(&topology);
		/* scanned after every change: the topology file follows them */
		replicator_write_topology_file();
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();

	/* a database without the extension needs no entry: serve another */
	if (!installed)
		replicator_release_database(dboid, generation);

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	/* slots of this database: wanted if still in the catalog */
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *slot = &ReplicatorState->slots[i];
		bool		listed = false;

		if (!slot->in_use || slot->dboid != dboid)
			continue;
		foreach(lc, slot->is_rule ? rules : names)
			if (strcmp((char *) lfirst(lc), slot->name) == 0)
				listed = true;
		if (listed && !slot->wanted)
		{
			/* resumed: start at once */
			slot->start_after = 0;
			slot->failed_starts = 0;
		}
		slot->wanted = listed;
	}
	/* new destinations and rules get a slot */
	foreach(lc, list_concat(list_copy(names), rules))
	{
		const char *name = lfirst(lc);
		bool		is_rule = !list_member_ptr(names, name);
		ReplicaSlot *free_slot = NULL;
		bool		found = false;

		for (int i = 0; i < REPLICATOR_MAX_REPLICAS && !found; i++)
		{
			ReplicaSlot *slot = &ReplicatorState->slots[i];

			if (slot->in_use && slot->dboid == dboid && slot->is_rule == is_rule &&
				strcmp(slot->name, name) == 0)
				found = true;
			else if (!slot->in_use && free_slot == NULL)
				free_slot = slot;
		}
		if (found)
			continue;
		if (free_slot == NULL)
		{
			ereport(WARNING,
					(errmsg("replicator streams to at most %d destinations; \"%s\" is not served",
							REPLICATOR_MAX_REPLICAS, name)));
			continue;
		}
		{
			uint32		generation = free_slot->generation + 1;

			memset(free_slot, 0, sizeof(ReplicaSlot));
			free_slot->generation = generation;
		}
		free_slot->in_use = true;
		free_slot->is_rule = is_rule;
		free_slot->wanted = true;
		free_slot->dboid = dboid;
		strlcpy(free_slot->name, name, REPLICA_NAME_LEN);
		free_slot->position = -1;
		free_slot->tables = -1;
		free_slot->lag_tolerance_ms = -1;
	}
	replicator_topology_store(dboid, &topology);
	LWLockRelease(ReplicatorState->lock);
}
