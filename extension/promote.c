/*-------------------------------------------------------------------------
 *
 * promote.c
 *	  promote(): switchover (on the master, naming a slave) and failover
 *	  (on a slave, whose master is gone).
 *
 * Switchover loses no acknowledged event: the master is fenced first
 * (insert_events refuses, naming the candidate), every call under way
 * finishes or fails (the fence holds the id row), the candidate is waited
 * for until it holds every event, and only then takes over at the next
 * epoch; this node becomes its slave in the same transaction that ends the
 * fence.  If the candidate cannot hold every event in time, the error rolls
 * everything back and the fence goes with the transaction.  Once take_over
 * has been sent, though, the candidate may have committed it whatever
 * happens here (a cancel, a rollback, a broken connection): then the fence
 * outlives the transaction, in doubt, until the candidate's stream makes
 * this node its slave or a promote() here finishes the switchover.  A
 * master too many would take writes that end up set aside; no master only
 * waits.
 *
 * Failover is judged by what this slave last heard from its master (the
 * heartbeats of node_protocol.c) and by asking every other node it can
 * reach where it stands.  Whatever the old master held beyond this node is
 * set aside on it when the new master's stream reaches it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "connection.h"
#include "node.h"
#include "node_protocol.h"
#include "replicas.h"
#include "settings.h"
#include "shmem.h"
#include "write_guard.h"

#define PROMOTE_APPNAME "replicator:promote"
/* take_over gets at least this long, whatever the drain left */
#define TAKE_OVER_MIN_MS 5000

/* A replica's row, as a promotion needs it. */
typedef struct NodeRow
{
	char	   *name;
	char	   *conninfo;
	bool		require_password;
	char	   *role;
	bool		has_tolerance;
	int64		tolerance_us;
} NodeRow;

static bool fence_callback_registered = false;

/*
 * take_over was sent to the candidate and may have committed there: if this
 * transaction does not commit this node's demotion, the fence stays.
 */
static bool handover_sent = false;

/*
 * The fence ends with the transaction that set it: committed, this node is
 * a slave; aborted before take_over was sent, nothing changed.  Aborted
 * after, the candidate may be master already: the fence stays, in doubt.
 */
static void
unfence_at_end(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_PREPARE && handover_sent)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot PREPARE a transaction that ran a switchover")));
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		replicator_unfence(handover_sent);
		handover_sent = false;
	}
	else if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		replicator_unfence(false);
		handover_sent = false;
	}
}

/* Milliseconds left until deadline, at least floor_ms. */
static int64
ms_left(TimestampTz deadline, int64 floor_ms)
{
	return Max((deadline - GetCurrentTimestamp()) / 1000, floor_ms);
}

/*
 * A session to row's node whose every statement ends within statement_ms
 * (the startup packet's statement_timeout is 0 for all our sessions); NULL
 * and *why if it cannot be had now.
 */
