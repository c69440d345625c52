/*-------------------------------------------------------------------------
 *
 * replicas.c
 *	  The management API: add, drop, pause and resume destinations, check
 *	  them on demand, wait for them, and report on their workers.
 *
 * Every change to the catalog asks the launcher, at commit, to read it
 * again: workers start and stop within a second, with no restart.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "connection.h"
#include "destination.h"
#include "dump_restore.h"
#include "node.h"
#include "replicas.h"
#include "shmem.h"

#define REPLICA_NAME_PATTERN_HINT "A replica name is 1 to 48 letters, digits, '_', '.' or '-'."

void
replicator_check_admin(void)
{
	Oid			admin = get_role_oid("replicator_admin", true);

	replicator_check_sql_version();

	if (superuser() || (OidIsValid(admin) && has_privs_of_role(GetUserId(), admin)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to manage replicas"),
			 errdetail("Only superusers and members of replicator_admin manage destinations."),
			 errhint("GRANT replicator_admin TO %s;", GetUserNameFromId(GetUserId(), false))));
}

char *
replicator_text_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

static void
check_name(const char *name)
{
	size_t		len = strlen(name);

	if (len < 1 || len > 48 || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid replica name \"%s\"", name),
				 errhint(REPLICA_NAME_PATTERN_HINT)));
}

/*
 * libpq's parse errors can quote pieces of the string, and so of a password:
 * they are shown only when there is no password to leak.
 */
static char *
checked_conninfo_mask(const char *conninfo, const char *name)
{
	char	   *error = NULL;
	char	   *masked = replicator_conninfo_mask(conninfo, &error);

	if (masked == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid connection string for replica \"%s\"", name),
				 strstr(conninfo, "password") == NULL && strstr(conninfo, "@") == NULL ?
				 errdetail("%s", error) :
				 errdetail("libpq could not parse it (details withheld: the string holds a password).")));
	return masked;
}

/*
 * Run a statement on replicator.replicas as the extension's owner (only the
 * owner has privileges on it); returns rows processed.  The caller's rights
 * were checked before.
 */
uint64
replicator_catalog_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	uint64		processed;
	int			ret;

	SPI_connect();
	ret = replicator_spi_execute_as_owner(sql, nargs, types, values, nulls, false);
	if (ret < 0)
		elog(ERROR, "%s failed: %s", sql, SPI_result_code_string(ret));
	processed = SPI_processed;
	SPI_finish();
	return processed;
}

static void
change_replica(const char *sql, const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	if (replicator_catalog_exec(sql, 1, types, values, NULL) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("replica \"%s\" does not exist", name),
				 errhint("SELECT name FROM replicator.replica_status lists the replicas.")));
	replicator_request_rescan_at_commit();
}

/*
 * The topology is changed on its master (or a standalone source): a
 * slave's copy is its master's, pushed again at every change.  what: the
 * replica about to change; its own row, this node, is kept.
 */
NodeState
replicator_check_topology_writable(const char *what, bool dropping)
{
	NodeState	state;

	SPI_connect();
	replicator_read_node_state(&state, false);
	SPI_finish();
	if (state.exists && !state.is_master)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("this node is a slave of \"%s\": change the topology on its master", state.master),
				 errdetail("A slave's replicas are its master's, pushed to it at every change.")));
	if (dropping && state.exists && strcmp(what, state.name) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("replica \"%s\" is this node, the master of its topology", what),
				 errhint("Promote another node first: replicator.promote('<slave>').")));
	return state;
}

PG_FUNCTION_INFO_V1(replicator_add_replica);

