/*-------------------------------------------------------------------------
 *
 * rules.c
 *	  The rules' management API: add, drop, pause and resume a rule, wait
 *	  for it, act on the changes it set aside, and report on its worker.
 *
 * As for replicas, every change to the catalog asks the launcher, at
 * commit, to read it again: a cdc rule's worker starts or stops within a
 * second.  A rule's slot is created by its worker and dropped by the scan
 * once the rule is gone, so that a rolled back drop_rule loses nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "catalog.h"
#include "connection.h"
#include "replicas.h"
#include "rule_catalog.h"
#include "rules.h"
#include "shmem.h"

/* The rule, or an error naming it. */
void
replicator_rule_get(const char *name, RuleConfig *config)
{
	if (!replicator_rule_read(name, config))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("rule \"%s\" does not exist", name),
				 errhint("SELECT DISTINCT rule FROM replicator.rule_status lists the rules.")));
}

/*
 * A table named in add_rule: resolved on the caller's search_path now and
 * stored qualified, so that the worker never depends on a search_path.
 */
static char *
resolve_named_table(const char *name, const char *timestamp_column)
{
	List	   *names;
	Oid			relid;
	RuleTable  *table;

	names = stringToQualifiedNameList(name);
	relid = RangeVarGetRelid(makeRangeVarFromNameList(names), AccessShareLock, true);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s\" of the rule does not exist", name),
				 errhint("Name tables as schema.table, or as found on your search_path; '*' takes every user table.")));
	/* the rule copies the table's rows: its creator must be able to read them */
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", name),
				 errdetail("A rule copies every row of its tables: whoever adds it must be able to read them."),
				 errhint("GRANT SELECT ON %s TO %s;", name,
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
	if (get_rel_relkind(relid) != RELKIND_RELATION || get_rel_persistence(relid) != RELPERSISTENCE_PERMANENT)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" cannot be in a rule: it is not an ordinary, logged table", name),
				 errdetail("Views, partitioned tables, foreign, unlogged and temporary tables are not replicated.")));
	if (replicator_rule_excluded(relid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" cannot be in a rule: it belongs to the replicator extension or a system schema", name),
				 errdetail("The event source and the replicator's catalog are replicated by add_replica, not by rules.")));
	table = replicator_rule_table(relid);
	if (timestamp_column != NULL)
	{
		ListCell   *lc;
		bool		found = false;

		foreach(lc, table->columns)
			found |= strcmp(lfirst(lc), timestamp_column) == 0;
		if (!found)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("table \"%s\" has no column \"%s\" (the rule's timestamp_column)",
							table->qualified, timestamp_column)));
	}
	return table->qualified;
}

/*
 * '*' with a timestamp_column: every table '*' takes now must have it (a
 * table created later is checked by the worker when it joins the rule).
 */
static void
check_star_timestamp_column(const char *timestamp_column)
{
	RuleConfig	config;
	ListCell   *lc;

	memset(&config, 0, sizeof(RuleConfig));
	config.tables = list_make1(pstrdup("*"));
	config.created_by = GetUserNameFromId(GetUserId(), false);
	foreach(lc, replicator_rule_resolve(&config, NULL))
	{
		RuleTable  *table = lfirst(lc);
		ListCell   *lcol;
		bool		found = false;

		foreach(lcol, table->columns)
			found |= strcmp(lfirst(lcol), timestamp_column) == 0;
		if (!found)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("table \"%s\" has no column \"%s\" (the rule's timestamp_column)",
							table->qualified, timestamp_column),
					 errdetail("'*' takes every user table: each needs the column.")));
	}
}

/*
 * cdc rules decode the WAL with the replicator output plugin: where the
 * server approves output plugins (output_plugin_libraries, 15.19 and
 * later), it must be among them.
 */
static void
check_output_plugin_allowed(void)
{
	const char *setting = GetConfigOption("output_plugin_libraries", true, false);
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		allowed = false;

	if (setting == NULL)
		return;
	copy = pstrdup(setting);
	if (SplitIdentifierString(copy, ',', &names))
		foreach(lc, names)
			allowed |= strcmp(lfirst(lc), "replicator") == 0;
	if (!allowed)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cdc rules need the replicator output plugin to be allowed"),
				 errdetail("output_plugin_libraries is \"%s\".", setting),
				 errhint("ALTER SYSTEM SET output_plugin_libraries = pgoutput, test_decoding, replicator; SELECT pg_reload_conf();")));
}

