/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  The streaming worker: copies new events to one destination, exactly
 *	  once, in batches, each one destination transaction.
 *
 * Exactly once: the position is the destination's own max(id), read on every
 * connect, and advanced only after a batch's COMMIT succeeded.  If a commit's
 * outcome is unknown (the connection broke), the worker reconnects and reads
 * max(id) again.  Ids are gapless and commit in order on the source, so
 * "id > position" is exactly what the destination lacks; its primary key
 * turns any mistake into an error, never a duplicate.
 *
 * A batch is read in a short local transaction, then written with no local
 * transaction open, so a slow destination holds no lock on the source.  It
 * holds at most replicator.max_events_per_write events and ends at an
 * insert_events call boundary (ts changes there) unless one call alone is
 * larger.  Rows travel in binary (COPY data, or the parameters of one
 * INSERT for a small batch): values arrive exactly.  Each batch is one
 * destination transaction; apply.c sends them and commits them in order.
 *
 * Durable before sent: a batch leaves only once the source's WAL holds the
 * commits of its events on disk, as a walsender sends only flushed WAL.  A
 * session with synchronous_commit = off makes its events visible before
 * that; a crash would then lose them on the source but not on the
 * destination, and new events would reuse their ids.
 *
 * One history: a destination holds a gapless prefix of one source's
 * history.  The checks on connect compare its first and its last event with
 * ours; a primary-key violation while applying means another writer (a
 * clone of this source, say) got there first and is a validation failure;
 * a worker whose extension or replica was dropped and created again starts
 * over with those checks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "apply.h"
#include "catalog.h"
#include "connection.h"
#include "destination.h"
#include "node.h"
#include "node_link.h"
#include "routing.h"
#include "settings.h"
#include "shmem.h"
#include "stream.h"

/* A batch also stops growing at this many bytes (one event may exceed it). */
#define BATCH_MAX_BYTES		(32 * 1024 * 1024)
/* Batches up to this size also travel as one INSERT: one round trip. */
#define INSERT_MAX_EVENTS	64
#define INSERT_MAX_BYTES	(256 * 1024)
#define MAX_BACKOFF_MS		30000

/* the columns of events, as replicator--1.0.sql creates it */
#define EVENTS_ID		1
#define EVENTS_TS		2
#define EVENTS_EVENT	3

static const char copy_header[] = "PGCOPY\n\377\r\n\0";

static int	slotno;
static ReplicaSlot *slot;
static char *replica;			/* our destination's name */
static char *appname;

/*
 * The catalog query, planned once: it runs at every change of the catalog.
 * The plan cache plans it again if replicator.replicas is replaced.
 */
static SPIPlanPtr config_plan = NULL;

static SPIPlanPtr
get_config_plan(void)
{
	/* the scan's condition (launcher.c): a slave, and we are its master */
	const char *sql = "SELECT r.conninfo, r.changed_by, r.incarnation::pg_catalog.text,"
		" n.name, n.epoch FROM replicator.replicas r"
		" LEFT JOIN replicator.node_state n ON true"
		" WHERE r.name OPERATOR(pg_catalog.=) $1 AND r.enabled AND r.stream_events AND r.invalid_reason IS NULL"
		" AND r.role OPERATOR(pg_catalog.=) 'slave'"
		" AND (n.name IS NULL OR (n.master OPERATOR(pg_catalog.=) n.name"
		"  AND r.name OPERATOR(pg_catalog.<>) n.name))";
	Oid			text_arg[1] = {TEXTOID};

	if (config_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, 1, text_arg);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		config_plan = plan;
	}
	return config_plan;
}

/* What the catalog says about our destination. */
typedef struct ReplicaConfig
{
	bool		exists;
	char	   *conninfo;
	bool		require_password;
	Oid			nspid;			/* the event source's schema */

	/*
	 * Which extension, events table and replica these are: a drop and
	 * create of any of them (in one transaction, or by a restore) makes a
	 * running worker start over with full checks, as does a new epoch.
	 */
	Oid			extoid;
	Oid			events_relid;
	char	   *incarnation;

	/* this node, if in a topology (NULL: a standalone source) */
	char	   *node_name;
	int64		epoch;
	char	   *topology;		/* what attach_to_master() pushes */
} ReplicaConfig;

