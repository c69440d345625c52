/*-------------------------------------------------------------------------
 *
 * node.c
 *	  This database's place in a replica topology: its row of
 *	  replicator.node_state, the topology a master pushes to its slaves, and
 *	  the switchover fence.
 *
 * A database with no node_state row is a standalone source, as before 1.2.
 * The tables are read as the extension's owner (no other role has
 * privileges on them); callers checked the rights of theirs first.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "node.h"
#include "settings.h"
#include "shmem.h"

/*
 * Read node_state; false (and state->exists false) for a standalone
 * source.  for_update: lock the row, so that promotions and attaches of
 * this node take turns.  Needs SPI connected; strings are allocated in the
 * caller's memory context.
 */
bool
replicator_read_node_state(NodeState *state, bool for_update)
{
	MemoryContext caller = CurrentMemoryContext;
	int			ret;
	bool		isnull;
	HeapTuple	row;
	TupleDesc	desc;

	memset(state, 0, sizeof(NodeState));
	ret = replicator_spi_execute_as_owner(for_update ?
										  "SELECT name, epoch, master, contact_at, contact_master_max_id,"
										  " contact_lag_events, pg_catalog.date_part('epoch', contact_lag) OPERATOR(pg_catalog.*) 1000000,"
										  " topology_md5 FROM replicator.node_state FOR UPDATE" :
										  "SELECT name, epoch, master, contact_at, contact_master_max_id,"
										  " contact_lag_events, pg_catalog.date_part('epoch', contact_lag) OPERATOR(pg_catalog.*) 1000000,"
										  " topology_md5 FROM replicator.node_state",
										  0, NULL, NULL, NULL, false);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.node_state: %s", SPI_result_code_string(ret));
	if (SPI_processed != 1)
		return false;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		state->exists = true;
		state->name = SPI_getvalue(row, desc, 1);
		state->epoch = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		state->master = SPI_getvalue(row, desc, 3);
		state->is_master = strcmp(state->name, state->master) == 0;
		state->contact_at = DatumGetTimestampTz(SPI_getbinval(row, desc, 4, &isnull));
		state->has_contact = !isnull;
		if (state->has_contact)
		{
			state->contact_master_max_id = DatumGetInt64(SPI_getbinval(row, desc, 5, &isnull));
			state->contact_lag_events = DatumGetInt64(SPI_getbinval(row, desc, 6, &isnull));
			state->contact_lag_us = (int64) DatumGetFloat8(SPI_getbinval(row, desc, 7, &isnull));
		}
		state->topology_md5 = SPI_getvalue(row, desc, 8);
		MemoryContextSwitchTo(spi);
	}
	return true;
}

/*
 * The topology a master pushes to the nodes it streams to, as jsonb text:
 * every replica with its conninfo (passwords included: a slave that takes
 * over needs them, and only the owner reads replicator.replicas), whether
 * a superuser set it (the password rule, see node_protocol.c), the
 * epochs and the routing.  NULL on a standalone source.  Needs SPI
 * connected; allocated in the caller's memory context.
 */
char *
replicator_topology_push_document(void)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *doc = NULL;
	int			ret;

	ret = replicator_spi_execute_as_owner(
										  "SELECT pg_catalog.jsonb_build_object("
										  " 'master', n.master, 'epoch', n.epoch, 'routing', n.routing,"
										  " 'nodes', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
										  "   'name', r.name, 'conninfo', r.conninfo, 'role', r.role,"
										  "   'lag_tolerance', r.lag_tolerance, 'enabled', r.enabled,"
										  "   'incarnation', r.incarnation, 'created_at', r.created_at,"
										  "   'created_by', r.created_by,"
										  "   'superuser_set', coalesce((SELECT a.rolsuper FROM pg_catalog.pg_roles a"
										  "     WHERE a.rolname OPERATOR(pg_catalog.=) r.changed_by), false))"
										  "   ORDER BY r.name), '[]') FROM replicator.replicas r WHERE r.stream_events),"
										  " 'epochs', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
										  "   'epoch', e.epoch, 'master', e.master, 'first_id', e.first_id,"
										  "   'started_at', e.started_at, 'how', e.how, 'detail', e.detail)"
										  "   ORDER BY e.epoch), '[]') FROM replicator.epochs e))::pg_catalog.text"
										  " FROM replicator.node_state n",
										  0, NULL, NULL, NULL, true);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the topology: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		doc = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		MemoryContextSwitchTo(spi);
	}
	return doc;
}

/*
 * max(id) of nspid.events and its ts (0 and 0 if empty), from the primary
 * key with the latest snapshot: what has committed now, whatever the
 * caller's transaction snapshot.
 */
int64
replicator_local_max_id(Oid nspid, TimestampTz *max_ts)
{
	Oid			relid = get_relname_relid("events", nspid);
	Relation	rel;
	Snapshot	snapshot;
	SysScanDesc scan;
	HeapTuple	tuple;
	int64		max_id = 0;

	*max_ts = 0;
	if (!OidIsValid(relid))
		return 0;
	rel = table_open(relid, AccessShareLock);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan_ordered(rel, index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock),
									  snapshot, 0, NULL);
	tuple = systable_getnext_ordered(scan, BackwardScanDirection);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;

		max_id = DatumGetInt64(heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull));
		*max_ts = DatumGetTimestampTz(heap_getattr(tuple, 2, RelationGetDescr(rel), &isnull));
	}
	{
		Relation	index = scan->irel;

		systable_endscan_ordered(scan);
		index_close(index, AccessShareLock);
	}
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
	return max_id;
}