static PGconn *
connect_node(NodeRow *row, int64 statement_ms, char **why)
{
	PGconn	   *volatile conn;
	PGresult   *volatile res = NULL;
	const char *ms = psprintf(INT64_FORMAT, statement_ms);

	conn = replicator_remote_connect(row->conninfo, PROMOTE_APPNAME, REPLICATOR_SESSION_QUERY,
									 row->require_password, why, NULL);
	if (conn == NULL)
		return NULL;
	PG_TRY();
	{
		res = replicator_remote_one_row(conn, "SELECT pg_catalog.set_config('statement_timeout', $1, false)",
										1, &ms, why, NULL);
	}
	PG_CATCH();
	{
		replicator_remote_close(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (res == NULL)
	{
		replicator_remote_close(conn);
		return NULL;
	}
	PQclear(res);
	return conn;
}

/* Every replica row; needs SPI. */
static List *
read_nodes(void)
{
	MemoryContext caller = CurrentMemoryContext;
	List	   *rows = NIL;
	int			ret;

	ret = replicator_spi_execute_as_owner("SELECT name, conninfo, changed_by, role,"
										  " pg_catalog.date_part('epoch', lag_tolerance) OPERATOR(pg_catalog.*) 1000000"
										  " FROM replicator.replicas WHERE stream_events ORDER BY name",
										  0, NULL, NULL, NULL, true);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.replicas: %s", SPI_result_code_string(ret));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext spi = MemoryContextSwitchTo(caller);
		NodeRow    *row = palloc0(sizeof(NodeRow));
		bool		isnull;
		Datum		tolerance;

		row->name = SPI_getvalue(tuple, desc, 1);
		row->conninfo = SPI_getvalue(tuple, desc, 2);
		row->require_password = replicator_replica_requires_password(SPI_getvalue(tuple, desc, 3));
		row->role = SPI_getvalue(tuple, desc, 4);
		tolerance = SPI_getbinval(tuple, desc, 5, &isnull);
		row->has_tolerance = !isnull;
		if (!isnull)
			row->tolerance_us = (int64) DatumGetFloat8(tolerance);
		rows = lappend(rows, row);
		MemoryContextSwitchTo(spi);
	}
	return rows;
}

static NodeRow *
find_node(List *rows, const char *name)
{
	ListCell   *lc;

	foreach(lc, rows)
		if (strcmp(((NodeRow *) lfirst(lc))->name, name) == 0)
			return lfirst(lc);
	return NULL;
}

/* The stream to name in shared memory: its position, state and kind. */
static bool
stream_position(const char *name, int64 *position, ReplicaState *state, bool *is_node)
{
	bool		found = false;

	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *slot = &ReplicatorState->slots[i];

		if (slot->in_use && slot->dboid == MyDatabaseId && strcmp(slot->name, name) == 0)
		{
			*position = slot->position;
			*state = slot->pid == 0 ? REPLICA_STOPPED : slot->state;
			*is_node = slot->is_node;
			found = slot->wanted;
		}
	}
	LWLockRelease(ReplicatorState->lock);
	return found;
}

/*
 * Another node's (name, epoch, max_id), or false if it cannot be reached
 * now (*why says why).  Each statement there is bounded by
 * replicator.connect_timeout: a node that answers the connection and then
 * stalls holds nobody up.
 */
static bool
ask_position(NodeRow *row, char **name, int64 *epoch, int64 *max_id, char **why)
{
	PGconn	   *volatile conn = connect_node(row, replicator_connect_timeout, why);
	PGresult   *volatile res = NULL;

	if (conn == NULL)
		return false;
	PG_TRY();
	{
		/* a plain destination (no extension) says only how many events it has */
		res = replicator_remote_one_row(conn,
										"SELECT CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_extension"
										"  WHERE extname OPERATOR(pg_catalog.=) 'replicator')"
										" THEN 'node' ELSE 'plain' END",
										0, NULL, why, NULL);
		if (res != NULL && strcmp(PQgetvalue(res, 0, 0), "plain") == 0)
		{
			PQclear(res);
			res = replicator_remote_one_row(conn,
											"SELECT NULL, 0, coalesce(pg_catalog.max(id), 0) FROM events",
											0, NULL, why, NULL);
		}
		else if (res != NULL)
		{
			PQclear(res);
			res = replicator_remote_one_row(conn, "SELECT name, epoch, max_id FROM replicator.node_position()",
											0, NULL, why, NULL);
		}
		if (res != NULL)
		{
			*name = PQgetisnull(res, 0, 0) ? NULL : pstrdup(PQgetvalue(res, 0, 0));
			*epoch = strtoi64(PQgetvalue(res, 0, 1), NULL, 10);
			*max_id = strtoi64(PQgetvalue(res, 0, 2), NULL, 10);
			PQclear(res);
		}
	}
	PG_FINALLY();
	{
		replicator_remote_close(conn);
	}
	PG_END_TRY();
	return res != NULL;
}