/*
 * Our state in shared memory.  We are the only writer of our slot's state
 * while we hold the slot, so it may be read without the lock, which is
 * taken only for a change.
 */
static void
report(ReplicaState state)
{
	if (slot->state == state)
		return;
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->state = state;
	LWLockRelease(ReplicatorState->lock);
}

static void
report_error(const char *what)
{
	ereport(LOG, (errmsg("replicator: destination \"%s\": %s", replica, what)));
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	strlcpy(slot->last_error, what, REPLICA_ERROR_LEN);
	slot->last_error_at = GetCurrentTimestamp();
	slot->state = REPLICA_DISCONNECTED;
	LWLockRelease(ReplicatorState->lock);
}

static void
stream_detach(int code, Datum arg)
{
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	if (slot->pid == MyProcPid)
	{
		slot->pid = 0;
		slot->latch = NULL;
		if (slot->state != REPLICA_INVALID)
			slot->state = REPLICA_STOPPED;
	}
	if (ReplicatorState->launcher_latch)
		SetLatch(ReplicatorState->launcher_latch);
	LWLockRelease(ReplicatorState->lock);
}

/* Leave for good: the catalog no longer wants this destination streamed. */
static void
stop_streaming(const char *why)
{
	ereport(LOG, (errmsg("replicator: stopped streaming to \"%s\": %s", replica, why)));
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->wanted = false;
	LWLockRelease(ReplicatorState->lock);
	proc_exit(0);
}

static void
sleep_ms(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* Exponential backoff with jitter, so many workers do not retry in step. */
static void
backoff(int attempt)
{
	long		ms = Min(MAX_BACKOFF_MS, 500L << Min(attempt, 6));

	ms = (long) (ms * (0.75 + 0.5 * pg_prng_double(&pg_global_prng_state)));
	sleep_ms(ms);
}

/*
 * Read our row of the catalog; needs a local transaction.  The conninfo is
 * allocated in the current memory context.
 */
static ReplicaConfig
read_config(void)
{
	ReplicaConfig config = {0};
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext spi;
	ReplicatorExtension ext;
	Datum		args[1];

	/* checked first: a dropped extension never reaches a saved plan */
	if (!replicator_extension(&ext))
		return config;
	/* a new library before ALTER EXTENSION UPDATE: say so, and retry later */
	replicator_require_sql_version(ext.version);
	args[0] = CStringGetTextDatum(replica);
	if (SPI_execute_plan(get_config_plan(), args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.replicas");
	if (SPI_processed != 1)
		return config;
	config.exists = true;
	/* SPI calls return in SPI's context, which ends with the transaction */
	spi = MemoryContextSwitchTo(caller);
	config.conninfo = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	config.incarnation = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	config.node_name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
	if (config.node_name)
	{
		bool		isnull;

		config.epoch = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	}
	MemoryContextSwitchTo(spi);
	config.extoid = ext.oid;
	config.events_relid = get_relname_relid("events", ext.nspid);
	/* decided now, from who last changed the conninfo: not stored */
	config.require_password =
		replicator_replica_requires_password(SPI_getvalue(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 2));
	config.nspid = ext.nspid;
	if (config.node_name)
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		/* SPI_getvalue()s above are done: the tuple table may go */
		config.topology = replicator_topology_push_document();
		MemoryContextSwitchTo(spi);
	}
	return config;
}

/* Update our replica's catalog row: $1 is its name, $2 the value. */
static void
update_catalog(const char *sql, const char *value)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		args[2];

	replicator_begin_local();
	args[0] = CStringGetTextDatum(replica);
	args[1] = CStringGetTextDatum(value);
	if (SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update replicator.replicas");
	replicator_end_local();
}

/* The destination failed validation: say why in the catalog and stop. */
static void
mark_invalid(const char *reason)
{
	report_error(reason);
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->state = REPLICA_INVALID;
	LWLockRelease(ReplicatorState->lock);

	/*
	 * Not once this node became a slave meanwhile (its replicas are then its
	 * master's, pushed to it): a stale master's worker must not leave a mark
	 * that outlives the push and keeps the replica from being streamed to
	 * when this node is master again.
	 */
	update_catalog("UPDATE replicator.replicas SET invalid_reason = $2,"
				   " invalid_since = pg_catalog.now() WHERE name OPERATOR(pg_catalog.=) $1"
				   " AND NOT EXISTS (SELECT FROM replicator.node_state n"
				   "  WHERE n.master OPERATOR(pg_catalog.<>) n.name)", reason);
	stop_streaming("destination is invalid until replicator.resume_replica() is called");
}

/* id, ts and where its COPY row ends, of each event of the batch being read */
static Datum *ids = NULL;
static Datum *tss = NULL;
static int *ends = NULL;
static int	row_capacity = 0;

/* elems as the binary send form of an array, for a parameter of the INSERT */
static bytea *
array_param(Datum *elems, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	ArrayType  *array;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	array = construct_array(elems, n, elemtype, typlen, typbyval, typalign);
	return OidSendFunctionCall(F_ARRAY_SEND, PointerGetDatum(array));
}

/*
 * Open nspid.events and its primary key for reading.  The worker reads with
 * an index scan of its own rather than a query: on a live stream a batch is
 * one or two rows, and a query's executor start and portal cost more than
 * the rows do.  NULL if events is no longer the table expected_relid (the
 * extension was dropped and created again).
 */
static Relation
open_events(Oid nspid, Oid expected_relid, Relation *pkey)
{
	Oid			relid = get_relname_relid("events", nspid);
	Relation	rel;
	TupleDesc	desc;
	Oid			pkeyid;

	if (relid != expected_relid)
		return NULL;
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s.events\" does not exist", get_namespace_name(nspid))));
	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	pkeyid = RelationGetPrimaryKeyIndex(rel);
	*pkey = OidIsValid(pkeyid) ? index_open(pkeyid, AccessShareLock) : NULL;

	/* the extension's own definition, which its guards keep */
	if (desc->natts < EVENTS_EVENT ||
		TupleDescAttr(desc, EVENTS_ID - 1)->atttypid != INT8OID ||
		TupleDescAttr(desc, EVENTS_TS - 1)->atttypid != TIMESTAMPTZOID ||
		TupleDescAttr(desc, EVENTS_EVENT - 1)->atttypid != JSONBOID ||
		*pkey == NULL || (*pkey)->rd_index->indnatts != 1 ||
		(*pkey)->rd_index->indkey.values[0] != EVENTS_ID)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("table \"%s\" is not the event source's events table",
						RelationGetRelationName(rel)),
				 errdetail("Expected columns id bigint, ts timestamptz and event jsonb, with the primary key on id.")));
	return rel;
}