/* Does the target record commit timestamps (last-write-wins without a column)? */
static void
check_target_commit_timestamps(const char *target)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(target)};
	char	   *conninfo;
	char	   *changed_by;
	char	   *error = NULL;
	bool		transient;
	PGconn	   *conn;
	PGresult   *res;
	bool		on;

	SPI_connect();
	if (replicator_spi_execute_as_owner("SELECT conninfo, changed_by FROM replicator.replicas"
										" WHERE name OPERATOR(pg_catalog.=) $1",
										1, types, values, NULL, true) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read replica \"%s\"", target);
	conninfo = MemoryContextStrdup(TopTransactionContext,
								   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	changed_by = MemoryContextStrdup(TopTransactionContext,
									 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	SPI_finish();

	conn = replicator_remote_connect(conninfo, "replicator add_rule", REPLICATOR_SESSION_QUERY,
									 replicator_replica_requires_password(changed_by),
									 &error, &transient);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to replica \"%s\" to check track_commit_timestamp", target),
				 errdetail("%s", error)));
	res = replicator_remote_one_row(conn, "SELECT pg_catalog.current_setting('track_commit_timestamp')::bool",
									0, NULL, &error, &transient);
	on = res != NULL && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	if (res)
		PQclear(res);
	replicator_remote_close(conn);
	if (!on)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("last-write-wins needs a timestamp_column or track_commit_timestamp on the target"),
				 errdetail("Replica \"%s\" does not record commit timestamps%s%s.", target,
						   error ? ": " : "", error ? error : ""),
				 errhint("Give timestamp_column => '<a column your application sets at each write>', or set track_commit_timestamp = on on the target and restart it.")));
}

PG_FUNCTION_INFO_V1(replicator_add_rule);

Datum
replicator_add_rule(PG_FUNCTION_ARGS)
{
	char	   *name = replicator_text_arg(fcinfo, 0, "name");
	char	   *target = replicator_text_arg(fcinfo, 1, "target");
	char	   *mode = replicator_text_arg(fcinfo, 2, "mode");
	char	   *resolution = replicator_text_arg(fcinfo, 4, "conflict_resolution");
	char	   *timestamp_column = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	ArrayType  *tables;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;
	Datum	   *stored;
	bool		star = false;
	size_t		len = strlen(name);
	Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	replicator_check_admin();
	if (len < 1 || len > 48 ||
		strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid rule name \"%s\"", name),
				 errhint("A rule name is 1 to 48 letters, digits, '_', '.' or '-'.")));
	if (strcmp(mode, "bidirectional") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("bidirectional rules are not available yet"),
				 errdetail("This version replicates in one direction: mode 'snapshot' or 'cdc'.")));
	if (strcmp(mode, "snapshot") != 0 && strcmp(mode, "cdc") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mode \"%s\" for rule \"%s\"", mode, name),
				 errhint("The mode is 'snapshot' (make the target a mirror at each sync) or 'cdc' (stream every change).")));
	if (strcmp(resolution, "source-wins") != 0 && strcmp(resolution, "target-wins") != 0 &&
		strcmp(resolution, "last-write-wins") != 0 && strcmp(resolution, "error") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid conflict_resolution \"%s\" for rule \"%s\"", resolution, name),
				 errhint("It is 'source-wins', 'target-wins', 'last-write-wins' or 'error'.")));
	if (timestamp_column != NULL && strcmp(resolution, "last-write-wins") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timestamp_column is only for conflict_resolution 'last-write-wins'")));
	if (strcmp(mode, "cdc") == 0 && wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cdc rules need wal_level = logical"),
				 errdetail("Changes are read from the WAL by logical decoding; wal_level is \"%s\".",
						   GetConfigOption("wal_level", false, false)),
				 errhint("ALTER SYSTEM SET wal_level = logical; then restart the server.")));
	if (strcmp(mode, "cdc") == 0 && max_replication_slots < 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cdc rules need a replication slot each, and max_replication_slots is 0"),
				 errhint("ALTER SYSTEM SET max_replication_slots = 10; then restart the server.")));
	if (strcmp(mode, "cdc") == 0)
		check_output_plugin_allowed();

	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tables must not be null"),
				 errhint("'{*}' takes every user table.")));
	tables = PG_GETARG_ARRAYTYPE_P(3);
	deconstruct_array(tables, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elem_nulls, &nelems);
	if (nelems == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rule \"%s\" names no table", name),
				 errhint("'{*}' takes every user table.")));
	stored = palloc(sizeof(Datum) * nelems);
	for (int i = 0; i < nelems; i++)
	{
		char	   *table;

		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("table names of a rule must not be null")));
		table = TextDatumGetCString(elems[i]);
		if (strcmp(table, "*") != 0)
			table = resolve_named_table(table, timestamp_column);
		else
			star = true;
		stored[i] = CStringGetTextDatum(table);
	}
	/*
	 * '*' reaches tables the caller may not read; the worker reads them as
	 * a superuser and ships them to a target the caller chose.
	 */
	if (star && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a superuser may add a rule on '*'"),
				 errdetail("'*' takes every user table, also those you may not read."),
				 errhint("Name the tables: tables => '{schema.table, ...}'.")));
	if (star && timestamp_column != NULL)
		check_star_timestamp_column(timestamp_column);
	/* the target must exist before anything is slow */
	{
		Oid			t1[1] = {TEXTOID};
		Datum		v1[1] = {CStringGetTextDatum(target)};

		SPI_connect();
		if (replicator_spi_execute_as_owner("SELECT FROM replicator.replicas WHERE name OPERATOR(pg_catalog.=) $1",
											1, t1, v1, NULL, true) != SPI_OK_SELECT)
			elog(ERROR, "could not read replicator.replicas");
		if (SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("replica \"%s\" does not exist", target),
					 errhint("A rule's target is a replica: SELECT replicator.add_replica('%s', '<conninfo>', stream_events => false) registers a database only as a rule target.", target)));
		SPI_finish();
	}
	if (strcmp(resolution, "last-write-wins") == 0 && timestamp_column == NULL)
		check_target_commit_timestamps(target);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(target);
	values[2] = CStringGetTextDatum(mode);
	values[3] = PointerGetDatum(construct_array(stored, nelems, TEXTOID, -1, false, TYPALIGN_INT));
	values[4] = CStringGetTextDatum(resolution);
	if (timestamp_column)
		values[5] = CStringGetTextDatum(timestamp_column);
	else
		nulls[5] = 'n';
	/* the statement runs as the owner: CURRENT_USER would name the owner */
	values[6] = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));
	if (replicator_catalog_exec("INSERT INTO replicator.rules"
					 " (name, target, mode, tables, conflict_resolution, timestamp_column, created_by)"
					 " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
					 7, types, values, nulls) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("rule \"%s\" already exists", name)));
	replicator_request_rescan_at_commit();
	PG_RETURN_VOID();
}