/*
 * fn(arg) with lock_timeout wait_ms.  False if a lock was not had in time:
 * that error is cleared for the caller to report in its own words, at
 * once (the transaction must not go on).
 */
static bool
within_lock_timeout(int64 wait_ms, void (*fn) (void *arg), void *arg)
{
	MemoryContext caller = CurrentMemoryContext;
	int			nestlevel = NewGUCNestLevel();
	volatile bool had = true;

	(void) set_config_option("lock_timeout", psprintf(INT64_FORMAT, Max(wait_ms, 1)),
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	PG_TRY();
	{
		fn(arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FreeErrorData(edata);
		FlushErrorState();
		had = false;
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nestlevel);
	return had;
}

static void
update_id_row(void *arg)
{
	Oid			nspid = replicator_source_namespace();

	/*
	 * An UPDATE, not FOR UPDATE: a REPEATABLE READ writer waiting for the
	 * row then fails on its new version instead of missing our commit.
	 */
	replicator_allow_next_write(get_relname_relid("id", nspid));
	PG_TRY();
	{
		*(int *) arg = replicator_spi_execute_as_owner(psprintf("UPDATE %s.id SET id = id",
																quote_identifier(get_namespace_name(nspid))),
													   0, NULL, NULL, NULL, false);
	}
	PG_FINALLY();
	{
		replicator_forbid_writes();
	}
	PG_END_TRY();
}

/*
 * Block insert_events for good in this transaction: take the id row, within
 * wait_ms of the switchover's timeout_ms (a transaction that called
 * insert_events and sits idle holds it).
 */
static void
hold_id_row(const char *candidate, int64 wait_ms, int64 timeout_ms)
{
	int			ret = 0;

	if (!within_lock_timeout(wait_ms, update_id_row, &ret))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("switchover to \"%s\" abandoned: the insert_events calls under way did not end within " INT64_FORMAT " ms",
						candidate, timeout_ms),
				 errdetail("A transaction that called insert_events holds the id row until it ends. Nothing changed: this node is master again."),
				 errhint("pg_stat_activity shows the sessions idle in transaction.")));
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "could not lock the id row: %s", SPI_result_code_string(ret));
}

static int64
source_max_id(void)
{
	TimestampTz ts;

	return replicator_local_max_id(replicator_source_namespace(), &ts);
}

/* This master becomes the slave of the new one (after take_over there). */
static void
become_slave(NodeState *state, const char *master, int64 epoch, int64 first_id)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT8OID, TEXTOID};
	Datum		values[4] = {Int64GetDatum(epoch), CStringGetTextDatum(master),
		Int64GetDatum(first_id),
	CStringGetTextDatum(psprintf("from \"%s\"", state->name))};

	if (replicator_spi_execute_as_owner("UPDATE replicator.node_state SET epoch = $1, master = $2,"
										" topology_md5 = NULL",
										2, types, values, NULL, false) != SPI_OK_UPDATE ||
		replicator_spi_execute_as_owner("INSERT INTO replicator.epochs (epoch, master, first_id, how, detail)"
										" VALUES ($1, $2, $3, 'switchover', $4)",
										4, types, values, NULL, false) != SPI_OK_INSERT ||
		replicator_spi_execute_as_owner("UPDATE replicator.replicas SET role = 'slave'"
										" WHERE role OPERATOR(pg_catalog.=) 'master'",
										0, NULL, NULL, NULL, false) != SPI_OK_UPDATE ||
		replicator_spi_execute_as_owner("UPDATE replicator.replicas SET role = 'master',"
										" invalid_reason = NULL, invalid_since = NULL"
										" WHERE name OPERATOR(pg_catalog.=) $2",
										2, types, values, NULL, false) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the switchover");
	replicator_request_rescan_at_commit();
	ereport(LOG,
			(errmsg("replicator: node \"%s\" handed over to \"%s\" at epoch " INT64_FORMAT " after event id " INT64_FORMAT,
					state->name, master, epoch, first_id - 1)));
}