/* This database's entry; the caller holds the lock.  NULL if none. */
static DatabaseEntry *
my_database_entry(void)
{
	for (int i = 0; i < replicator_max_databases; i++)
		if (ReplicatorState->databases[i].dboid == MyDatabaseId)
			return &ReplicatorState->databases[i];
	return NULL;
}

/*
 * Under the shared memory lock: whether a fence in doubt holds this node
 * (db) at epoch; if it is for another node than candidate, its name goes
 * to other (REPLICA_NAME_LEN).
 */
static bool
fence_in_doubt(DatabaseEntry *db, const char *candidate, int64 epoch, char *other)
{
	if (db == NULL || !db->fenced || !db->fence_in_doubt || db->fence_epoch < epoch)
		return false;
	if (strcmp(db->fenced_for, candidate) != 0)
		strlcpy(other, db->fenced_for, REPLICA_NAME_LEN);
	return true;
}

static void
report_in_doubt(const char *in_doubt_for)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("a switchover to \"%s\" is in doubt", in_doubt_for),
			 errdetail("Whether \"%s\" took over is not known; another candidate could take over at the same epoch.", in_doubt_for),
			 errhint("Run replicator.promote('%s') again to finish it, or wait for its stream to make this node its slave.", in_doubt_for)));
}

/*
 * Fence this node, master at epoch, for a switchover to fenced_for:
 * insert_events refuses from now on, in every session, until
 * replicator_unfence(), the end of the fencing backend (which a crash of it
 * must not leave behind), or a new epoch here: a fence is of one epoch, and
 * the node's role has changed for good once its epoch has.  A fence kept in
 * doubt (take_over sent to one candidate, its outcome unknown) may be taken
 * again only for that candidate, since another could take over at the same
 * epoch; true then: the caller's switchover inherits the doubt.
 */
bool
replicator_fence(const char *fenced_for, int64 epoch)
{
	DatabaseEntry *db;
	char		in_doubt_for[REPLICA_NAME_LEN] = "";
	bool		was_in_doubt = false;

	if (ReplicatorState == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replicator is not loaded through shared_preload_libraries")));
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	db = my_database_entry();
	was_in_doubt = fence_in_doubt(db, fenced_for, epoch, in_doubt_for);
	if (db != NULL && in_doubt_for[0] == '\0')
	{
		db->fenced = true;
		db->fenced_by = MyProcPid;
		db->fence_in_doubt = false;
		db->fence_epoch = epoch;
		strlcpy(db->fenced_for, fenced_for, REPLICA_NAME_LEN);
	}
	LWLockRelease(ReplicatorState->lock);
	if (db == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the replicator launcher has not scanned this database yet"),
				 errhint("Try again in a moment.")));
	if (in_doubt_for[0] != '\0')
		report_in_doubt(in_doubt_for);
	return was_in_doubt;
}

/*
 * This backend's fence ends with its transaction.  in_doubt: take_over was
 * sent and may have committed, so the fence outlives the backend, until a
 * newer master makes this node a slave (a new epoch) or a promote()
 * finishes the switchover.
 */
void
replicator_unfence(bool in_doubt)
{
	DatabaseEntry *db;

	if (ReplicatorState == NULL)
		return;
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	db = my_database_entry();
	if (db != NULL && db->fenced && db->fenced_by == MyProcPid)
	{
		if (in_doubt)
			db->fence_in_doubt = true;
		else if (!db->fence_in_doubt)
			db->fenced = false;
	}
	LWLockRelease(ReplicatorState->lock);
}

/*
 * This session is a master's stream at epoch: remembered in shared memory
 * so that a promotion here can end the sessions of an older epoch, which
 * may sit in a transaction holding the events table for as long as their
 * server takes to notice their master is gone.  Best effort: with every
 * place taken by live sessions, this one is not remembered.
 */
void
replicator_register_attached(int64 epoch)
{
	DatabaseEntry *db;

	if (ReplicatorState == NULL)
		return;
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	db = my_database_entry();
	if (db != NULL)
	{
		int			free = -1;

		for (int i = 0; i < REPLICATOR_MAX_ATTACHED; i++)
		{
			if (db->attached_pid[i] == MyProcPid)
			{
				free = i;
				break;
			}
			if (free < 0 && (db->attached_pid[i] == 0 || BackendPidGetProc(db->attached_pid[i]) == NULL))
				free = i;
		}
		if (free >= 0)
		{
			db->attached_pid[free] = MyProcPid;
			db->attached_epoch[free] = epoch;
		}
	}
	LWLockRelease(ReplicatorState->lock);
}

/*
 * Terminate this node's sessions attached as a master's stream at an epoch
 * below epoch (never this one).  How many were signalled.
 */
