/*-------------------------------------------------------------------------
 *
 * rule_worker.c
 *	  A cdc rule's worker: it decodes the rule's slot in its own process
 *	  and applies the changes of the rule's tables to the target.
 *
 * Exactly once: the target's transaction for a batch also records the
 * source position it applied (replicator_apply.progress there), the slot
 * is confirmed only up to what the target recorded, and changes of
 * transactions that end at or before it are skipped when decoding again.
 *
 * Initial copies meet the stream without a gap and without applying
 * anything twice: a table is copied under a snapshot recorded with the
 * copy (in the same target transaction), and a change of that table is
 * applied only if its transaction is not visible to that snapshot.  That
 * holds for the first copy, for a table created later (a '*' rule), and
 * for a table copied again after it was paused.
 *
 * Any error ends the worker: the launcher starts it again (with backoff),
 * and it resumes from what the target recorded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "connection.h"
#include "rule_apply.h"
#include "rule_catalog.h"
#include "rule_compat.h"
#include "rule_decode.h"
#include "rule_snapshot.h"
#include "rule_worker.h"
#include "settings.h"
#include "shmem.h"

/* changes per target transaction while catching up */
#define RULE_BATCH_CHANGES	10000
/* rows per statement of an initial copy */
#define RULE_COPY_ROWS		2000
/* how often an idle worker records its position on the target */
#define RULE_IDLE_PROGRESS_MS	1000
/* batches begin at most this often: under a stream of commits, several per batch */
#define RULE_MIN_BATCH_INTERVAL_MS	5
/* how often counts alone are recorded in replicator.rule_tables */
#define RULE_COUNTS_MS	1000
static TimestampTz last_counts = 0;

static ReplicaSlot *slot;
static char *rule_name;
static RuleConfig config;
static char *slot_name;
static char *source_id;
static HTAB *tables;			/* relid -> TableEntry */
static MemoryContext tables_cxt;
static RuleApply apply;
static XLogRecPtr skip_upto;	/* changes of txns ending here or before: applied */
static XLogRecPtr recorded_lsn; /* the target's progress record */
static XLogRecPtr durable_lsn;	/* the same, flushed there: the slot's */
static XLogRecPtr pending_lsn;	/* end of the last txn in the open batch */
static bool restart_decoding;	/* a new table to copy, or a table paused */
static bool requires_password;	/* the password rule, decided at start */
static bool target_replica_role;	/* session_replication_role = replica there */
static Oid	new_relid;			/* the new table that asked for it */

typedef struct TableEntry
{
	Oid			relid;			/* hash key */
	bool		ignored;		/* not this rule's */
	RuleApplyTable *table;
} TableEntry;

static void
rule_detach(int code, Datum arg)
{
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	if (slot->pid == MyProcPid)
	{
		slot->pid = 0;
		slot->latch = NULL;
		slot->pending_changes = 0;
		slot->oldest_pending = 0;
		slot->copy_table[0] = '\0';
		if (slot->state != REPLICA_INVALID)
			slot->state = REPLICA_STOPPED;
	}
	for (int i = 0; i < replicator_max_databases; i++)
		if (ReplicatorState->databases[i].dboid == slot->dboid)
			pg_atomic_sub_fetch_u32(&ReplicatorState->databases[i].rule_workers, 1);
	if (ReplicatorState->launcher_latch)
		SetLatch(ReplicatorState->launcher_latch);
	LWLockRelease(ReplicatorState->lock);
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
}

static void record_locally(void);
static void drain_conflicts(PGconn *conn);

static void
report(ReplicaState state, const char *error)
{
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->state = state;
	if (error)
	{
		strlcpy(slot->last_error, error, REPLICA_ERROR_LEN);
		slot->last_error_at = GetCurrentTimestamp();
	}
	else if (state == REPLICA_STREAMING)
	{
		/* the trouble it reported is over */
		slot->failed_starts = 0;
		slot->last_error[0] = '\0';
		slot->last_error_at = 0;
	}
	LWLockRelease(ReplicatorState->lock);
}

static void
report_position(XLogRecPtr applied, int64 pending, TimestampTz oldest)
{
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	if (applied != InvalidXLogRecPtr)
		slot->applied_lsn = applied;
	slot->pending_changes = pending;
	slot->oldest_pending = oldest;
	slot->last_contact = GetCurrentTimestamp();
	LWLockRelease(ReplicatorState->lock);
}

static void
local_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	int			ret = replicator_spi_execute_as_owner(sql, nargs, types, values, nulls, false);

	if (ret < 0)
		elog(ERROR, "%s: %s", sql, SPI_result_code_string(ret));
}

/* ----------------------------------------------------------------
 * The target
 * ----------------------------------------------------------------
 */

static PGresult *
remote(PGconn *conn, const char *sql, ExecStatusType expected)
{
	PGresult   *res = replicator_remote_exec(conn, sql, 0, NULL);

	if (res == NULL || PQresultStatus(res) != expected)
	{
		char	   *error = replicator_remote_expect(conn, res, expected);

		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("rule \"%s\": target \"%s\": %s", rule_name, config.target, error)));
	}
	return res;
}