/*
 * Whether a take_over the candidate was asked for committed there: ask it
 * anew once the session that ran it (remote_pid) has ended, so that the
 * answer cannot change afterwards, and by its history of epochs, which
 * keeps the switchover however far it has moved on since.  False: it
 * cannot be asked now.
 */
static bool
took_over(NodeRow *target, const char *from_master, int64 epoch, int64 first_id, int remote_pid,
		  bool *committed)
{
	char	   *why;
	PGconn	   *volatile conn = connect_node(target, replicator_connect_timeout, &why);
	volatile bool known = false;
	const char *params[1];
	const char *history[4];

	if (conn == NULL)
		return false;
	params[0] = psprintf("%d", remote_pid);
	PG_TRY();
	{
		/* a terminated session rolls back, or has committed: wait for its end */
		PGresult   *res = replicator_remote_one_row(conn, "SELECT pg_catalog.pg_terminate_backend($1::pg_catalog.int4, 5000)",
													1, params, &why, NULL);

		if (res != NULL)
		{
			PQclear(res);
			res = replicator_remote_one_row(conn, "SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity"
											" WHERE pid OPERATOR(pg_catalog.=) $1::pg_catalog.int4)",
											1, params, &why, NULL);
		}
		if (res != NULL && strcmp(PQgetvalue(res, 0, 0), "t") == 0)
		{
			PQclear(res);
			/* its history, not its state: it may have moved on since */
			history[0] = psprintf(INT64_FORMAT, epoch);
			history[1] = target->name;
			history[2] = psprintf("from \"%s\"", from_master);
			history[3] = psprintf(INT64_FORMAT, first_id);
			res = replicator_remote_one_row(conn, "SELECT EXISTS (SELECT FROM replicator.epochs e"
											" WHERE e.epoch OPERATOR(pg_catalog.=) $1::pg_catalog.int8"
											" AND e.master OPERATOR(pg_catalog.=) $2"
											" AND e.how OPERATOR(pg_catalog.=) 'switchover'"
											" AND e.detail OPERATOR(pg_catalog.=) $3"
											" AND e.first_id OPERATOR(pg_catalog.=) $4::pg_catalog.int8)",
											4, history, &why, NULL);
			if (res != NULL)
			{
				*committed = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
				known = true;
			}
		}
		if (res != NULL)
			PQclear(res);
	}
	PG_FINALLY();
	{
		replicator_remote_close(conn);
	}
	PG_END_TRY();
	return known;
}

/*
 * The candidate takes over at epoch: true once it has (or had already, in
 * an earlier call whose outcome was in doubt).  An error if it refused, or
 * did not within wait_ms: then nothing changed there.  False if the outcome
 * cannot be known now (the fence stays, in doubt).
 */
static bool
take_over(NodeRow *target, NodeState *state, int64 epoch, int64 max_id, int64 wait_ms)
{
	char	   *error;
	PGconn	   *volatile conn = connect_node(target, wait_ms, &error);
	volatile bool broke = false;
	int			remote_pid;
	bool		committed = false;
	const char *params[3];

	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("switchover to \"%s\" abandoned: %s", target->name, error)));
	remote_pid = PQbackendPID(conn);
	params[0] = psprintf(INT64_FORMAT, epoch);
	params[1] = state->name;
	params[2] = psprintf(INT64_FORMAT, max_id);
	PG_TRY();
	{
		PGresult   *res;

		/* from here on, an abort leaves this node fenced */
		handover_sent = true;
		res = replicator_remote_one_row(conn, "SELECT replicator.take_over($1::pg_catalog.int8, $2, $3::pg_catalog.int8)",
										3, params, &error, NULL);
		if (res != NULL)
			PQclear(res);
		else if (PQstatus(conn) == CONNECTION_OK)
		{
			/* refused, or cancelled by statement_timeout: rolled back there */
			handover_sent = false;
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("switchover to \"%s\" abandoned: it refused: %s", target->name, error),
					 errdetail("Nothing changed: this node is master again.")));
		}
		else
			broke = true;
	}
	PG_FINALLY();
	{
		replicator_remote_close(conn);
	}
	PG_END_TRY();
	if (!broke)
		return true;
	if (!handover_sent)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("switchover to \"%s\" abandoned: %s", target->name, error),
				 errdetail("It was not asked to take over. Nothing changed: this node is master again.")));

	/* the connection broke: did it take over? */
	if (!took_over(target, state->name, epoch, max_id + 1, remote_pid, &committed))
		return false;
	if (!committed)
	{
		handover_sent = false;
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("switchover to \"%s\" abandoned: %s", target->name, error),
				 errdetail("It did not take over. Nothing changed: this node is master again.")));
	}
	return true;
}