int
replicator_end_attached_sessions(int64 epoch)
{
	DatabaseEntry *db;
	pid_t		pids[REPLICATOR_MAX_ATTACHED];
	int			n = 0;

	if (ReplicatorState == NULL)
		return 0;
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	db = my_database_entry();
	for (int i = 0; db != NULL && i < REPLICATOR_MAX_ATTACHED; i++)
	{
		if (db->attached_pid[i] == 0 || db->attached_pid[i] == MyProcPid ||
			db->attached_epoch[i] >= epoch)
			continue;
		if (BackendPidGetProc(db->attached_pid[i]) != NULL)
			pids[n++] = db->attached_pid[i];
		db->attached_pid[i] = 0;
	}
	LWLockRelease(ReplicatorState->lock);

	/* as pg_terminate_backend() does, without its check of our rights */
	for (int i = 0; i < n; i++)
	{
		ereport(LOG,
				(errmsg("replicator: ending session %d, a stream of a master of an epoch before " INT64_FORMAT,
						(int) pids[i], epoch)));
#ifdef HAVE_SETSID
		(void) kill(-pids[i], SIGTERM);
#else
		(void) kill(pids[i], SIGTERM);
#endif
	}
	return n;
}

/*
 * Refuse a switchover to candidate while one to another node is in doubt.
 * Read without the node_state row, which an attach may hold.
 */
void
replicator_refuse_if_in_doubt(const char *candidate)
{
	char		in_doubt_for[REPLICA_NAME_LEN] = "";
	char		name[REPLICA_NAME_LEN];
	char		master[REPLICA_NAME_LEN];
	int64		epoch = 0;

	if (ReplicatorState == NULL)
		return;
	(void) replicator_node_role_now(name, master, &epoch);
	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	(void) fence_in_doubt(my_database_entry(), candidate, epoch, in_doubt_for);
	LWLockRelease(ReplicatorState->lock);
	if (in_doubt_for[0] != '\0')
		report_in_doubt(in_doubt_for);
}

/*
 * Whether a switchover fences this node, now at epoch; if so, to whom
 * (REPLICA_NAME_LEN).
 */
bool
replicator_fenced(int64 epoch, char *fenced_for)
{
	DatabaseEntry *db;
	bool		fenced = false;
	bool		in_doubt = false;
	pid_t		by = 0;

	if (ReplicatorState == NULL)
		return false;
	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	db = my_database_entry();
	if (db != NULL && db->fenced && db->fence_epoch >= epoch)
	{
		fenced = true;
		by = db->fenced_by;
		in_doubt = db->fence_in_doubt;
		strlcpy(fenced_for, db->fenced_for, REPLICA_NAME_LEN);
	}
	LWLockRelease(ReplicatorState->lock);
	/* a fence whose backend is gone is no fence, unless it is in doubt */
	if (fenced && !in_doubt && by != MyProcPid && BackendPidGetProc(by) == NULL)
		fenced = false;
	return fenced;
}

/*
 * name, master and epoch from node_state as committed now (the latest
 * snapshot, whatever the caller's), by a scan of the one-row table rather
 * than a query: insert_events and the write guard run this per statement.
 * False for a standalone source.  Strings palloc'd, each REPLICA_NAME_LEN.
 */
bool
replicator_node_role_now(char *name, char *master, int64 *epoch)
{
	Oid			nspid = get_namespace_oid("replicator", true);
	Oid			relid = OidIsValid(nspid) ? get_relname_relid("node_state", nspid) : InvalidOid;
	Relation	rel;
	Snapshot	snapshot;
	TableScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snapshot, 0, NULL);
	if ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		TupleDesc	desc = RelationGetDescr(rel);
		bool		isnull;

		/* one, name, epoch, master: the first columns of 1.2's table */
		text_to_cstring_buffer(DatumGetTextPP(heap_getattr(tuple, 2, desc, &isnull)),
							   name, REPLICA_NAME_LEN);
		*epoch = DatumGetInt64(heap_getattr(tuple, 3, desc, &isnull));
		text_to_cstring_buffer(DatumGetTextPP(heap_getattr(tuple, 4, desc, &isnull)),
							   master, REPLICA_NAME_LEN);
		found = true;
	}
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
	return found;
}

/* The ts of nspid.events' event id (latest snapshot), 0 if none. */
TimestampTz
replicator_event_ts(Oid nspid, int64 id)
{
	Oid			relid = get_relname_relid("events", nspid);
	Relation	rel;
	Relation	index;
	Snapshot	snapshot;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	TimestampTz ts = 0;

	if (!OidIsValid(relid))
		return 0;
	rel = table_open(relid, AccessShareLock);
	index = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(id));
	scan = systable_beginscan_ordered(rel, index, snapshot, 1, &key);
	tuple = systable_getnext_ordered(scan, ForwardScanDirection);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;

		ts = DatumGetTimestampTz(heap_getattr(tuple, 2, RelationGetDescr(rel), &isnull));
	}
	systable_endscan_ordered(scan);
	UnregisterSnapshot(snapshot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
	return ts;
}