typedef enum ReadResult
{
	READ_NOTHING,				/* nothing new */
	READ_BATCH,
	READ_REPLACED				/* events is another table now */
} ReadResult;

/*
 * Read the next batch after position into batch as binary COPY (and, when
 * small, as INSERT parameters).  Needs a local transaction and its
 * snapshot.  Between rows the batches under way in apply move on.
 *
 * *commit_lsn: where the WAL must be flushed before the batch may leave:
 * the end of the latest commit record of its events' transactions that
 * committed asynchronously, InvalidXLogRecPtr if none did.  Commits that
 * waited for their flush record no LSN in the commit log, so the live path
 * (synchronous_commit on) costs one commit-log lookup per transaction,
 * usually cached by the visibility check just made, and no flush.
 */
static ReadResult
read_batch(Oid nspid, Oid events_relid, int64 position, Batch *batch, ApplySet *apply,
		   XLogRecPtr *commit_lsn)
{
	int			limit = replicator_max_events_per_write;
	Relation	rel;
	Relation	pkey;
	IndexScanDesc scan;
	TupleTableSlot *row;
	ScanKeyData key;
	FmgrInfo	jsonb_send_info;
	int			n = 0;
	Datum		events[INSERT_MAX_EVENTS];
	bool		have_next = false;
	TimestampTz next_ts = 0;
	int			keep;
	int			first_event_len = 0;
	TransactionId last_xmin = InvalidTransactionId;

	fmgr_info(F_JSONB_SEND, &jsonb_send_info);

	/*
	 * Per-event arrays live as long as the worker: allocated per batch, they
	 * made malloc grow and trim its heap at every wakeup.
	 */
	if (row_capacity < limit + 1)
	{
		if (ids)
		{
			pfree(ids);
			pfree(tss);
			pfree(ends);
		}
		ids = MemoryContextAlloc(TopMemoryContext, sizeof(Datum) * (limit + 1));
		tss = MemoryContextAlloc(TopMemoryContext, sizeof(Datum) * (limit + 1));
		ends = MemoryContextAlloc(TopMemoryContext, sizeof(int) * (limit + 1));
		row_capacity = limit + 1;
	}

	initStringInfo(&batch->copy);
	appendBinaryStringInfo(&batch->copy, copy_header, sizeof(copy_header) - 1);
	pq_sendint32(&batch->copy, 0);	/* flags */
	pq_sendint32(&batch->copy, 0);	/* header extension length */

	*commit_lsn = InvalidXLogRecPtr;

	/* id > position, in id order: ids are gapless, so the first is ours */
	rel = open_events(nspid, events_relid, &pkey);
	if (rel == NULL)
		return READ_REPLACED;
	row = table_slot_create(rel, NULL);
	ScanKeyInit(&key, 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(position));
	scan = index_beginscan(rel, pkey, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);

	while (index_getnext_slot(scan, ForwardScanDirection, row))
	{
		int64		id;
		TimestampTz ts;
		Datum		value;
		bool		isnull;
		bytea	   *event;
		TransactionId xmin;

		CHECK_FOR_INTERRUPTS();
		if (n % 256 == 255)
			replicator_apply_poll(apply);
		id = DatumGetInt64(slot_getattr(row, EVENTS_ID, &isnull));
		ts = DatumGetTimestampTz(slot_getattr(row, EVENTS_TS, &isnull));
		if (n == limit || (n > 0 && batch->copy.len >= BATCH_MAX_BYTES))
		{
			/* the first event not taken: does its call continue ours? */
			have_next = true;
			next_ts = ts;
			break;
		}
		if (id != position + n + 1)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("events has a gap: id " INT64_FORMAT " follows " INT64_FORMAT,
							id, position + n)));
		/* HeapTupleHeaderGetXmin: a frozen xmin may be gone from the clog */
		xmin = HeapTupleHeaderGetXmin(ExecFetchSlotHeapTuple(row, false, NULL)->t_data);
		if (xmin != last_xmin)
		{
			XLogRecPtr	lsn = TransactionIdGetCommitLSN(xmin);

			if (lsn > *commit_lsn)
				*commit_lsn = lsn;
			last_xmin = xmin;
		}

		value = slot_getattr(row, EVENTS_EVENT, &isnull);
		event = SendFunctionCall(&jsonb_send_info, value);

		pq_sendint16(&batch->copy, 3);
		pq_sendint32(&batch->copy, 8);
		pq_sendint64(&batch->copy, id);
		pq_sendint32(&batch->copy, 8);
		pq_sendint64(&batch->copy, ts);
		pq_sendint32(&batch->copy, VARSIZE(event) - VARHDRSZ);
		appendBinaryStringInfo(&batch->copy, VARDATA(event), VARSIZE(event) - VARHDRSZ);
		if (n == 0)
			first_event_len = VARSIZE(event) - VARHDRSZ;
		pfree(event);

		ids[n] = Int64GetDatum(id);
		tss[n] = TimestampTzGetDatum(ts);
		/* the slot's values point into a shared buffer: keep a copy */
		if (n < INSERT_MAX_EVENTS)
			events[n] = datumCopy(value, false, -1);
		ends[n] = batch->copy.len;
		n++;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(row);
	index_close(pkey, AccessShareLock);
	table_close(rel, AccessShareLock);

	if (n == 0)
		return READ_NOTHING;

	/*
	 * End at the last call boundary: if the event after the batch shares the
	 * last one's ts, drop the tail of that call, unless the call fills the
	 * whole batch.
	 */
	keep = n;
	if (have_next && next_ts == DatumGetTimestampTz(tss[n - 1]))
	{
		while (keep > 0 && DatumGetTimestampTz(tss[keep - 1]) == next_ts)
			keep--;
		if (keep == 0)
			keep = n;
	}
	batch->copy.len = ends[keep - 1];
	pq_sendint16(&batch->copy, -1);	/* trailer */
	batch->first_id = DatumGetInt64(ids[0]);
	batch->last_id = DatumGetInt64(ids[keep - 1]);
	batch->count = keep;
	batch->more = have_next;
	memset(batch->params, 0, sizeof(batch->params));
	batch->single = (keep == 1 && batch->copy.len <= INSERT_MAX_BYTES);
	if (batch->single)
	{
		/*
		 * The common case when streaming live: plain values, no arrays.  The
		 * event's send form is the end of its COPY row.
		 */
		batch->params[0] = OidSendFunctionCall(F_INT8SEND, ids[0]);
		batch->params[1] = OidSendFunctionCall(F_TIMESTAMPTZ_SEND, tss[0]);
		batch->params[2] = palloc(VARHDRSZ + first_event_len);
		SET_VARSIZE(batch->params[2], VARHDRSZ + first_event_len);
		memcpy(VARDATA(batch->params[2]), batch->copy.data + ends[0] - first_event_len,
			   first_event_len);
	}
	else if (keep <= INSERT_MAX_EVENTS && batch->copy.len <= INSERT_MAX_BYTES)
	{
		batch->params[0] = array_param(ids, keep, INT8OID);
		batch->params[1] = array_param(tss, keep, TIMESTAMPTZOID);
		batch->params[2] = array_param(events, keep, JSONBOID);
	}
	return READ_BATCH;
}