static PGconn *
connect_target(void)
{
	char	   *error = NULL;
	bool		transient;
	PGconn	   *conn;

	report(REPLICA_CONNECTING, NULL);
	conn = replicator_remote_connect(config.conninfo, psprintf("replicator rule %s", rule_name),
									 REPLICATOR_SESSION_APPLY, requires_password,
									 &error, &transient);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("rule \"%s\": could not connect to target \"%s\": %s",
						rule_name, config.target, error)));
	/* our SQL names everything it means: nothing of a search_path applies */
	PQclear(remote(conn, "SET search_path = pg_catalog, pg_temp; SET TimeZone = 'UTC';"
				   " SET DateStyle = 'ISO'", PGRES_COMMAND_OK));

	/*
	 * Batches commit without waiting for the target's flush, as built-in
	 * apply does; the slot is confirmed only up to what the target has
	 * flushed (durable_lsn).  Copies, and batches that leave conflicts
	 * there, commit synchronously (rule_apply.c).
	 */
	PQclear(remote(conn, "SET synchronous_commit = off", PGRES_COMMAND_OK));

	/*
	 * A run's statement finds its rows by key, as built-in apply does: it is
	 * prepared once and planned for a few rows (a generic plan), whatever
	 * the length of a run; no table scans, no compiling.
	 */
	PQclear(remote(conn, "SET plan_cache_mode = force_generic_plan; SET jit = off;"
				   " SET enable_seqscan = off", PGRES_COMMAND_OK));

	/*
	 * As PostgreSQL's own apply: the target's triggers and foreign keys do
	 * not fire for replicated rows (they did on the source).  Then changes
	 * of different tables may share a statement each per batch.  A role
	 * that may not set it applies in the source's order, triggers firing.
	 */
	{
		PGresult   *res = replicator_remote_exec(conn, "SET session_replication_role = replica", 0, NULL);

		target_replica_role = res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK;
		if (res)
			PQclear(res);
	}
	PQclear(remote(conn,
				   "CREATE SCHEMA IF NOT EXISTS replicator_apply;"
				   "CREATE TABLE IF NOT EXISTS replicator_apply.progress ("
				   " source text, slot text, lsn pg_lsn NOT NULL,"
				   " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, slot));"
				   "CREATE TABLE IF NOT EXISTS replicator_apply.conflicts ("
				   " id bigserial PRIMARY KEY, source text NOT NULL, slot text NOT NULL,"
				   " table_name text NOT NULL, op text NOT NULL, kind text NOT NULL, key jsonb NOT NULL,"
				   " source_row jsonb, target_row jsonb, resolution text NOT NULL, set_aside bool NOT NULL);"
				   "CREATE TABLE IF NOT EXISTS replicator_apply.copies ("
				   " source text, slot text, table_name text, snapshot pg_snapshot NOT NULL,"
				   " until_lsn pg_lsn NOT NULL, requested timestamptz NOT NULL,"
				   " copied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, slot, table_name))",
				   PGRES_COMMAND_OK));
	if (apply.use_origin)
	{
		char	   *origin = quote_literal_cstr(slot_name);

		PQclear(remote(conn,
					   psprintf("SELECT pg_catalog.pg_replication_origin_create(%s)"
								" WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_replication_origin"
								" WHERE roname = %s)", origin, origin),
					   PGRES_TUPLES_OK));
		PQclear(remote(conn, psprintf("SELECT pg_catalog.pg_replication_origin_session_setup(%s)", origin),
					   PGRES_TUPLES_OK));
	}
	return conn;
}

/* ----------------------------------------------------------------
 * Tables
 * ----------------------------------------------------------------
 */

static char *
local_state(const char *table_name, char **requested)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(rule_name), CStringGetTextDatum(table_name)};
	char	   *state = NULL;

	local_exec("SELECT state, copy_requested FROM replicator.rule_tables"
			   " WHERE rule OPERATOR(pg_catalog.=) $1 AND table_name OPERATOR(pg_catalog.=) $2",
			   2, types, values, NULL);
	if (SPI_processed == 1)
	{
		state = MemoryContextStrdup(tables_cxt,
									SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		*requested = MemoryContextStrdup(tables_cxt,
										 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	}
	return state;
}

static void
set_local_state(const char *table_name, const char *state, const char *reason)
{
	Oid			types[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4] = {CStringGetTextDatum(rule_name), CStringGetTextDatum(table_name),
	CStringGetTextDatum(state), reason ? CStringGetTextDatum(reason) : (Datum) 0};
	char		nulls[4] = {' ', ' ', ' ', reason ? ' ' : 'n'};

	local_exec("INSERT INTO replicator.rule_tables (rule, table_name, state, reason) VALUES ($1, $2, $3, $4)"
			   " ON CONFLICT (rule, table_name) DO UPDATE SET state = excluded.state, reason = excluded.reason,"
			   " copied_at = CASE WHEN excluded.state OPERATOR(pg_catalog.=) 'ready'"
			   "  THEN pg_catalog.now() ELSE rule_tables.copied_at END",
			   4, types, values, nulls);
}

/* parse "xmin:xmax:xip,..." (pg_snapshot's text) into the copy's filter */
static void
set_copy_filter(RuleApplyTable *t, const char *snapshot, const char *until)
{
	char	   *s = pstrdup(snapshot);
	char	   *xip;

	t->copied = true;
	t->copy_xmin = (TransactionId) strtou64(s, &s, 10);
	t->copy_xmax = (TransactionId) strtou64(s + 1, &s, 10);
	t->copy_xip = NIL;
	xip = s + 1;
	while (*s == ':' && *xip)
	{
		MemoryContext old = MemoryContextSwitchTo(tables_cxt);

		t->copy_xip = lappend_int(t->copy_xip, (int) (TransactionId) strtou64(xip, &xip, 10));
		MemoryContextSwitchTo(old);
		if (*xip == ',')
			xip++;
		else
			break;
	}
	t->copy_until = DatumGetLSN(DirectFunctionCall1(pg_lsn_in, CStringGetDatum(until)));
}

/* Was the transaction's every change already in the table's copy? */
static bool
in_copy(RuleApplyTable *t, const RuleTxn *txn)
{
	ListCell   *lc;

	/* a commit ending at until may be in the copy: the xid decides */
	if (!t->copied || txn->end_lsn > t->copy_until)
		return false;
	if (TransactionIdPrecedes(txn->xid, t->copy_xmin))
		return true;
	if (!TransactionIdPrecedes(txn->xid, t->copy_xmax))
		return false;
	foreach(lc, t->copy_xip)
		if ((TransactionId) lfirst_int(lc) == txn->xid)
			return false;
	return true;
}

/*
 * The columns both sides have (the compat report errs on any other), and
 * whether the target's update triggers fire.
 */
static void
common_columns(PGconn *conn, RuleApplyTable *t)
{
	char	   *error = replicator_rule_target_columns(conn, t);

	if (error)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("rule \"%s\": target \"%s\": %s", rule_name, config.target, error)));
}