static int64
switchover(NodeState *state, const char *name, int64 timeout_ms, TimestampTz deadline)
{
	List	   *rows = read_nodes();
	NodeRow    *target = find_node(rows, name);
	int64		epoch = state->epoch + 1;
	int64		max_id;
	int64		position = -1;
	ReplicaState stream_state = REPLICA_STOPPED;
	bool		is_node = false;

	/* the fence follows the top-level transaction only */
	if (IsSubTransaction())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("a switchover cannot run inside a subtransaction"),
				 errdetail("A savepoint or an exception block could undo this node's demotion while the candidate stays master.")));
	if (target == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("replica \"%s\" does not exist", name)));
	if (strcmp(name, state->name) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is the master already", name)));
	if (!stream_position(name, &position, &stream_state, &is_node) || !is_node)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("\"%s\" cannot become master: %s", name,
						!is_node && position >= 0 ?
						"its database does not have the extension (a plain destination)" :
						"it is not being streamed to (paused, invalid, or not reached yet)"),
				 errhint("replicator.replica_status says how each replica stands.")));

	/* fence, then wait for every insert_events under way */
	if (!fence_callback_registered)
	{
		RegisterXactCallback(unfence_at_end, NULL);
		fence_callback_registered = true;
	}
	/* a switchover in doubt stays so until settled: take_over may have committed */
	handover_sent = replicator_fence(name, state->epoch);
	hold_id_row(name, ms_left(deadline, 1), timeout_ms);
	max_id = source_max_id();

	/* drain: the candidate's stream reaches max_id */
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (!stream_position(name, &position, &stream_state, &is_node))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("switchover to \"%s\" abandoned: its stream stopped", name)));
		if (position >= max_id)
			break;
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("switchover to \"%s\" abandoned: it did not hold every event within " INT64_FORMAT " ms",
							name, timeout_ms),
					 errdetail("It holds " INT64_FORMAT " of " INT64_FORMAT " events (stream %s). Nothing changed: this node is master again.",
							   Max(position, 0), max_id, replicator_replica_state_name(stream_state)),
					 errhint("replicator.replica_status says why it lags; resume it, or promote another slave.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	if (!take_over(target, state, epoch, max_id, ms_left(deadline, TAKE_OVER_MIN_MS)))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("switchover to \"%s\" in doubt: the connection broke while it took over, and it cannot be asked now", name),
				 errdetail("This node stays fenced: it takes no writes until \"%s\"'s stream makes it a slave, or a switchover finishes.", name),
				 errhint("Run replicator.promote('%s') here again once \"%s\" can be reached. If it is gone for good and never took over, a restart of this server lifts the fence.", name, name)));
	become_slave(state, name, epoch, max_id + 1);
	return max_id;
}

typedef struct NodeStateLock
{
	NodeState  *state;
	bool		found;
} NodeStateLock;

static void
read_node_state_for_update(void *arg)
{
	NodeStateLock *lock = arg;

	lock->found = replicator_read_node_state(lock->state, true);
}

/*
 * node_state, locked within wait_ms: an attach_to_master waiting for a
 * session that holds the id table holds the row meanwhile.  candidate is
 * the switchover's, NULL for a failover.
 */