/*
 * NULL if config is of the extension, replica and epoch we connected for;
 * otherwise why the stream starts over with every check.
 */
static const char *
changed_since_connect(const ReplicaConfig *config, const ReplicaConfig *connected)
{
	if (config->extoid != connected->extoid ||
		config->events_relid != connected->events_relid ||
		strcmp(config->incarnation, connected->incarnation) != 0)
		return "the extension or the replica was dropped and created again: starting over with full checks";
	if ((config->node_name == NULL) != (connected->node_name == NULL) ||
		config->epoch != connected->epoch)
		return "this database joined a topology or its epoch changed: starting over with full checks";
	return NULL;
}

/* A batch has committed on the destination: the position advances. */
static void
batch_committed(int64 last_id, int count, int64 bytes)
{
	TimestampTz behind_since = replicator_lag_batch_committed(slot, last_id);

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->position = last_id;
	slot->behind_since = behind_since;
	slot->events_sent += count;
	slot->bytes_sent += bytes;
	slot->last_contact = GetCurrentTimestamp();
	slot->failed_starts = 0;
	LWLockRelease(ReplicatorState->lock);
}

/*
 * A node's slave hears from us at least this often (while streaming, as
 * soon as the sessions are idle; past the limit, no new batch goes out
 * before it): failover judges lag tolerance by the last word it had.
 */