static void
change_rule(const char *sql, const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	replicator_check_admin();
	if (replicator_catalog_exec(sql, 1, types, values, NULL) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("rule \"%s\" does not exist", name),
				 errhint("SELECT DISTINCT rule FROM replicator.rule_status lists the rules.")));
	replicator_request_rescan_at_commit();
}

PG_FUNCTION_INFO_V1(replicator_drop_rule);

Datum
replicator_drop_rule(PG_FUNCTION_ARGS)
{
	change_rule("DELETE FROM replicator.rules WHERE name OPERATOR(pg_catalog.=) $1",
				replicator_text_arg(fcinfo, 0, "name"));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_pause_rule);

Datum
replicator_pause_rule(PG_FUNCTION_ARGS)
{
	change_rule("UPDATE replicator.rules SET paused = true WHERE name OPERATOR(pg_catalog.=) $1",
				replicator_text_arg(fcinfo, 0, "name"));
	PG_RETURN_VOID();
}

/*
 * Resuming also resumes the rule's tables paused one by one: they are
 * copied again, since their changes went by while they were paused.
 */
PG_FUNCTION_INFO_V1(replicator_resume_rule);

Datum
replicator_resume_rule(PG_FUNCTION_ARGS)
{
	char	   *name = replicator_text_arg(fcinfo, 0, "name");
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	change_rule("UPDATE replicator.rules SET paused = false WHERE name OPERATOR(pg_catalog.=) $1", name);
	replicator_catalog_exec("UPDATE replicator.rule_tables SET state = 'copy', reason = NULL,"
				 " copy_requested = pg_catalog.clock_timestamp()"
				 " WHERE rule OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.=) 'paused'",
				 1, types, values, NULL);
	PG_RETURN_VOID();
}

/* The rule's worker slot in this database, NULL if none (the lock held). */
static ReplicaSlot *
find_rule_slot(const char *name)
{
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *s = &ReplicatorState->slots[i];

		if (s->in_use && s->is_rule && s->dboid == MyDatabaseId && strcmp(s->name, name) == 0)
			return s;
	}
	return NULL;
}