static bool
lock_node_state_within(NodeState *state, const char *candidate, int64 wait_ms)
{
	NodeStateLock lock = {state, false};

	if (!within_lock_timeout(wait_ms, read_node_state_for_update, &lock))
	{
		/* as the fence would say once the row is had */
		if (candidate != NULL)
			replicator_refuse_if_in_doubt(candidate);
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 candidate != NULL ?
				 errmsg("switchover to \"%s\" abandoned: this node's topology state stayed locked for " INT64_FORMAT " ms", candidate, wait_ms) :
				 errmsg("failover abandoned: this node's topology state stayed locked for " INT64_FORMAT " ms", wait_ms),
				 errdetail("Another promote(), or a master making this node its slave, holds replicator.node_state. Nothing changed."),
				 errhint("pg_stat_activity shows who waits for what; a master's attach waits while a session holds the id table.")));
	}
	return lock.found;
}

static void
lock_event_source(void *arg)
{
	replicator_lock_event_source();
}

/*
 * Stop the former master's stream here, at a batch boundary, within
 * wait_ms: a session of it left in a transaction (its master stopped
 * rather than gone, or gone without a word over a unix socket) holds the
 * events table until its server notices.
 */
static void
lock_event_source_within(int64 wait_ms, int64 timeout_ms)
{
	if (!within_lock_timeout(wait_ms, lock_event_source, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("failover abandoned: sessions of the former master still hold this node's events after " INT64_FORMAT " ms", timeout_ms),
				 errdetail("Nothing changed. Their server closes them once it notices the master is gone."),
				 errhint("To go on now, end them: SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'replicator:%%' AND datname = current_database();")));
}

static int64
failover(NodeState *state, bool force, int64 timeout_ms, TimestampTz deadline)
{
	List	   *rows = read_nodes();
	NodeRow    *self = find_node(rows, state->name);
	int64		max_id = source_max_id();
	StringInfoData reasons;
	ListCell   *lc;
	int64		epoch = state->epoch + 1;

	initStringInfo(&reasons);

	/* how far behind this node was when the master last spoke */
	if (self != NULL && self->has_tolerance)
	{
		if (!state->has_contact)
			appendStringInfo(&reasons, "This node has had no word from master \"%s\" at epoch " INT64_FORMAT ". ",
							 state->master, state->epoch);
		else if (self->tolerance_us == 0 &&
				 (state->contact_lag_events > 0 || max_id < state->contact_master_max_id))
			appendStringInfo(&reasons, "At its last contact with the master (%s) this node lacked " INT64_FORMAT " events, and its lag tolerance is 0. ",
							 timestamptz_to_str(state->contact_at),
							 Max(state->contact_lag_events, state->contact_master_max_id - max_id));
		else if (state->contact_lag_us > self->tolerance_us)
			appendStringInfo(&reasons, "Its lag at its last contact with the master (%s) was %.3f s, above its lag tolerance of %.3f s. ",
							 timestamptz_to_str(state->contact_at),
							 state->contact_lag_us / 1e6, self->tolerance_us / 1e6);
	}

	/* where the others stand */
	foreach(lc, rows)
	{
		NodeRow    *row = lfirst(lc);
		char	   *other;
		int64		other_epoch;
		int64		other_max;
		char	   *why;

		if (row == self)
			continue;
		if (!ask_position(row, &other, &other_epoch, &other_max, &why))
		{
			ereport(NOTICE,
					(errmsg("node \"%s\" cannot be reached: %s", row->name, why)));
			continue;
		}
		if (other_epoch > state->epoch)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("failover refused: node \"%s\" is at epoch " INT64_FORMAT ", this node at " INT64_FORMAT,
							row->name, other_epoch, state->epoch),
					 errdetail("A newer master exists; its stream will reach this node.")));
		if (other == NULL && other_max > max_id)
		{
			/* a plain destination: it holds events this node lacks */
			appendStringInfo(&reasons, "Destination \"%s\" (no extension) holds " INT64_FORMAT " events, this node " INT64_FORMAT ". ",
							 row->name, other_max, max_id);
			continue;
		}
		if (other_epoch < state->epoch)
			continue;
		if (other != NULL && strcmp(row->name, state->master) == 0)
		{
			/* not even by force: two masters would take writes at once */
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("failover to \"%s\" refused: master \"%s\" is reachable", state->name, row->name),
					 errdetail("A failover while the master takes writes would make two masters; force does not override this."),
					 errhint("A switchover loses nothing: run replicator.promote('%s') on \"%s\".",
							 state->name, row->name)));
		}
		else if (other_max > max_id)
			appendStringInfo(&reasons, "Slave \"%s\" holds " INT64_FORMAT " events, this node " INT64_FORMAT ": promote it instead. ",
							 row->name, other_max, max_id);
	}
	if (reasons.len > 0 && !force)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("failover to \"%s\" refused", state->name),
				 errdetail("%s", reasons.data),
				 errhint("promote(force => true) overrides this, and the topology records it.")));

	/* the old master's stream stops here, at a batch boundary */
	/* the former master's sessions here: it is gone, they only hold locks */
	replicator_end_attached_sessions(epoch);
	lock_event_source_within(ms_left(deadline, 1), timeout_ms);
	max_id = source_max_id();
	replicator_become_master(state, epoch, reasons.len > 0 ? "forced failover" : "failover",
							 psprintf("from \"%s\"%s%s", state->master,
									  reasons.len > 0 ? ": " : "", reasons.data),
							 max_id + 1);
	return max_id;
}