#define HEARTBEAT_MS			1000
#define HEARTBEAT_LIMIT_MS		5000

/*
 * A node's duties, when the sessions are idle and they are due: push a
 * changed topology (attach again: same epoch, new topology) and the
 * heartbeat.  NULL or the error.
 */
static char *
node_duties(ApplySet *apply, const ReplicaConfig *connected, const char *topology,
			bool *push_due, TimestampTz *last_heartbeat)
{
	PGconn	   *conn;
	int64		position;
	int64		max_id;
	TimestampTz max_ts;
	TimestampTz behind_since = 0;
	char	   *error = NULL;

	if (!replicator_apply_idle(apply) ||
		!(*push_due || TimestampDifferenceExceeds(*last_heartbeat, GetCurrentTimestamp(), HEARTBEAT_MS)))
		return NULL;
	conn = replicator_apply_idle_conn(apply);
	position = replicator_apply_sent_upto(apply);

	if (*push_due)
	{
		NodeAttach attach;
		int64		remote_max;
		int64		diverged;

		attach.params[0] = connected->node_name;
		attach.params[1] = psprintf(INT64_FORMAT, connected->epoch);
		attach.params[2] = replica;
		attach.params[3] = topology;
		if (!replicator_attach_remote(conn, &attach, &remote_max, &diverged, &error, NULL))
			return psprintf("attach_to_master: %s", error);
		*push_due = false;
	}

	replicator_begin_local();
	max_id = replicator_local_max_id(connected->nspid, &max_ts);
	if (position < max_id)
		behind_since = replicator_event_ts(connected->nspid, position + 1);
	replicator_end_local();
	if ((error = replicator_heartbeat_remote(conn, connected->epoch, max_id, behind_since)) != NULL)
		return psprintf("master_heartbeat: %s", error);
	*last_heartbeat = GetCurrentTimestamp();
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->last_contact = *last_heartbeat;
	LWLockRelease(ReplicatorState->lock);
	return NULL;
}