Datum
replicator_add_replica(PG_FUNCTION_ARGS)
{
	char	   *name = replicator_text_arg(fcinfo, 0, "name");
	char	   *conninfo = replicator_text_arg(fcinfo, 1, "conninfo");
	char	   *role = replicator_text_arg(fcinfo, 2, "role");
	bool		enabled = PG_ARGISNULL(4) ? true : PG_GETARG_BOOL(4);

	/* 1.2's SQL function has no stream_events: check_admin rejects it below */
	bool		stream_events = PG_NARGS() <= 5 || PG_ARGISNULL(5) ? true : PG_GETARG_BOOL(5);
	Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, INTERVALOID, BOOLOID, TEXTOID, BOOLOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	NodeState	state;

	replicator_check_admin();
	check_name(name);
	(void) checked_conninfo_mask(conninfo, name);
	if (strcmp(role, "master") != 0 && strcmp(role, "slave") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid role \"%s\" for replica \"%s\"", role, name),
				 errhint("The role is 'master' or 'slave'.")));
	if (!stream_events && strcmp(role, "slave") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("replica \"%s\" cannot be a master without events streamed to it", name),
				 errdetail("stream_events => false registers a database only as a rule's target.")));
	state = replicator_check_topology_writable(name, false);
	if (strcmp(role, "master") == 0 && state.exists)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("this node is already registered as master \"%s\"", state.name),
				 errhint("Slaves are added with role => 'slave'.")));
	if (!superuser() && replicator_conninfo_password(conninfo) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("password is required"),
				 errdetail("A non-superuser must give a password in the connection string, so that the server's own credentials are never used."),
				 errhint("Add password=... to the connection string, or have a superuser add the replica.")));

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(conninfo);
	values[2] = CStringGetTextDatum(role);
	if (PG_ARGISNULL(3))
		nulls[3] = 'n';
	else
		values[3] = PG_GETARG_DATUM(3);
	values[4] = BoolGetDatum(enabled);
	/* the statement runs as the owner: CURRENT_USER would name the owner */
	values[5] = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));
	values[6] = BoolGetDatum(stream_events);

	/* rows inserted any other way arrive paused (dump_restore.c) */
	replicator_replica_api_insert(true);
	if (replicator_catalog_exec("INSERT INTO replicator.replicas"
					 " (name, conninfo, role, lag_tolerance, enabled, created_by, changed_by, stream_events)"
					 " VALUES ($1, $2, $3, $4, $5, $6, $6, $7) ON CONFLICT (name) DO NOTHING",
					 7, types, values, nulls) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("replica \"%s\" already exists", name)));
	replicator_replica_api_insert(false);

	/* the master names this node: epoch 1 of its topology begins */
	if (strcmp(role, "master") == 0)
	{
		replicator_catalog_exec("INSERT INTO replicator.node_state (name, epoch, master) VALUES ($1, 1, $1)",
					 1, types, values, NULL);
		replicator_catalog_exec("INSERT INTO replicator.epochs (epoch, master, first_id, how)"
					 " VALUES (1, $1, 1, 'registered')",
					 1, types, values, NULL);
	}
	replicator_request_rescan_at_commit();
	PG_RETURN_VOID();
}

/* A replica that rules copy to is not dropped from under them. */
static void
check_not_rule_target(const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	MemoryContext caller = CurrentMemoryContext;
	char	   *rules = NULL;

	SPI_connect();
	if (replicator_spi_execute_as_owner("SELECT pg_catalog.string_agg(pg_catalog.quote_ident(name), ', '"
										" ORDER BY name) FROM replicator.rules"
										" WHERE target OPERATOR(pg_catalog.=) $1",
										1, types, values, NULL, true) != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.rules");
	if (SPI_processed == 1)
	{
		char	   *value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (value)
			rules = MemoryContextStrdup(caller, value);
	}
	SPI_finish();
	if (rules)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("replica \"%s\" is the target of rule(s) %s", name, rules),
				 errhint("Drop the rules first: SELECT replicator.drop_rule('<rule>');")));
}

PG_FUNCTION_INFO_V1(replicator_drop_replica);

Datum
replicator_drop_replica(PG_FUNCTION_ARGS)
{
	replicator_check_admin();
	(void) replicator_check_topology_writable(replicator_text_arg(fcinfo, 0, "name"), true);
	check_not_rule_target(replicator_text_arg(fcinfo, 0, "name"));
	change_replica("DELETE FROM replicator.replicas WHERE name OPERATOR(pg_catalog.=) $1", replicator_text_arg(fcinfo, 0, "name"));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_pause_replica);

