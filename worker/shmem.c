/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared state, and how SQL sessions signal the launcher and the
 *	  streaming workers: always at commit, so that whoever wakes up sees
 *	  what the session committed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "shmem.h"

ReplicatorShared *ReplicatorState = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static bool xact_callback_registered = false;
static bool rescan_at_commit = false;
static bool wake_at_commit = false;
static Oid	created_db = InvalidOid;

/* An entry as new (free: dboid 0).  Caller holds the lock exclusively. */
static void
clear_database_entry(DatabaseEntry *db)
{
	memset(db, 0, sizeof(DatabaseEntry));
	pg_atomic_init_u64(&db->round_robin, 0);
	pg_atomic_init_u32(&db->rule_workers, 0);
}

static Size
replicator_shmem_size(void)
{
	return MAXALIGN(add_size(offsetof(ReplicatorShared, databases),
							 mul_size(replicator_max_databases, sizeof(DatabaseEntry))));
}

static void
replicator_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(replicator_shmem_size());
	RequestNamedLWLockTranche("replicator", 1);
}

static void
replicator_shmem_startup_hook(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ReplicatorState = ShmemInitStruct("replicator", replicator_shmem_size(), &found);
	if (!found)
	{
		memset(ReplicatorState, 0, replicator_shmem_size());
		ReplicatorState->lock = &(GetNamedLWLockTranche("replicator"))->lock;
		for (int i = 0; i < replicator_max_databases; i++)
			clear_database_entry(&ReplicatorState->databases[i]);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* From _PG_init, while shared_preload_libraries is processed. */
void
replicator_shmem_request(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = replicator_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = replicator_shmem_startup_hook;
}

const char *
replicator_replica_state_name(ReplicaState state)
{
	switch (state)
	{
		case REPLICA_STOPPED:
			return "stopped";
		case REPLICA_CONNECTING:
			return "connecting";
		case REPLICA_CATCHING_UP:
			return "catching_up";
		case REPLICA_STREAMING:
			return "streaming";
		case REPLICA_DISCONNECTED:
			return "disconnected";
		case REPLICA_INVALID:
			return "invalid";
	}
	return "unknown";
}

/* Ask the launcher to read dboid's catalog again. */
void
replicator_request_rescan(Oid dboid)
{
	if (!replicator_try_rescan(dboid))
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("replicator serves at most %d databases with the extension at once; database %u is not served",
						replicator_max_databases, dboid),
				 errhint("Raise replicator.max_databases (needs a restart).")));
}

/* The same, but false (and nothing else) when every entry is taken. */
bool
replicator_try_rescan(Oid dboid)
{
	DatabaseEntry *free_entry = NULL;
	Latch	   *launcher;
	bool		done = true;
	int			i;

	if (ReplicatorState == NULL)
		return true;

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	for (i = 0; i < replicator_max_databases; i++)
	{
		DatabaseEntry *db = &ReplicatorState->databases[i];

		if (db->dboid == dboid)
			break;
		if (!OidIsValid(db->dboid) && free_entry == NULL)
			free_entry = db;
	}
	if (i < replicator_max_databases)
		ReplicatorState->databases[i].catalog_generation++;
	else if (free_entry != NULL)
	{
		clear_database_entry(free_entry);
		free_entry->dboid = dboid;
		free_entry->catalog_generation = 1;
	}
	else
		done = false;
	launcher = ReplicatorState->launcher_latch;
	LWLockRelease(ReplicatorState->lock);

	if (launcher && done)
		SetLatch(launcher);
	return done;
}

/*
 * How many catalog changes of dboid have committed: a worker rereads its
 * replica's row when this moves, so a pause or drop acts before the next
 * batch, not when the launcher gets to it.
 */
uint64
replicator_catalog_generation(Oid dboid)
{
	uint64		generation = 0;

	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	for (int i = 0; i < replicator_max_databases; i++)
		if (ReplicatorState->databases[i].dboid == dboid)
			generation = ReplicatorState->databases[i].catalog_generation;
	LWLockRelease(ReplicatorState->lock);
	return generation;
}

/*
 * The latches are set after the lock is released, so that a woken worker
 * does not at once wait for the lock its waker still holds.  A latch is its
 * process's PGPROC latch: setting one whose worker just left is harmless.
 */
static void
wake_database_workers(Oid dboid)
{
	Latch	   *latches[REPLICATOR_MAX_REPLICAS];
	int			n = 0;

	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *slot = &ReplicatorState->slots[i];

		if (slot->in_use && slot->dboid == dboid && slot->latch != NULL)
			latches[n++] = slot->latch;
	}
	LWLockRelease(ReplicatorState->lock);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

static void
replicator_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (rescan_at_commit)
				replicator_request_rescan(MyDatabaseId);
			if (OidIsValid(created_db))
				replicator_request_rescan(created_db);
			created_db = InvalidOid;
			if (wake_at_commit && ReplicatorState != NULL)
				wake_database_workers(MyDatabaseId);
			rescan_at_commit = wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			rescan_at_commit = wake_at_commit = false;
			created_db = InvalidOid;
			break;
		default:
			break;
	}
}

/* Wake the cdc rule workers of dboid: new WAL to decode. */
void
replicator_wake_rule_workers(Oid dboid)
{
	Latch	   *latches[REPLICATOR_MAX_REPLICAS];
	int			n = 0;

	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *slot = &ReplicatorState->slots[i];

		if (slot->in_use && slot->is_rule && slot->dboid == dboid && slot->latch != NULL)
			latches[n++] = slot->latch;
	}
	LWLockRelease(ReplicatorState->lock);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/*
 * Every transaction that wrote wakes its database's cdc rule workers at
 * commit, so that a change is decoded as soon as it is durable rather than
 * at the next poll.  Without rule workers (checked without the lock) a
 * commit pays one pass over replicator.max_databases entries.
 */