/*
 * A statement of t failed with error: if the target's table has other
 * columns now than the rows were written with, or is another table, that
 * is why, and the worker starts over with it instead of pausing the table.
 */
static void
target_changed(PGconn *conn, RuleApplyTable *t, const char *error)
{
	if (replicator_rule_row_type_changed(conn, t))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rule \"%s\": %s changed on target \"%s\" (its columns, or the table itself): %s",
						rule_name, t->table->qualified, config.target, error)));
}

/*
 * Copy one table under a snapshot of its own, into one target transaction
 * that also records the copy (its snapshot and the request it answers).
 */
static void
copy_table(PGconn *conn, RuleApplyTable *t, const char *requested, bool mirror)
{
	Oid			owner;
	MemoryContext batch_cxt;
	MemoryContext old_cxt;
	Oid			saved_user;
	int			saved_context;
	Portal		portal;
	char	   *snapshot;
	char	   *until;
	int64		total;
	int64		copied = 0;
	char	   *record;

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	strlcpy(slot->copy_table, t->table->qualified, REPLICA_ERROR_LEN);
	slot->rows_copied = 0;
	slot->rows_total = 0;
	LWLockRelease(ReplicatorState->lock);

	GetUserIdAndSecContext(&saved_user, &saved_context);
	for (;;)
	{
		List	   *finishing = NIL;
		TransactionId xid;
		char	   *p;
		ListCell   *lc;

		/* one snapshot for the rows and for the record of what they hold */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		XactIsoLevel = XACT_REPEATABLE_READ;
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		owner = replicator_rule_table_owner(t->table->relid);
		if (SPI_execute(psprintf("SELECT pg_catalog.pg_current_snapshot()::text,"
								 " pg_catalog.pg_current_wal_insert_lsn()::text,"
								 " (SELECT pg_catalog.count(*) FROM ONLY %s)", t->table->qualified),
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read %s", t->table->qualified);
		snapshot = MemoryContextStrdup(tables_cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		until = MemoryContextStrdup(tables_cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
		total = pg_strtoint64(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3));

		/*
		 * A transaction whose commit is in the WAL but which still shows as
		 * running (a synchronous standby not answering yet) is neither in
		 * the copy nor, if decoding went past it already, in the stream:
		 * wait for such ones to end, and take the snapshot again.
		 */
		p = strchr(strchr(snapshot, ':') + 1, ':') + 1;
		while (*p)
		{
			xid = (TransactionId) strtou64(p, &p, 10);
			if (TransactionIdDidCommit(xid))
				finishing = lappend_oid(finishing, (Oid) xid);
			if (*p == ',')
				p++;
		}
		if (finishing == NIL)
			break;
		PopActiveSnapshot();
		SPI_finish();
		AbortCurrentTransaction();
		StartTransactionCommand();
		foreach(lc, finishing)
			XactLockTableWait((TransactionId) lfirst_oid(lc), NULL, NULL, XLTW_None);
		CommitTransactionCommand();
	}
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->rows_total = total;
	LWLockRelease(ReplicatorState->lock);

	if (mirror)
	{
		int64		sent = 0;

		/*
		 * Copied before: the target may hold rows the source deleted since.
		 * The mirror makes it exact under this snapshot (its own target
		 * transaction; done again if the record below is lost).
		 */
		replicator_rule_mirror_table(conn, t->table, &t->inserted, &t->updated, &t->deleted, &sent);
		replicator_end_local();
		goto record;
	}
	{
		/* the rows are rendered as their owner (rule_decode.c says why) */
		SetUserIdAndSecContext(owner, saved_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "replicator copy batch",
									  ALLOCSET_DEFAULT_SIZES);
	old_cxt = CurrentMemoryContext;
	portal = SPI_cursor_open_with_args(NULL, psprintf("SELECT * FROM ONLY %s", t->table->qualified),
										   0, NULL, NULL, NULL, true, 0);
		SetUserIdAndSecContext(saved_user, saved_context);
	}
	for (;;)
	{
		RuleRow   **rows;
		TupleDesc	desc;
		Datum	   *values;
		bool	   *nulls;

		CHECK_FOR_INTERRUPTS();
		SetUserIdAndSecContext(owner, saved_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		SPI_cursor_fetch(portal, true, RULE_COPY_ROWS);
		MemoryContextSwitchTo(batch_cxt);
		if (SPI_processed == 0)
		{
			SetUserIdAndSecContext(saved_user, saved_context);
			break;
		}
		/* as the decoder renders them: the same values either way */
		desc = SPI_tuptable->tupdesc;
		values = palloc(sizeof(Datum) * desc->natts);
		nulls = palloc(sizeof(bool) * desc->natts);
		rows = palloc(sizeof(RuleRow *) * SPI_processed);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			heap_deform_tuple(SPI_tuptable->vals[i], desc, values, nulls);
			rows[i] = replicator_rule_row(desc, values, nulls, NULL);
		}
		SetUserIdAndSecContext(saved_user, saved_context);
		replicator_rule_apply_rows(&apply, t, rows, (int) SPI_processed);
		copied += SPI_processed;
		/* a batch at a time in memory, not the table */
		SPI_freetuptable(SPI_tuptable);
		MemoryContextSwitchTo(old_cxt);
		MemoryContextReset(batch_cxt);
		MemoryContextSwitchTo(batch_cxt);
		if (!replicator_rule_apply_send(&apply, NULL))
			break;
		LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
		slot->rows_copied = copied;
		LWLockRelease(ReplicatorState->lock);
	}
	MemoryContextSwitchTo(old_cxt);
	MemoryContextDelete(batch_cxt);
	SPI_cursor_close(portal);
	replicator_end_local();

record:
	record = psprintf("DELETE FROM replicator_apply.copies WHERE source = %s AND slot = %s AND table_name = %s;\n"
					  "INSERT INTO replicator_apply.copies (source, slot, table_name, snapshot, until_lsn, requested)"
					  " VALUES (%s, %s, %s, %s, %s, %s);\n",
					  quote_literal_cstr(source_id), quote_literal_cstr(slot_name),
					  quote_literal_cstr(t->table->qualified),
					  quote_literal_cstr(source_id), quote_literal_cstr(slot_name),
					  quote_literal_cstr(t->table->qualified), quote_literal_cstr(snapshot),
					  quote_literal_cstr(until), quote_literal_cstr(requested));
	if (apply.error == NULL)
		(void) replicator_rule_apply_commit(&apply, recorded_lsn, record, true, true);
	if (apply.error)
	{
		char	   *error = pstrdup(apply.error);

		/* a lost target is no reason to pause: the worker starts over */
		if (apply.error_table == NULL || PQstatus(conn) != CONNECTION_OK || apply.error_transient)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("rule \"%s\": initial copy of %s to target \"%s\" failed: %s",
							rule_name, t->table->qualified, config.target, error)));
		PQclear(replicator_remote_exec(conn, "ROLLBACK", 0, NULL));
		target_changed(conn, t, error);
		replicator_rule_apply_reset(&apply);
		t->inserted = t->updated = t->deleted = t->conflicts = 0;
		replicator_begin_local();
		set_local_state(t->table->qualified, "paused", psprintf("initial copy failed: %s", error));
		replicator_end_local();
		t->paused = true;
	}
	else
	{
		set_copy_filter(t, snapshot, until);
		replicator_begin_local();
		set_local_state(t->table->qualified, "ready", NULL);
		replicator_end_local();
		record_locally();
	}
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->copy_table[0] = '\0';
	LWLockRelease(ReplicatorState->lock);
}

/*
 * Resolve the rule's tables, check them against the target, and copy those
 * that need it.  False if the compat report has errors (the rule waits).
 */
static bool
prepare_tables(PGconn *conn)
{
	List	   *resolved;
	List	   *missing = NIL;
	List	   *issues;
	List	   *to_copy = NIL;
	List	   *requests = NIL;
	List	   *mirrors = NIL;
	ListCell   *lc;
	PGresult   *res;
	HASHCTL		ctl;

	MemoryContext old;

	/* what describes the tables lives until they are prepared again */
	if (tables_cxt == NULL)
		tables_cxt = AllocSetContextCreate(TopMemoryContext, "replicator rule tables",
										   ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(tables_cxt);
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(TableEntry);
	ctl.hcxt = tables_cxt;
	tables = hash_create("replicator rule tables", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* the target's record of the copies it holds */
	res = remote(conn, psprintf("SELECT table_name, snapshot::text, until_lsn::text,"
								" requested::text FROM replicator_apply.copies"
								" WHERE source = %s AND slot = %s",
								quote_literal_cstr(source_id), quote_literal_cstr(slot_name)),
				 PGRES_TUPLES_OK);

	replicator_begin_local();
	old = MemoryContextSwitchTo(tables_cxt);
	resolved = replicator_rule_resolve(&config, &missing);
	MemoryContextSwitchTo(old);
	issues = replicator_rule_compat(conn, &config, resolved, missing);
	if (replicator_rule_compat_has_errors(issues))
	{
		StringInfoData why;
		bool		ever_ran;

		/*
		 * A rule whose report has errors does not start.  Once it runs, a
		 * table the target cannot take (one created later, a changed one)
		 * is paused alone, with the reason.
		 */
		local_exec("SELECT FROM replicator.rule_tables WHERE rule OPERATOR(pg_catalog.=) $1"
				   " AND copied_at IS NOT NULL",
				   1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(rule_name)}, NULL);
		ever_ran = SPI_processed > 0;
		initStringInfo(&why);
		foreach(lc, issues)
		{
			RuleCompatIssue *i = lfirst(lc);
			char	   *text;

			if (!i->error)
				continue;
			text = psprintf("%s%s%s: %s", i->table_name, i->column_name ? "." : "",
							i->column_name ? i->column_name : "", i->issue);
			appendStringInfo(&why, "%s%s", why.len ? "; " : "", text);
			if (ever_ran)
				set_local_state(i->table_name, "paused", psprintf("validate_rule: %s", text));
		}
		if (!ever_ran)
		{
			report(REPLICA_INVALID, psprintf("validate_rule reports errors: %s", why.data));
			replicator_end_local();
			PQclear(res);
			return false;
		}
	}
	foreach(lc, resolved)
	{
		RuleTable  *rt = lfirst(lc);
		TableEntry *e;
		bool		found;
		char	   *requested = NULL;
		char	   *state = local_state(rt->qualified, &requested);
		RuleApplyTable *t = MemoryContextAllocZero(tables_cxt, sizeof(RuleApplyTable));
		bool		had_copy;

		t->table = rt;
		t->cxt = tables_cxt;
		e = hash_search(tables, &rt->relid, HASH_ENTER, &found);
		e->ignored = false;
		e->table = t;
		if (state == NULL)
		{
			set_local_state(rt->qualified, "copy", NULL);
			(void) local_state(rt->qualified, &requested);
			state = "copy";
		}
		if (strcmp(state, "paused") == 0)
		{
			t->paused = true;
			continue;
		}
		/* the copy the target holds, if it answers the last request */
		had_copy = false;
		for (int r = 0; r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, 0), rt->qualified) == 0)
			{
				had_copy = true;
				if (strcmp(PQgetvalue(res, r, 3), requested) == 0)
					set_copy_filter(t, PQgetvalue(res, r, 1), PQgetvalue(res, r, 2));
			}
		if (!t->copied)
		{
			/* SPI leaves its own memory context current: name ours */
			MemoryContext spi = MemoryContextSwitchTo(tables_cxt);

			to_copy = lappend(to_copy, t);
			requests = lappend(requests, requested);
			mirrors = lappend_int(mirrors, had_copy);
			MemoryContextSwitchTo(spi);
		}
		else if (strcmp(state, "ready") != 0)
			set_local_state(rt->qualified, "ready", NULL);
	}
	replicator_end_local();
	PQclear(res);

	/* the copies, each in its own snapshot and target transaction */
	old = MemoryContextSwitchTo(tables_cxt);
	foreach(lc, to_copy)
	{
		RuleApplyTable *t = lfirst(lc);

		report(REPLICA_CATCHING_UP, NULL);
		common_columns(conn, t);
		copy_table(conn, t, list_nth(requests, foreach_current_index(lc)),
				   list_nth_int(mirrors, foreach_current_index(lc)));
	}
	foreach(lc, resolved)
	{
		RuleTable  *rt = lfirst(lc);
		TableEntry *e = hash_search(tables, &rt->relid, HASH_FIND, NULL);

		if (e->table->columns == NIL)
			common_columns(conn, e->table);
	}
	MemoryContextSwitchTo(old);
	/* a table met while decoding that is gone now: its changes are moot */
	if (OidIsValid(new_relid))
	{
		bool		found;
		TableEntry *e = hash_search(tables, &new_relid, HASH_ENTER, &found);

		if (!found)
		{
			e->ignored = true;
			e->table = NULL;
		}
		new_relid = InvalidOid;
	}
	return true;
}