/* The rule's worker slot, copied; false if it has none. */
static bool
rule_slot(const char *name, ReplicaSlot *copy, Latch **latch)
{
	ReplicaSlot *s;

	if (ReplicatorState == NULL)
		return false;
	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	s = find_rule_slot(name);
	if (s)
	{
		*copy = *s;
		if (latch)
			*latch = s->latch;
	}
	LWLockRelease(ReplicatorState->lock);
	return s != NULL;
}

/*
 * Whether a caller reads the rule's counts in replicator.rule_tables (its
 * worker then records them with every batch, not now and then): want is
 * true before the caller waits, false once it has read them.
 */
void
replicator_rule_want_counts(const char *name, bool want)
{
	ReplicaSlot *s;

	if (ReplicatorState == NULL)
		return;
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	s = find_rule_slot(name);
	if (s)
		s->count_waiters = Max(s->count_waiters + (want ? 1 : -1), 0);
	LWLockRelease(ReplicatorState->lock);
}

/*
 * Wait until the rule's target holds every change committed here before
 * the call.  The WAL is flushed first: the worker decodes only what is
 * durable.
 */
bool
replicator_rule_wait(const char *name, int64 timeout_ms)
{
	XLogRecPtr	upto = GetXLogInsertRecPtr();
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	/*
	 * At a page boundary the insert position is past the next page's
	 * header, where no record ends yet (and which cannot be flushed).
	 */
	if (XLogSegmentOffset(upto, wal_segment_size) == SizeOfXLogLongPHD)
		upto -= SizeOfXLogLongPHD;
	else if (upto % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		upto -= SizeOfXLogShortPHD;
	XLogFlush(upto);
	for (;;)
	{
		ReplicaSlot slot;
		Latch	   *latch = NULL;
		long		left;

		CHECK_FOR_INTERRUPTS();
		if (rule_slot(name, &slot, &latch))
		{
			if (slot.applied_lsn >= upto && slot.pid != 0)
				return true;
			if (latch)
				SetLatch(latch);
		}
		left = (long) ((deadline - GetCurrentTimestamp()) / 1000);
		if (left <= 0)
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 10), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

PG_FUNCTION_INFO_V1(replicator_wait_for_rule);

Datum
replicator_wait_for_rule(PG_FUNCTION_ARGS)
{
	char	   *name = replicator_text_arg(fcinfo, 0, "name");
	Interval   *timeout = PG_GETARG_INTERVAL_P(1);
	int64		timeout_ms;
	RuleConfig config;

	replicator_check_admin();
	replicator_rule_get(name, &config);
	if (!config.cdc)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("rule \"%s\" is a snapshot rule: nothing streams to wait for", name),
				 errhint("SELECT * FROM replicator.sync('%s') brings its target up to date now.", name)));
	timeout_ms = (timeout->time + (int64) timeout->day * USECS_PER_DAY +
				  (int64) timeout->month * 30 * USECS_PER_DAY) / 1000;
	PG_RETURN_BOOL(replicator_rule_wait(name, Max(timeout_ms, 0)));
}

/* ----------------------------------------------------------------
 * rule_worker_stats(): shared memory, for the rule_status view
 * ----------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(replicator_rule_worker_stats);

Datum
replicator_rule_worker_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ReplicaSlot *copy = palloc(sizeof(ReplicaSlot) * REPLICATOR_MAX_REPLICAS);
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	n = replicator_copy_slots(MyDatabaseId, true, copy);

	for (int i = 0; i < n; i++)
	{
		ReplicaSlot *s = &copy[i];
		Datum		values[11];
		bool		nulls[11] = {false};

		values[0] = CStringGetTextDatum(s->name);
		values[1] = Int32GetDatum(s->pid);
		nulls[1] = s->pid == 0;
		values[2] = CStringGetTextDatum(s->pid == 0 && s->state != REPLICA_INVALID ?
										"stopped" : replicator_replica_state_name(s->state));
		values[3] = LSNGetDatum(s->applied_lsn);
		nulls[3] = s->applied_lsn == 0;
		values[4] = CStringGetTextDatum(s->copy_table);
		nulls[4] = s->copy_table[0] == '\0';
		values[5] = Int64GetDatum(s->rows_copied);
		values[6] = Int64GetDatum(s->rows_total);
		values[7] = Int64GetDatum(s->pending_changes);
		nulls[7] = s->pid == 0;
		values[8] = TimestampTzGetDatum(s->oldest_pending);
		nulls[8] = s->oldest_pending == 0;
		values[9] = CStringGetTextDatum(s->last_error);
		nulls[9] = s->last_error[0] == '\0';
		values[10] = TimestampTzGetDatum(s->last_error_at);
		nulls[10] = s->last_error_at == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