static bool commit_wrote = false;

static void
commit_wakeup_callback(XactEvent event, void *arg)
{
	if (ReplicatorState == NULL)
		return;
	if (event == XACT_EVENT_PRE_COMMIT)
		commit_wrote = TransactionIdIsValid(GetTopTransactionIdIfAny());
	else if (event == XACT_EVENT_COMMIT && commit_wrote)
	{
		commit_wrote = false;
		for (int i = 0; i < replicator_max_databases; i++)
		{
			DatabaseEntry *db = &ReplicatorState->databases[i];

			if (db->dboid == MyDatabaseId && pg_atomic_read_u32(&db->rule_workers) > 0)
			{
				replicator_wake_rule_workers(MyDatabaseId);
				break;
			}
		}
	}
	else if (event == XACT_EVENT_ABORT)
		commit_wrote = false;
}

/* From _PG_init: every backend inherits the callback. */
void
replicator_register_commit_wakeup(void)
{
	RegisterXactCallback(commit_wakeup_callback, NULL);
}

static void
register_xact_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(replicator_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/* The replica catalog changed: the launcher rescans at commit. */
void
replicator_request_rescan_at_commit(void)
{
	register_xact_callback();
	rescan_at_commit = true;
}

/*
 * A database was created (from a template that may have the extension): it
 * is scanned once it exists for others, at commit.
 */
void
replicator_request_rescan_of_created(Oid dboid)
{
	register_xact_callback();
	created_db = dboid;
}

/* Events were inserted: the streaming workers wake at commit. */
void
replicator_wake_workers_at_commit(void)
{
	if (ReplicatorState == NULL || wake_at_commit)
		return;
	register_xact_callback();
	wake_at_commit = true;
}

/*
 * DROP DATABASE is about to run, and may: stop dboid's workers and start
 * none for a while, so that they do not hold the database open.  If the
 * drop fails after all, replicator_database_drop_failed() restarts them.
 */
void
replicator_stop_database_workers(Oid dboid)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 30000);

	if (ReplicatorState == NULL)
		return;

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	for (int i = 0; i < replicator_max_databases; i++)
	{
		DatabaseEntry *db = &ReplicatorState->databases[i];

		if (db->dboid != dboid)
			continue;
		db->dropping_until = until;
		if (db->scan_pid > 0)
			kill(db->scan_pid, SIGTERM);
	}
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *slot = &ReplicatorState->slots[i];

		if (slot->in_use && slot->dboid == dboid && slot->pid > 0)
			kill(slot->pid, SIGTERM);
	}
	LWLockRelease(ReplicatorState->lock);
}

/* DROP DATABASE succeeded: forget dboid and its destinations. */
void
replicator_forget_database(Oid dboid)
{
	if (ReplicatorState == NULL)
		return;

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	for (int i = 0; i < replicator_max_databases; i++)
		if (ReplicatorState->databases[i].dboid == dboid)
			clear_database_entry(&ReplicatorState->databases[i]);
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
		if (ReplicatorState->slots[i].dboid == dboid)
			ReplicatorState->slots[i].in_use = ReplicatorState->slots[i].wanted = false;
	LWLockRelease(ReplicatorState->lock);
}

/* DROP DATABASE failed after its workers were stopped: start them again. */
void
replicator_database_drop_failed(Oid dboid)
{
	Latch	   *launcher = NULL;

	if (ReplicatorState == NULL)
		return;

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	for (int i = 0; i < replicator_max_databases; i++)
	{
		DatabaseEntry *db = &ReplicatorState->databases[i];

		if (db->dboid == dboid)
		{
			db->dropping_until = 0;
			db->catalog_generation++;	/* and scan it again */
		}
	}
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *slot = &ReplicatorState->slots[i];

		if (slot->in_use && slot->dboid == dboid)
		{
			slot->start_after = 0;
			slot->failed_starts = 0;
		}
	}
	launcher = ReplicatorState->launcher_latch;
	LWLockRelease(ReplicatorState->lock);
	if (launcher)
		SetLatch(launcher);
}

/*
 * A scan found no extension in dboid: free its entry for another database,
 * unless a newer catalog change asked for another scan meanwhile, or a
 * destination of it is still served.
 */
void
replicator_release_database(Oid dboid, uint64 scanned_generation)
{
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
		if (ReplicatorState->slots[i].in_use && ReplicatorState->slots[i].dboid == dboid)
		{
			LWLockRelease(ReplicatorState->lock);
			return;
		}
	for (int i = 0; i < replicator_max_databases; i++)
	{
		DatabaseEntry *db = &ReplicatorState->databases[i];

		if (db->dboid == dboid && db->catalog_generation == scanned_generation)
			clear_database_entry(db);
	}
	LWLockRelease(ReplicatorState->lock);
}

/* Copy dboid's slots of one kind (destinations or rules) into out; how many. */
int
replicator_copy_slots(Oid dboid, bool is_rule, ReplicaSlot *out)
{
	int			n = 0;

	if (ReplicatorState == NULL)
		return 0;
	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
		if (ReplicatorState->slots[i].in_use && ReplicatorState->slots[i].is_rule == is_rule &&
			ReplicatorState->slots[i].dboid == dboid)
			out[n++] = ReplicatorState->slots[i];
	LWLockRelease(ReplicatorState->lock);
	return n;
}