/* ----------------------------------------------------------------
 * Decoding
 * ----------------------------------------------------------------
 */

static int64 pending_changes = 0;
static TimestampTz oldest_pending = 0;

static void
sink_change(void *arg, const RuleTxn *txn, RuleChange *change)
{
	TableEntry *e;
	bool		found;

	if (restart_decoding || txn->end_lsn <= skip_upto)
		return;
	e = hash_search(tables, &change->relid, HASH_ENTER, &found);
	if (!found)
	{
		/* a table the rule did not know of: one created later, for '*' */
		e->table = NULL;
		e->ignored = !replicator_rule_covers(&config, change->relid);
		if (!e->ignored)
		{
			new_relid = change->relid;
			restart_decoding = true;
			return;
		}
	}
	if (e->ignored || e->table->paused || in_copy(e->table, txn))
		return;
	if (pending_changes == 0)
		oldest_pending = txn->commit_time;
	pending_changes++;
	replicator_rule_apply_change(&apply, e->table, txn, change);
	if (apply.error)
		restart_decoding = true;
}

/*
 * What the target committed, once no transaction we began there is open
 * (a batch in flight has sent its commit; its results are not in yet):
 * the conflicts and counts collected so far are all of committed batches,
 * for record_locally().
 */
static void
note_committed(void)
{
	if (apply.sent_open)
		return;
	recorded_lsn = Max(recorded_lsn, apply.committed_lsn);
	durable_lsn = Max(durable_lsn, apply.durable_lsn);
}