/*
 * Stream until a session fails; returns the error.  is_node: the
 * destination is a node attached as our slave (heartbeats, topology pushes).
 *
 * Pipelined: while the destination applies batches, the next is read here.
 * The read happens in a short local transaction, and any wait for the
 * destination only after it, so no local lock is held while waiting.  A
 * batch read ahead of one that then fails is dropped: the caller reconnects
 * and reads the position again.
 */
static char *
stream(ApplySet *apply, const ReplicaConfig *connected, bool is_node)
{
	MemoryContext conn_cxt = CurrentMemoryContext;
	MemoryContext batch_cxt = AllocSetContextCreate(conn_cxt, "replicator batch",
													ALLOCSET_DEFAULT_SIZES);
	TimestampTz last_config_check = 0;
	uint64		seen_generation = 0;
	uint64		generation;
	bool		read_due = true;
	char	   *topology = connected->topology;
	bool		push_due = false;
	TimestampTz last_heartbeat = 0;

	for (;;)
	{
		MemoryContext old;
		Batch		batch;
		bool		have_batch;
		ReadResult	read;
		XLogRecPtr	commit_lsn;
		ReplicaConfig config;
		char	   *error;
		const char *why;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (is_node)
		{
			if ((error = node_duties(apply, connected, topology, &push_due, &last_heartbeat)) != NULL)
				return error;
			if (!replicator_apply_idle(apply) &&
				TimestampDifferenceExceeds(last_heartbeat, GetCurrentTimestamp(), HEARTBEAT_LIMIT_MS))
			{
				/* overdue: let the sessions drain first */
				bool		woken = false;

				if ((error = replicator_apply_wait(apply, &woken)) != NULL)
					return error;
				read_due |= woken;
				continue;
			}
		}

		/*
		 * After a read that reached the end, nothing new can be there until
		 * a commit sets the latch (or poll_interval passes): wait, and let
		 * the destination have the CPU meanwhile.
		 */
		if (!read_due)
		{
			if (replicator_apply_idle(apply))
			{
				report(REPLICA_STREAMING);
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 is_node ? Min(replicator_poll_interval, HEARTBEAT_MS) :
								 replicator_poll_interval,
								 PG_WAIT_EXTENSION);
				read_due = true;
			}
			else if ((error = replicator_apply_wait(apply, &read_due)) != NULL)
				return error;
			continue;
		}

		/* the latch is reset before reading, so no commit goes unnoticed */
		ResetLatch(MyLatch);
		MemoryContextReset(batch_cxt);
		replicator_begin_local();

		/*
		 * A committed pause, drop or DROP EXTENSION must stop us before the
		 * next batch: the catalog is read again whenever a change to it has
		 * committed (each bumps the generation), and once per poll_interval
		 * as a backstop.
		 */
		generation = replicator_catalog_generation(MyDatabaseId);
		if (generation != seen_generation ||
			TimestampDifferenceExceeds(last_config_check, GetCurrentTimestamp(),
									   replicator_poll_interval))
		{
			old = MemoryContextSwitchTo(batch_cxt);
			config = read_config();
			MemoryContextSwitchTo(old);
			if (!config.exists)
			{
				replicator_end_local();
				stop_streaming("replica dropped, paused or invalid, or extension dropped");
			}
			if ((why = changed_since_connect(&config, connected)) != NULL)
			{
				replicator_end_local();
				return MemoryContextStrdup(conn_cxt, why);
			}
			/* a changed topology goes to the node once the sessions are idle */
			if (is_node && config.topology != NULL && strcmp(config.topology, topology) != 0)
			{
				topology = MemoryContextStrdup(conn_cxt, config.topology);
				push_due = true;
			}
			seen_generation = generation;
			last_config_check = GetCurrentTimestamp();
		}
		old = MemoryContextSwitchTo(batch_cxt);

		/*
		 * The table is checked at every read too: a drop and create
		 * committed after the generation was read is seen here.
		 */
		read = read_batch(connected->nspid, connected->events_relid,
						  replicator_apply_sent_upto(apply), &batch, apply, &commit_lsn);
		MemoryContextSwitchTo(old);
		replicator_end_local();
		MemoryContextSwitchTo(conn_cxt);
		if (read == READ_REPLACED)
			return pstrdup("the extension was dropped and created again: starting over with full checks");
		have_batch = (read == READ_BATCH);
		if (have_batch)
			replicator_lag_batch_read(slot, batch.first_id, batch.last_id,
									  DatumGetTimestampTz(tss[0]), batch.more);
		else
			replicator_lag_read_nothing(slot);

		/*
		 * Durable before sent.  Per batch, since any batch may hold an
		 * asynchronous commit; a no-op when its commits were flushed.
		 */
		if (have_batch && !XLogRecPtrIsInvalid(commit_lsn))
			XLogFlush(commit_lsn);

		/* read again at once only if rows beyond this batch were seen */
		read_due = have_batch && batch.more;
		if (!have_batch)
			continue;

		report(batch.more ? REPLICA_CATCHING_UP : REPLICA_STREAMING);
		while (!replicator_apply_can_take(apply, &batch))
		{
			bool		woken = false;

			if ((error = replicator_apply_wait(apply, &woken)) != NULL)
				return error;
			read_due |= woken;
		}

		/*
		 * A batch read while others applied goes out the moment they are
		 * done: a heartbeat due goes first, or a node behind by a backlog
		 * would hear nothing of how far behind it is.
		 */
		if (is_node &&
			(error = node_duties(apply, connected, topology, &push_due, &last_heartbeat)) != NULL)
			return error;
		if ((error = replicator_apply_send(apply, &batch)) != NULL)
			return error;
	}
}