PG_FUNCTION_INFO_V1(replicator_promote);

/*
 * promote(name, timeout, force): with a name, on the master, a switchover
 * to that slave; without, on a slave, a failover to it.  Returns the
 * master, its epoch, and the last event of the epoch before.
 */
Datum
replicator_promote(PG_FUNCTION_ARGS)
{
	char	   *name = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Interval   *timeout = PG_ARGISNULL(1) ? NULL : PG_GETARG_INTERVAL_P(1);
	bool		force = PG_ARGISNULL(2) ? false : PG_GETARG_BOOL(2);
	int64		timeout_ms = 30000;
	TimestampTz deadline;
	NodeState	state;
	int64		last_id;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	replicator_check_admin();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (timeout != NULL)
		timeout_ms = (timeout->time + (timeout->day * USECS_PER_DAY) +
					  (int64) timeout->month * DAYS_PER_MONTH * USECS_PER_DAY) / 1000;
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("promote() must run at isolation level READ COMMITTED"),
				 errdetail("It must see every event committed while it waits.")));
	if (ReplicatorState == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replicator is not loaded through shared_preload_libraries")));

	SPI_connect();
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	/* one promotion at a time, and no attach meanwhile */
	if (!lock_node_state_within(&state, name, timeout_ms))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database is in no topology"),
				 errhint("Register it as master first: replicator.add_replica('<name>', '<how others reach it>', role => 'master').")));
	if (name != NULL)
	{
		if (!state.is_master)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this node is a slave of \"%s\": a switchover runs on the master", state.master),
					 errhint("On a slave whose master is gone, replicator.promote() without a name is a failover.")));
		if (force)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("force applies to a failover only")));
		last_id = switchover(&state, name, timeout_ms, deadline);
		values[0] = CStringGetTextDatum(name);
	}
	else
	{
		if (state.is_master)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this node is the master of epoch " INT64_FORMAT " already", state.epoch),
					 errhint("A switchover names the slave: replicator.promote('<slave>').")));
		last_id = failover(&state, force, timeout_ms, deadline);
		values[0] = CStringGetTextDatum(state.name);
	}
	SPI_finish();
	values[1] = Int64GetDatum(state.epoch + 1);
	values[2] = Int64GetDatum(last_id);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