/*
 * The batch in flight, if any, committed on the target (or failed:
 * apply.error).
 */
static bool
wait_batch(void)
{
	if (!replicator_rule_apply_wait(&apply))
		return false;
	note_committed();
	return true;
}

/*
 * Commit the open batch on the target, with lsn recorded there.  Without
 * wait, the next batch is decoded while the target applies this one.
 */
static bool
commit_batch(XLogRecPtr lsn, bool wait, bool durable)
{
	if (!replicator_rule_apply_commit(&apply, lsn, NULL, wait, durable))
		return false;
	return !wait || wait_batch();
}

static void
sink_commit(void *arg, const RuleTxn *txn)
{
	if (restart_decoding || txn->end_lsn <= skip_upto)
		return;
	pending_lsn = txn->end_lsn;
	if (apply.changes >= RULE_BATCH_CHANGES && !commit_batch(pending_lsn, false, false))
		restart_decoding = true;
	else
		note_committed();
}

static RuleDecodeSink sink = {sink_change, sink_commit, NULL};

/* What the batch just committed leaves to record here: conflicts, counts. */
static void
record_locally(void)
{
	ListCell   *lc;
	HASH_SEQ_STATUS seq;
	TableEntry *e;
	bool		any;
	int64		max_id = 0;

	/* the target forgets conflicts once recorded: the connection must be free */
	if (apply.conflicts != NIL && apply.in_flight && !wait_batch())
		return;
	any = apply.conflicts != NIL;
	if (tables)
	{
		hash_seq_init(&seq, tables);
		while ((e = hash_seq_search(&seq)) != NULL)
			if (e->table && (e->table->inserted || e->table->updated || e->table->deleted || e->table->conflicts))
				any = true;
	}
	if (!any)
		return;

	/*
	 * Counts alone are statistics: recorded now and then (with every batch
	 * while a sync() reads them), with no flush of the WAL waited for (a
	 * batch's commit must not wait on one here).  Conflicts go at once,
	 * durably: the target forgets them after.
	 */
	if (apply.conflicts == NIL &&
		!TimestampDifferenceExceeds(last_counts, GetCurrentTimestamp(), RULE_COUNTS_MS))
	{
		int32		waiters;

		LWLockAcquire(ReplicatorState->lock, LW_SHARED);
		waiters = slot->count_waiters;
		LWLockRelease(ReplicatorState->lock);
		if (waiters == 0)
			return;
	}
	last_counts = GetCurrentTimestamp();
	replicator_begin_local();
	if (apply.conflicts == NIL)
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	foreach(lc, apply.conflicts)
	{
		RuleConflict *c = lfirst(lc);
		Oid			types[9] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID};
		Datum		values[9];
		char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

		values[0] = CStringGetTextDatum(rule_name);
		values[1] = CStringGetTextDatum(c->table_name);
		values[2] = CStringGetTextDatum(c->key);
		values[3] = c->source_row ? CStringGetTextDatum(c->source_row) : (Datum) 0;
		nulls[3] = c->source_row ? ' ' : 'n';
		values[4] = c->target_row ? CStringGetTextDatum(c->target_row) : (Datum) 0;
		nulls[4] = c->target_row ? ' ' : 'n';
		values[5] = CStringGetTextDatum(c->kind);
		values[6] = CStringGetTextDatum(c->resolution);
		values[7] = CStringGetTextDatum(c->op);
		values[8] = Int64GetDatum(c->target_id);
		max_id = Max(max_id, c->target_id);
		local_exec("INSERT INTO replicator.conflicts (rule, table_name, key, source_row, target_row, kind,"
				   " resolution, target_seq)"
				   " VALUES ($1, $2, $3::pg_catalog.jsonb, $4::pg_catalog.jsonb, $5::pg_catalog.jsonb, $6, $7, $9)"
				   " ON CONFLICT (rule, target_seq) DO NOTHING",
				   9, types, values, nulls);
		if (c->set_aside)
			local_exec("INSERT INTO replicator.rule_errors (rule, table_name, op, key, source_row, reason, target_seq)"
					   " VALUES ($1, $2, $8, $3::pg_catalog.jsonb, $4::pg_catalog.jsonb,"
					   " $6 OPERATOR(pg_catalog.||) ' (conflict_resolution error)', $9)"
					   " ON CONFLICT (rule, target_seq) DO NOTHING",
					   9, types, values, nulls);
	}
	if (tables)
		hash_seq_init(&seq, tables);
	while (tables && (e = hash_seq_search(&seq)) != NULL)
	{
		RuleApplyTable *t = e->table;
		Oid			types[6] = {TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID};
		Datum		values[6];

		if (t == NULL || !(t->inserted || t->updated || t->deleted || t->conflicts))
			continue;
		values[0] = CStringGetTextDatum(rule_name);
		values[1] = CStringGetTextDatum(t->table->qualified);
		values[2] = Int64GetDatum(t->inserted);
		values[3] = Int64GetDatum(t->updated);
		values[4] = Int64GetDatum(t->deleted);
		values[5] = Int64GetDatum(t->conflicts);
		local_exec("UPDATE replicator.rule_tables SET inserted = inserted OPERATOR(pg_catalog.+) $3,"
				   " updated = updated OPERATOR(pg_catalog.+) $4, deleted = deleted OPERATOR(pg_catalog.+) $5,"
				   " conflicts = conflicts OPERATOR(pg_catalog.+) $6"
				   " WHERE rule OPERATOR(pg_catalog.=) $1 AND table_name OPERATOR(pg_catalog.=) $2",
				   6, types, values, NULL);
		t->inserted = t->updated = t->deleted = t->conflicts = 0;
	}
	replicator_end_local();
	replicator_rule_apply_recorded(&apply);
	/* recorded here: the target may forget them (again after a crash: no harm) */
	if (max_id > 0)
		PQclear(remote(apply.conn,
					   psprintf("DELETE FROM replicator_apply.conflicts WHERE source = %s AND slot = %s"
								" AND id <= " INT64_FORMAT,
								quote_literal_cstr(source_id), quote_literal_cstr(slot_name), max_id),
					   PGRES_COMMAND_OK));
}