/*
 * If the destination has the extension, attach to it as its master (a
 * standalone source does not: it has no epoch to give, and the checks refuse
 * such a destination).  NULL, or why not (*transient: for now).
 */
static char *
attach_node(PGconn *conn, const ReplicaConfig *config, NodeAttach *attach, bool *is_node,
			bool *transient)
{
	char	   *error = NULL;
	char	   *version = replicator_remote_extension_version(conn, &error, transient);
	int64		max_id;
	int64		diverged;

	*is_node = false;
	if (error != NULL)
		return error;
	if (version == NULL)
		return NULL;			/* plain PostgreSQL: a destination only */
	*transient = false;
	/* slate's "no source objects" check refuses it, saying what to do */
	if (config->node_name == NULL)
		return NULL;
	if (strcmp(version, REPLICATOR_SQL_VERSION) != 0)
	{
		*transient = true;
		return psprintf("the destination's extension is at version %s, this node's at %s: run ALTER EXTENSION replicator UPDATE there",
						version, REPLICATOR_SQL_VERSION);
	}
	attach->params[0] = config->node_name;
	attach->params[1] = psprintf(INT64_FORMAT, config->epoch);
	attach->params[2] = replica;
	attach->params[3] = config->topology;
	if (!replicator_attach_remote(conn, attach, &max_id, &diverged, &error, transient))
		return psprintf("attach_to_master: %s", error);
	*is_node = true;
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->is_node = true;
	slot->diverged += diverged;
	LWLockRelease(ReplicatorState->lock);
	if (diverged > 0)
		ereport(LOG,
				(errmsg("replicator: node \"%s\" set aside " INT64_FORMAT " events beyond the common history in its replicator.diverged_events",
						replica, diverged)));
	return NULL;
}