Datum
replicator_pause_replica(PG_FUNCTION_ARGS)
{
	replicator_check_admin();
	(void) replicator_check_topology_writable(replicator_text_arg(fcinfo, 0, "name"), false);
	change_replica("UPDATE replicator.replicas SET enabled = false WHERE name OPERATOR(pg_catalog.=) $1",
				   replicator_text_arg(fcinfo, 0, "name"));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_resume_replica);

/* Also clears an invalid mark: the operator says the destination is fixed. */
Datum
replicator_resume_replica(PG_FUNCTION_ARGS)
{
	replicator_check_admin();
	(void) replicator_check_topology_writable(replicator_text_arg(fcinfo, 0, "name"), false);
	change_replica("UPDATE replicator.replicas SET enabled = true, invalid_reason = NULL,"
				   " invalid_since = NULL WHERE name OPERATOR(pg_catalog.=) $1",
				   replicator_text_arg(fcinfo, 0, "name"));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_rescan);

Datum
replicator_rescan(PG_FUNCTION_ARGS)
{
	replicator_request_rescan_at_commit();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_mask_conninfo);

Datum
replicator_mask_conninfo(PG_FUNCTION_ARGS)
{
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_TEXT_P(cstring_to_text(checked_conninfo_mask(conninfo, "?")));
}

/* ----------------------------------------------------------------
 * validate(): slate's start-up checks, on demand
 * ----------------------------------------------------------------
 */
static void
validate_one(Tuplestorestate *store, TupleDesc desc, const char *name,
			 const char *conninfo, bool require_password, Oid nspid)
{
	MemoryContext caller = CurrentMemoryContext;
	SourceFacts facts;
	DestinationInfo info;
	PGconn	   *volatile conn = NULL;
	char	   *error;
	List	   *volatile checks = NIL;
	ListCell   *lc;

	/* the facts outlive SPI: allocate them in the caller's context */
	SPI_connect();
	MemoryContextSwitchTo(caller);
	replicator_read_source_facts(nspid, name, &facts);
	SPI_finish();

	PG_TRY();
	{
		conn = replicator_remote_connect(conninfo,
										 psprintf("replicator:%s:validate", get_database_name(MyDatabaseId)),
										 REPLICATOR_SESSION_QUERY, require_password,
										 &error, NULL);
		/* a password the destination did not ask for fails the connect */
		checks = replicator_add_check(NIL, "connect", conn != NULL, error);
		if (conn != NULL)
			checks = list_concat(checks, replicator_check_destination(conn, &facts, false, &info));
	}
	PG_FINALLY();
	{
		replicator_remote_close(conn);
	}
	PG_END_TRY();

	foreach(lc, checks)
	{
		DestinationCheck *c = lfirst(lc);
		Datum		values[4];
		bool		nulls[4] = {false, false, false, c->detail == NULL};

		values[0] = CStringGetTextDatum(name);
		values[1] = CStringGetTextDatum(c->check);
		values[2] = BoolGetDatum(c->ok);
		/* validate() is for admins: the detail with event contents */
		if (c->contents)
			values[3] = CStringGetTextDatum(c->contents);
		else
			values[3] = c->detail ? CStringGetTextDatum(c->detail) : (Datum) 0;
		nulls[3] = c->contents == NULL && c->detail == NULL;
		tuplestore_putvalues(store, desc, values, nulls);
	}
}

PG_FUNCTION_INFO_V1(replicator_validate);

Datum
replicator_validate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *only = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			nspid = replicator_source_namespace();
	List	   *names = NIL;
	List	   *conninfos = NIL;
	List	   *changers = NIL;
	ListCell   *ln,
			   *lc,
			   *lp;
	MemoryContext caller = CurrentMemoryContext;
	int			ret;

	replicator_check_admin();
	InitMaterializedSRF(fcinfo, 0);

	SPI_connect();
	ret = replicator_spi_execute_as_owner("SELECT name, conninfo, changed_by FROM replicator.replicas"
										  " ORDER BY name", 0, NULL, NULL, NULL, true);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.replicas: %s", SPI_result_code_string(ret));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		MemoryContext spi;

		if (only && strcmp(only, name) != 0)
			continue;
		spi = MemoryContextSwitchTo(caller);
		names = lappend(names, pstrdup(name));
		conninfos = lappend(conninfos,
							pstrdup(SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2)));
		changers = lappend(changers,
						   pstrdup(SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 3)));
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();

	if (only && names == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("replica \"%s\" does not exist", only)));

	forthree(ln, names, lc, conninfos, lp, changers)
		validate_one(rsinfo->setResult, rsinfo->setDesc, lfirst(ln), lfirst(lc),
					 replicator_replica_requires_password(lfirst(lp)), nspid);
	return (Datum) 0;
}