/*
 * Conflicts a batch left on the target and a crash kept from being
 * recorded here: record them now.
 */
static void
drain_conflicts(PGconn *conn)
{
	PGresult   *res = remote(conn, psprintf("SELECT id, op, kind, key, source_row, target_row,"
											" resolution, set_aside, table_name FROM replicator_apply.conflicts"
											" WHERE source = %s AND slot = %s ORDER BY id",
											quote_literal_cstr(source_id), quote_literal_cstr(slot_name)),
							  PGRES_TUPLES_OK);

	for (int r = 0; r < PQntuples(res); r++)
		replicator_rule_read_conflict(&apply, res, r, PQgetvalue(res, r, 8));
	PQclear(res);
	if (apply.conflicts != NIL)
		record_locally();
}

/* A statement of the batch failed: pause its table (or give up), decode again. */
static void
batch_failed(PGconn *conn)
{
	char	   *error = apply.error ? pstrdup(apply.error) : pstrdup("connection lost");
	RuleApplyTable *t = apply.error_table;

	if (t == NULL || PQstatus(conn) != CONNECTION_OK || apply.error_transient)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("rule \"%s\": target \"%s\": %s", rule_name, config.target, error)));
	PQclear(replicator_remote_exec(conn, "ROLLBACK", 0, NULL));
	target_changed(conn, t, error);
	replicator_rule_apply_reset(&apply);
	/* counts of the rolled back batch are not the target's */
	{
		HASH_SEQ_STATUS seq;
		TableEntry *e;

		hash_seq_init(&seq, tables);
		while ((e = hash_seq_search(&seq)) != NULL)
			if (e->table)
				e->table->inserted = e->table->updated = e->table->deleted = e->table->conflicts = 0;
	}
	ereport(WARNING,
			(errmsg("rule \"%s\": table %s paused: the target could not take a change: %s",
					rule_name, t->table->qualified, error),
			 errhint("Fix the target, then SELECT replicator.resume_rule('%s') copies the table again.",
					 rule_name)));
	replicator_begin_local();
	set_local_state(t->table->qualified, "paused", error);
	replicator_end_local();
	t->paused = true;
	/* what batches committed before this one met is on the target still */
	drain_conflicts(conn);
}

/*
 * Decode the slot until the rule must prepare its tables again (a new
 * table, a paused one) or the configuration changed.
 */