void
replicator_stream_main(Datum arg)
{
	uint32		generation;
	Oid			dboid;
	int			attempt = 0;
	MemoryContext conn_cxt;

	slotno = DatumGetInt32(arg);
	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(uint32));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* claim the slot, unless it was reassigned or is served already */
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot = &ReplicatorState->slots[slotno];
	if (!slot->in_use || slot->generation != generation || slot->pid != 0)
	{
		LWLockRelease(ReplicatorState->lock);
		proc_exit(0);
	}
	slot->pid = MyProcPid;
	slot->latch = MyLatch;
	slot->state = REPLICA_CONNECTING;
	dboid = slot->dboid;
	replica = MemoryContextStrdup(TopMemoryContext, slot->name);
	LWLockRelease(ReplicatorState->lock);
	before_shmem_exit(stream_detach, 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/*
	 * We run as the bootstrap superuser: a search_path that a database
	 * owner set must not choose the operators and functions of our SQL, as
	 * in PostgreSQL's logical apply worker.
	 */
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);

	replicator_begin_local();
	appname = MemoryContextStrdup(TopMemoryContext,
								  psprintf("replicator:%s:%s", get_database_name(MyDatabaseId), replica));
	replicator_end_local();
	pgstat_report_appname(appname);

	conn_cxt = AllocSetContextCreate(TopMemoryContext, "replicator connection",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		ReplicaConfig config;
		SourceFacts facts;
		DestinationInfo info;
		PGconn	   *conn;
		ApplySet   *apply;
		char	   *error;
		List	   *checks;
		bool		transient;
		bool		is_node;
		NodeAttach	attach;
		MemoryContext spi_cxt;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* everything of one connection lives in conn_cxt */
		MemoryContextReset(conn_cxt);
		replicator_begin_local();
		spi_cxt = MemoryContextSwitchTo(conn_cxt);
		config = read_config();
		if (config.exists)
			replicator_read_source_facts(config.nspid, replica, &facts);
		MemoryContextSwitchTo(spi_cxt);
		replicator_end_local();
		MemoryContextSwitchTo(conn_cxt);
		if (!config.exists)
			stop_streaming("replica dropped, paused or invalid, or extension dropped");

		report(REPLICA_CONNECTING);
		conn = replicator_remote_connect(config.conninfo, appname, REPLICATOR_SESSION_APPLY,
										 config.require_password, &error, &transient);
		if (conn == NULL)
		{
			if (!transient)
				mark_invalid(error);
			report_error(error);
			backoff(attempt++);
			continue;
		}

		/*
		 * Once it is known which database this is (never the source, nor
		 * another replica's), a node (the extension is there) becomes our
		 * slave at our epoch, setting aside what it holds beyond our
		 * history; then the checks see what it holds now.
		 *
		 * A destination that fails a check is parked until an operator acts;
		 * one whose check could not run for now (a lock timeout, a server
		 * shutting down) is tried again like a failed connection.
		 */
		checks = replicator_check_identity(conn, &facts, &info);
		error = replicator_first_failure(checks, &transient);
		is_node = false;
		if (error == NULL)
		{
			error = attach_node(conn, &config, &attach, &is_node, &transient);
			if (error != NULL)
			{
				replicator_remote_close(conn);
				if (!transient)
					mark_invalid(error);
				report_error(error);
				backoff(attempt++);
				continue;
			}
			checks = list_concat(checks, replicator_check_contents(conn, &facts, true, &info));
			error = replicator_first_failure(checks, &transient);
		}
		if (error && PQstatus(conn) == CONNECTION_OK && !transient)
		{
			ListCell   *lc;

			/* event contents go to the log only, not to the catalog */
			foreach(lc, checks)
			{
				DestinationCheck *c = lfirst(lc);

				if (!c->ok && c->contents)
					ereport(LOG,
							(errmsg("replicator: destination \"%s\": %s: %s",
									replica, c->check, c->contents)));
			}
			replicator_remote_close(conn);
			mark_invalid(error);
		}
		if (error == NULL)
		{
			if (info.created_table)
				ereport(LOG, (errmsg("replicator: created table events in destination \"%s\"", replica)));
			update_catalog("UPDATE replicator.replicas SET destination = $2"
						   " WHERE name OPERATOR(pg_catalog.=) $1"
						   " AND (destination IS NULL OR destination OPERATOR(pg_catalog.<>) $2)",
						   info.identity);
			LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
			slot->position = info.max_id;
			slot->last_contact = GetCurrentTimestamp();
			LWLockRelease(ReplicatorState->lock);
			attempt = 0;
			replicator_lag_reset();
			replicator_report_tables(conn, slot, replica);
			apply = replicator_apply_open(conn, config.conninfo, appname,
										  config.require_password, info.identity,
										  is_node ? &attach : NULL,
										  replicator_destination_sessions, info.max_id,
										  batch_committed, &error);
			if (apply != NULL)
			{
				bool		invalid;

				error = stream(apply, &config, is_node);
				invalid = replicator_apply_failed_validation(apply);
				replicator_apply_close(apply);
				if (invalid)
					mark_invalid(error);
			}
			conn = NULL;
		}
		replicator_remote_close(conn);	/* NULL if the apply set had it */
		report_error(error);
		backoff(attempt++);
	}
}