/* ----------------------------------------------------------------
 * wait_for_replica(): for tests and scripts, instead of sleeping
 * ----------------------------------------------------------------
 */
static bool
replica_exists(const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	/* names are no secret: replica_status shows them to every role */
	return replicator_catalog_exec("SELECT FROM replicator.replicas WHERE name OPERATOR(pg_catalog.=) $1",
						1, types, values, NULL) > 0;
}

static int64
source_max_id(void)
{
	Oid			nspid = replicator_source_namespace();
	bool		isnull;
	int64		max_id;

	/* as the owner: replica_status shows max(id) to every role anyway */
	SPI_connect();
	if (replicator_spi_execute_as_owner(psprintf("SELECT coalesce(pg_catalog.max(id), 0) FROM %s.events",
												 quote_identifier(get_namespace_name(nspid))),
										0, NULL, NULL, NULL, true) != SPI_OK_SELECT)
		elog(ERROR, "could not read max(id) of events");
	max_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return max_id;
}

/* The destination's committed position as its worker reports it, or -1. */
static int64
replica_position(const char *name)
{
	int64		position = -1;

	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *slot = &ReplicatorState->slots[i];

		if (slot->in_use && slot->dboid == MyDatabaseId && strcmp(slot->name, name) == 0)
			position = slot->position;
	}
	LWLockRelease(ReplicatorState->lock);
	return position;
}

PG_FUNCTION_INFO_V1(replicator_wait_for_replica);

/*
 * True once the destination holds every event committed before the call;
 * false at the timeout.
 */
Datum
replicator_wait_for_replica(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Interval   *timeout = PG_GETARG_INTERVAL_P(1);
	TimestampTz deadline;
	int64		target;

	if (ReplicatorState == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replicator is not loaded through shared_preload_libraries: nothing streams"),
				 errhint("Add shared_preload_libraries = 'replicator' to postgresql.conf and restart the server.")));
	if (!replica_exists(name))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("replica \"%s\" does not exist", name)));

	deadline = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													   TimestampTzGetDatum(GetCurrentTimestamp()),
													   IntervalPGetDatum(timeout)));
	target = source_max_id();

	for (;;)
	{
		long		remaining;

		CHECK_FOR_INTERRUPTS();
		if (replica_position(name) >= target)
			PG_RETURN_BOOL(true);
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			PG_RETURN_BOOL(false);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(remaining, 10), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ----------------------------------------------------------------
 * worker_stats(): shared memory, for the replica_status view
 * ----------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(replicator_worker_stats);

Datum
replicator_worker_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ReplicaSlot *copy = palloc(sizeof(ReplicaSlot) * REPLICATOR_MAX_REPLICAS);
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	n = replicator_copy_slots(MyDatabaseId, false, copy);

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
		values[3] = Int64GetDatum(s->position);
		nulls[3] = s->position < 0;
		values[4] = Int64GetDatum(s->events_sent);
		values[5] = Int64GetDatum(s->bytes_sent);
		values[6] = CStringGetTextDatum(s->last_error);
		nulls[6] = s->last_error[0] == '\0';
		values[7] = TimestampTzGetDatum(s->last_error_at);
		nulls[7] = s->last_error_at == 0;
		values[8] = TimestampTzGetDatum(s->last_contact);
		nulls[8] = s->last_contact == 0;
		values[9] = Int32GetDatum(s->tables);
		nulls[9] = s->tables < 0 || s->position < 0;
		values[10] = Int64GetDatum(s->diverged);
		nulls[10] = !s->is_node;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