static void
decode(PGconn *conn)
{
	LogicalDecodingContext *ctx;
	TimestampTz last_progress = GetCurrentTimestamp();
	TimestampTz last_batch = 0;
	uint64		generation = replicator_catalog_generation(MyDatabaseId);
	uint64		records = 0;

	restart_decoding = false;
	pending_lsn = InvalidXLogRecPtr;
	ctx = CreateDecodingContext(InvalidXLogRecPtr, NIL, false,
								XL_ROUTINE(.page_read = read_local_xlog_page,
										   .segment_open = wal_segment_open,
										   .segment_close = wal_segment_close),
								NULL, NULL, NULL);
	XLogBeginRead(ctx->reader, MyReplicationSlot->data.restart_lsn);
	replicator_rule_decode_sink = &sink;
	report(REPLICA_STREAMING, NULL);

	while (!restart_decoding)
	{
		XLogRecPtr	end_of_wal = GetFlushRecPtr(NULL);

		while (ctx->reader->EndRecPtr < end_of_wal && !restart_decoding)
		{
			char	   *errm = NULL;
			XLogRecord *record = XLogReadRecord(ctx->reader, &errm);

			if (errm)
				elog(ERROR, "could not read the WAL for rule \"%s\": %s", rule_name, errm);
			if (record != NULL)
				LogicalDecodingProcessRecord(ctx, ctx->reader);
			if (durable_lsn > MyReplicationSlot->data.confirmed_flush)
			{
				LogicalConfirmReceivedLocation(durable_lsn);
				record_locally();
			}
			/* the shared lock is taken now and then, not per record */
			if ((++records & 255) == 0)
				report_position(InvalidXLogRecPtr, pending_changes, pending_changes ? oldest_pending : 0);
			CHECK_FOR_INTERRUPTS();
		}
		if (restart_decoding)
			break;

		/* at the end of the WAL: the batch goes, whatever its size */
		if (apply.xact_open || apply.changes > 0)
		{
			last_batch = GetCurrentTimestamp();
			if (!commit_batch(ctx->reader->EndRecPtr, true, false))
			{
				restart_decoding = true;
				break;
			}
			last_progress = GetCurrentTimestamp();
		}
		else if (!wait_batch())
		{
			restart_decoding = true;
			break;
		}
		else if ((ctx->reader->EndRecPtr > recorded_lsn || durable_lsn < recorded_lsn) &&
				 TimestampDifferenceExceeds(last_progress, GetCurrentTimestamp(), RULE_IDLE_PROGRESS_MS))
		{
			/*
			 * Nothing of ours went by, or it is not known to be flushed
			 * there: the target records how far we are, durably.
			 */
			if (!commit_batch(ctx->reader->EndRecPtr, true, true))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("rule \"%s\": target \"%s\": %s", rule_name, config.target,
								apply.error ? apply.error : "connection lost")));
			last_progress = GetCurrentTimestamp();
		}
		if (durable_lsn > MyReplicationSlot->data.confirmed_flush)
		{
			LogicalConfirmReceivedLocation(durable_lsn);
			ReplicationSlotMarkDirty();
		}
		record_locally();
		pending_changes = 0;
		/* everything committed before the end of the WAL is on the target */
		report_position(ctx->reader->EndRecPtr, 0, 0);

		if (replicator_catalog_generation(MyDatabaseId) != generation)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 RULE_IDLE_PROGRESS_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		/*
		 * Each batch costs the target a statement per table and a commit: a
		 * commit that comes sooner than RULE_MIN_BATCH_INTERVAL_MS after
		 * the last batch waits for the rest of that interval, and those
		 * that follow it join the batch.  A commit after a quiet spell
		 * goes at once.
		 */
		for (;;)
		{
			long		ms = RULE_MIN_BATCH_INTERVAL_MS -
				TimestampDifferenceMilliseconds(last_batch, GetCurrentTimestamp());

			if (ms <= 0)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
	replicator_rule_decode_sink = NULL;
	FreeDecodingContext(ctx);
	(void) wait_batch();
	if (apply.error)
		batch_failed(conn);
	else if (apply.xact_open)
	{
		PQclear(replicator_remote_exec(conn, "ROLLBACK", 0, NULL));
		replicator_rule_apply_reset(&apply);
	}
	pending_changes = 0;
	/* whatever went by and was not committed there is decoded again */
	skip_upto = recorded_lsn;
}

/* ----------------------------------------------------------------
 * The slot
 * ----------------------------------------------------------------
 */

/* Create the slot if it is missing, or anew if it lost WAL; true if so. */
static bool
ensure_slot(void)
{
	replicator_begin_local();
	if (SPI_execute(psprintf("SELECT wal_status FROM pg_catalog.pg_replication_slots"
							 " WHERE slot_name OPERATOR(pg_catalog.=) %s",
							 quote_literal_cstr(slot_name)), true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_replication_slots");
	if (SPI_processed == 1)
	{
		char	   *status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (status && strcmp(status, "lost") == 0)
		{
			/*
			 * The changes the slot lost cannot be applied any more: a new
			 * slot, and every table copied again (mirrored) below.  Until
			 * the worker runs (a paused rule), rule_status says 'needs
			 * resync'.
			 */
			ereport(WARNING,
					(errmsg("rule \"%s\": slot %s lost WAL it needed (max_slot_wal_keep_size): every table is copied again",
							rule_name, slot_name)));
			if (SPI_execute(psprintf("SELECT pg_catalog.pg_drop_replication_slot(%s)",
									 quote_literal_cstr(slot_name)), false, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not drop slot %s", slot_name);
			ereport(LOG, (errmsg("rule \"%s\": dropped replication slot %s, which lost WAL", rule_name, slot_name)));
		}
		else
		{
			replicator_end_local();
			return false;
		}
	}
	replicator_end_local();
	{
		/* its own transaction: the slot waits for transactions under way */
		replicator_begin_local();
		if (SPI_execute(psprintf("SELECT pg_catalog.pg_create_logical_replication_slot(%s, 'replicator')",
								 quote_literal_cstr(slot_name)), false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not create slot %s", slot_name);
		/* every table is copied anew for the new slot */
		local_exec("UPDATE replicator.rule_tables SET state = 'copy', reason = NULL,"
				   " copy_requested = pg_catalog.clock_timestamp()"
				   " WHERE rule OPERATOR(pg_catalog.=) $1",
				   1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(rule_name)}, NULL);
		replicator_end_local();
		ereport(LOG, (errmsg("rule \"%s\": created replication slot %s", rule_name, slot_name)));
	}
	return true;
}

void
replicator_rule_main(Datum arg)
{
	int			slotno = DatumGetInt32(arg);
	uint32		generation;
	Oid			dboid;
	PGconn	   *conn;
	PGresult   *res;
	bool		new_slot;

	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(uint32));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot = &ReplicatorState->slots[slotno];
	if (!slot->in_use || !slot->is_rule || slot->generation != generation || slot->pid != 0)
	{
		LWLockRelease(ReplicatorState->lock);
		proc_exit(0);
	}
	slot->pid = MyProcPid;
	slot->latch = MyLatch;
	slot->state = REPLICA_CONNECTING;
	slot->last_error[0] = '\0';
	dboid = slot->dboid;
	rule_name = MemoryContextStrdup(TopMemoryContext, slot->name);
	for (int i = 0; i < replicator_max_databases; i++)
		if (ReplicatorState->databases[i].dboid == dboid)
			pg_atomic_add_fetch_u32(&ReplicatorState->databases[i].rule_workers, 1);
	LWLockRelease(ReplicatorState->lock);
	before_shmem_exit(rule_detach, 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
	/* values are rendered for another server: in fixed, lossless forms */
	SetConfigOption("DateStyle", "ISO", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("IntervalStyle", "postgres", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("TimeZone", "UTC", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("extra_float_digits", "3", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("bytea_output", "hex", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname(psprintf("replicator rule %s", rule_name));

	PG_TRY();
	{
		MemoryContext old;

		replicator_begin_local();
		old = MemoryContextSwitchTo(TopMemoryContext);
		if (!replicator_rule_read(rule_name, &config) || config.paused || !config.cdc)
		{
			MemoryContextSwitchTo(old);
			replicator_end_local();
			proc_exit(0);
		}
		slot_name = replicator_rule_slot_name(config.id);
		requires_password = replicator_replica_requires_password(config.changed_by);
		source_id = psprintf(UINT64_FORMAT, GetSystemIdentifier());
		MemoryContextSwitchTo(old);
		replicator_end_local();

		new_slot = ensure_slot();
		ReplicationSlotAcquire(slot_name, true);

		conn = connect_target();
		replicator_rule_apply_init(&apply, conn, &config, source_id, slot_name);
		apply.reorder = target_replica_role;
		drain_conflicts(conn);

		/* where the target is: what it holds was applied, once */
		res = remote(conn, psprintf("SELECT lsn::text FROM replicator_apply.progress"
									" WHERE source = %s AND slot = %s",
									quote_literal_cstr(source_id), quote_literal_cstr(slot_name)),
					 PGRES_TUPLES_OK);
		if (PQntuples(res) == 1)
			recorded_lsn = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
														   CStringGetDatum(PQgetvalue(res, 0, 0))));
		PQclear(res);
		/*
		 * A new slot starts a new history: whatever the target recorded (a
		 * former slot's, or a clone's with our system identifier) says
		 * nothing of it; its tables are all copied again.
		 */
		if (recorded_lsn < MyReplicationSlot->data.confirmed_flush || new_slot)
		{
			/* new slot, or a target that lost commits: copy everything */
			if (recorded_lsn != InvalidXLogRecPtr && !new_slot)
			{
				ereport(WARNING,
						(errmsg("rule \"%s\": target \"%s\" is behind what it confirmed: its tables are copied again",
								rule_name, config.target)));
				replicator_begin_local();
				local_exec("UPDATE replicator.rule_tables SET state = 'copy', copy_requested = pg_catalog.clock_timestamp()"
						   " WHERE rule OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'paused'",
						   1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(rule_name)}, NULL);
				replicator_end_local();
			}
			recorded_lsn = MyReplicationSlot->data.confirmed_flush;
			if (!commit_batch(recorded_lsn, true, true))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("rule \"%s\": target \"%s\": %s", rule_name, config.target,
								apply.error ? apply.error : "connection lost")));
		}
		skip_upto = recorded_lsn;
		/* what the target holds is not known to be flushed yet */
		durable_lsn = MyReplicationSlot->data.confirmed_flush;

		for (;;)
		{
			uint64		catalog = replicator_catalog_generation(MyDatabaseId);

			if (!prepare_tables(conn))
			{
				TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);

				/*
				 * The report has errors: look again in 10 s or at a catalog
				 * change, not at every commit that sets the latch.
				 */
				while (replicator_catalog_generation(MyDatabaseId) == catalog &&
					   GetCurrentTimestamp() < until)
				{
					(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									 1000, PG_WAIT_EXTENSION);
					ResetLatch(MyLatch);
					CHECK_FOR_INTERRUPTS();
				}
				continue;
			}
			decode(conn);
			CHECK_FOR_INTERRUPTS();
			/* a change of the rule itself: start over from the catalog */
			if (replicator_catalog_generation(MyDatabaseId) != catalog)
			{
				RuleConfig	now;

				replicator_begin_local();
				if (!replicator_rule_read(rule_name, &now) || now.paused || now.id != config.id ||
					strcmp(now.conninfo, config.conninfo) != 0 || now.resolution != config.resolution)
				{
					replicator_end_local();
					proc_exit(1);
				}
				replicator_end_local();
			}
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		report(REPLICA_DISCONNECTED, edata->message);
		RESUME_INTERRUPTS();
		PG_RE_THROW();
	}
	PG_END_TRY();
}
