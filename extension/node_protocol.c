/*-------------------------------------------------------------------------
 *
 * node_protocol.c
 *	  The slave's side of the node protocol: what a master's streaming
 *	  worker calls on the nodes it streams to, and a promotion on the node
 *	  it hands over to.
 *
 * attach_to_master() makes this node a slave of the caller at the caller's
 * epoch, with the caller's topology.  A node of an older epoch (a former
 * master, or a slave it fed) first moves the events it holds beyond the
 * common history to replicator.diverged_events: the new master's history
 * parted from its own at the first id of the first epoch after its own, as
 * timelines part in PostgreSQL.  A node of a newer epoch refuses: a stale
 * master never streams into it.
 *
 * These functions are for superusers only: they change which history a
 * node holds.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "dump_restore.h"
#include "node.h"
#include "node_guard.h"
#include "node_protocol.h"
#include "shmem.h"
#include "write_guard.h"

static void
check_superuser(const char *function)
{
	replicator_check_sql_version();
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", function),
				 errdetail("Only a superuser may change which history this node holds."),
				 errhint("The role in a node's connection string must be a superuser on that node.")));
}

/* Run sql as the owner; the number of rows it processed. */
static uint64
exec_owner(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	int			ret = replicator_spi_execute_as_owner(sql, nargs, types, values, NULL, false);

	if (ret != expected)
		elog(ERROR, "%s failed: %s", sql, SPI_result_code_string(ret));
	return SPI_processed;
}

static Oid
source_relid(const char *relname)
{
	Oid			relid = get_relname_relid(relname, replicator_source_namespace());

	if (!OidIsValid(relid))
		elog(ERROR, "relation \"%s\" of the event source does not exist", relname);
	return relid;
}

static const char *
source_table(const char *relname)
{
	return psprintf("%s.%s", quote_identifier(get_namespace_name(replicator_source_namespace())),
					quote_identifier(relname));
}

/* Let the next id allocation continue after next_id, ts after last_ts. */
static void
set_next_id(int64 next_id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(next_id)};

	replicator_allow_next_write(source_relid("id"));
	PG_TRY();
	{
		exec_owner(psprintf("UPDATE %s SET id = $1, last_ts = GREATEST(last_ts,"
							" (SELECT pg_catalog.max(e.ts) FROM %s e))",
							source_table("id"), source_table("events")),
				   1, types, values, SPI_OK_UPDATE);
	}
	PG_FINALLY();
	{
		replicator_forbid_writes();
	}
	PG_END_TRY();
}

/* No insert_events, no stream, no promotion while the roles change. */
void
replicator_lock_event_source(void)
{
	exec_owner(psprintf("LOCK TABLE %s, %s IN EXCLUSIVE MODE", source_table("id"), source_table("events")),
			   0, NULL, NULL, SPI_OK_UTILITY);
}

/*
 * The first id this node holds that the master's history does not: at the
 * first epoch where this node's history (replicator.epochs, before the
 * push replaces it) and the master's differ (one lacks it, or another
 * master or first id), the smaller first id of the two.  0 if none: this
 * node's events are all on the master's line.
 */
static int64
fork_point(Jsonb *topology)
{
	Oid			types[1] = {JSONBOID};
	Datum		values[1] = {JsonbPGetDatum(topology)};
	bool		isnull;
	Datum		first;

	exec_owner("WITH m AS (SELECT e.epoch, e.master, e.first_id"
			   "  FROM pg_catalog.jsonb_to_recordset($1 OPERATOR(pg_catalog.->) 'epochs')"
			   "  AS e(epoch pg_catalog.int8, master pg_catalog.text, first_id pg_catalog.int8))"
			   " SELECT LEAST(m.first_id, n.first_id)"
			   " FROM m FULL JOIN replicator.epochs n ON m.epoch OPERATOR(pg_catalog.=) n.epoch"
			   " WHERE m.epoch IS NULL OR n.epoch IS NULL"
			   "  OR m.master OPERATOR(pg_catalog.<>) n.master OR m.first_id OPERATOR(pg_catalog.<>) n.first_id"
			   " ORDER BY COALESCE(m.epoch, n.epoch) LIMIT 1",
			   1, types, values, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return 0;
	first = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(first);
}

/* Move events from first_id on to diverged_events; how many moved. */
static int64
move_diverged(int64 first_id, int64 epoch)
{
	Oid			types[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(first_id), Int64GetDatum(epoch)};
	uint64		moved;

	moved = exec_owner(psprintf("INSERT INTO replicator.diverged_events (id, ts, event, epoch)"
								" SELECT id, ts, event, $2 FROM %s WHERE id OPERATOR(pg_catalog.>=) $1",
								source_table("events")),
					   2, types, values, SPI_OK_INSERT);
	if (moved == 0)
		return 0;
	replicator_allow_next_delete(source_relid("events"));
	PG_TRY();
	{
		exec_owner(psprintf("DELETE FROM %s WHERE id OPERATOR(pg_catalog.>=) $1", source_table("events")),
				   1, types, values, SPI_OK_DELETE);
	}
	PG_FINALLY();
	{
		replicator_forbid_writes();
	}
	PG_END_TRY();
	set_next_id(first_id);
	return (int64) moved;
}

/*
 * Take the master's topology: its replicas (as add_replica's rows, so not
 * paused) and epochs.  The password rule follows the rows: a conninfo that
 * a superuser set on the master may do without a password here only
 * because a superuser of this node (the caller) vouches for it; any other
 * is marked as set by replicator_admin, which must give a password.
 */
static void
apply_topology(Jsonb *topology, const char *md5)
{
	Oid			types[2] = {JSONBOID, TEXTOID};
	Datum		values[2] = {JsonbPGetDatum(topology),
	CStringGetTextDatum(GetUserNameFromId(GetUserId(), false))};

	/* a rule's targets are this database's own, not the topology's */
	exec_owner("DELETE FROM replicator.replicas WHERE stream_events", 0, NULL, NULL, SPI_OK_DELETE);
	replicator_replica_api_insert(true);
	exec_owner("INSERT INTO replicator.replicas (name, conninfo, role, lag_tolerance, enabled,"
			   " incarnation, created_at, created_by, changed_by)"
			   " SELECT r.name, r.conninfo, r.role, r.lag_tolerance, r.enabled, r.incarnation,"
			   " r.created_at, r.created_by,"
			   " CASE WHEN r.superuser_set THEN $2 ELSE 'replicator_admin' END"
			   " FROM pg_catalog.jsonb_to_recordset($1 OPERATOR(pg_catalog.->) 'nodes')"
			   " AS r(name pg_catalog.text, conninfo pg_catalog.text, role pg_catalog.text,"
			   " lag_tolerance pg_catalog.interval, enabled pg_catalog.bool, incarnation pg_catalog.uuid,"
			   " created_at pg_catalog.timestamptz, created_by pg_catalog.name, superuser_set pg_catalog.bool)",
			   2, types, values, SPI_OK_INSERT);
	replicator_replica_api_insert(false);
	exec_owner("DELETE FROM replicator.epochs", 0, NULL, NULL, SPI_OK_DELETE);
	exec_owner("INSERT INTO replicator.epochs (epoch, master, first_id, started_at, how, detail)"
			   " SELECT e.epoch, e.master, e.first_id, e.started_at, e.how, e.detail"
			   " FROM pg_catalog.jsonb_to_recordset($1 OPERATOR(pg_catalog.->) 'epochs')"
			   " AS e(epoch pg_catalog.int8, master pg_catalog.text, first_id pg_catalog.int8,"
			   " started_at pg_catalog.timestamptz, how pg_catalog.text, detail pg_catalog.text)",
			   1, types, values, SPI_OK_INSERT);
	values[1] = CStringGetTextDatum(md5);
	exec_owner("UPDATE replicator.node_state SET routing = coalesce($1 OPERATOR(pg_catalog.->>) 'routing', routing),"
			   " topology_md5 = $2",
			   2, types, values, SPI_OK_UPDATE);
}

/*
 * Whether this node and the master's topology began with the same
 * registration: epoch 1 with the same master, started at the same moment.
 * A master of another topology must not demote this node.
 */
static bool
same_topology(Jsonb *topology)
{
	Oid			types[1] = {JSONBOID};
	Datum		values[1] = {JsonbPGetDatum(topology)};
	bool		isnull;

	exec_owner("SELECT NOT EXISTS (SELECT FROM replicator.epochs WHERE epoch OPERATOR(pg_catalog.=) 1)"
			   " OR EXISTS (SELECT FROM replicator.epochs l,"
			   "  pg_catalog.jsonb_to_recordset($1 OPERATOR(pg_catalog.->) 'epochs')"
			   "  AS e(epoch pg_catalog.int8, master pg_catalog.text, started_at pg_catalog.timestamptz)"
			   "  WHERE l.epoch OPERATOR(pg_catalog.=) 1 AND e.epoch OPERATOR(pg_catalog.=) 1"
			   "  AND l.master OPERATOR(pg_catalog.=) e.master"
			   "  AND l.started_at OPERATOR(pg_catalog.=) e.started_at)",
			   1, types, values, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Insert or update this node's row. */
static void
set_node_state(const char *name, int64 epoch, const char *master)
{
	Oid			types[3] = {TEXTOID, INT8OID, TEXTOID};
	Datum		values[3] = {CStringGetTextDatum(name), Int64GetDatum(epoch),
	CStringGetTextDatum(master)};

	exec_owner("INSERT INTO replicator.node_state (name, epoch, master) VALUES ($1, $2, $3)"
			   " ON CONFLICT (one) DO UPDATE SET name = excluded.name, epoch = excluded.epoch,"
			   " master = excluded.master",
			   3, types, values, SPI_OK_INSERT);
}

static int64
events_max_id(void)
{
	TimestampTz ts;

	return replicator_local_max_id(replicator_source_namespace(), &ts);
}

PG_FUNCTION_INFO_V1(replicator_attach_to_master);

/*
 * attach_to_master(master, epoch, node, topology): called by master's
 * worker on every session it opens here, and again when its topology
 * changes.  Returns this node's max(id) and how many events it set aside.
 */
Datum
replicator_attach_to_master(PG_FUNCTION_ARGS)
{
	char	   *master = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int64		epoch = PG_GETARG_INT64(1);
	char	   *node = text_to_cstring(PG_GETARG_TEXT_PP(2));
	Jsonb	   *topology = PG_GETARG_JSONB_P(3);
	char	   *md5;
	NodeState	state;
	int64		diverged = 0;
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	check_superuser("attach_to_master");
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	/*
	 * This session is the master's stream, a superuser's: from now on its
	 * unqualified "events" is this node's table, never one the database's
	 * owner put first on its search_path (with triggers that would run as
	 * the superuser).  Session-wide, kept if this transaction commits.
	 */
	(void) set_config_option("search_path",
							 psprintf("pg_catalog, %s",
									  quote_identifier(get_namespace_name(replicator_source_namespace()))),
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SET, true, 0, false);

	SPI_connect();
	replicator_read_node_state(&state, true);
	if (state.exists && state.epoch > epoch)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("node \"%s\" is at epoch " INT64_FORMAT ", \"%s\" at " INT64_FORMAT ": \"%s\" is no longer the master",
						state.name, state.epoch, master, epoch, master),
				 errdetail("The master of epoch " INT64_FORMAT " is \"%s\".", state.epoch, state.master)));
	if (state.exists && state.epoch == epoch &&
		(strcmp(state.master, master) != 0 || strcmp(state.name, node) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("node \"%s\" follows \"%s\" at epoch " INT64_FORMAT ", not \"%s\" as \"%s\"",
						state.name, state.master, epoch, master, node),
				 errdetail("Two nodes claim epoch " INT64_FORMAT ": one of them was promoted by force while the other was alive.", epoch),
				 errhint("Drop the node that should not be master from the topology, or promote one of them again.")));

	md5 = text_to_cstring(DatumGetTextPP(DirectFunctionCall1(md5_text,
															  CStringGetTextDatum(JsonbToCString(NULL, &topology->root,
																								 VARSIZE(topology))))));

	if (state.exists && !same_topology(topology))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("node \"%s\" belongs to another topology than \"%s\"", state.name, master),
				 errdetail("Their first epochs differ (master and start), so their histories are not one."),
				 errhint("A node leaves its topology only by DROP EXTENSION replicator.")));
	if (!state.exists || state.epoch < epoch)
	{
		int64		max_id;

		/* a former master's sessions here may no longer write: end them */
		replicator_end_attached_sessions(epoch);
		replicator_lock_event_source();
		max_id = events_max_id();
		if (!state.exists && max_id > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("database \"%s\" holds " INT64_FORMAT " events of its own: it cannot become a slave of \"%s\"",
							get_database_name(MyDatabaseId), max_id, master),
					 errdetail("A node joins a topology empty, or with a prefix of its master's history that it received as a node."),
					 errhint("Give the master a destination without the extension, or recreate the extension here.")));
		if (state.exists)
		{
			int64		first = fork_point(topology);

			if (first > 0 && first <= max_id)
			{
				diverged = move_diverged(first, state.epoch);
				ereport(LOG,
						(errmsg("replicator: node \"%s\" rejoins as a slave of \"%s\" at epoch " INT64_FORMAT ": moved " INT64_FORMAT " events from id " INT64_FORMAT " on to replicator.diverged_events",
								state.name, master, epoch, diverged, first),
						 errdetail("They were committed at epoch " INT64_FORMAT " after the history of \"%s\" parted from this node's.",
								   state.epoch, master)));
			}
		}
		set_node_state(node, epoch, master);
		ereport(LOG,
				(errmsg("replicator: this database is now node \"%s\", a slave of \"%s\" at epoch " INT64_FORMAT,
						node, master, epoch)));
	}
	if (state.topology_md5 == NULL || strcmp(state.topology_md5, md5) != 0)
	{
		apply_topology(topology, md5);
		replicator_request_rescan_at_commit();
	}
	values[0] = Int64GetDatum(events_max_id());
	values[1] = Int64GetDatum(diverged);
	SPI_finish();

	replicator_attach_session(master, epoch);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(replicator_master_heartbeat);

/*
 * master_heartbeat(epoch, master_max_id, behind_since): the master's word
 * on how far behind this slave is, kept for failover to judge its lag
 * tolerance by.  From the attached stream only.
 */
Datum
replicator_master_heartbeat(PG_FUNCTION_ARGS)
{
	Oid			types[3] = {INT8OID, INT8OID, TIMESTAMPTZOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	int64		epoch = PG_GETARG_INT64(0);

	check_superuser("master_heartbeat");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("epoch and master_max_id must not be null")));
	values[0] = Int64GetDatum(epoch);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';

	SPI_connect();
	if (replicator_spi_execute_as_owner(psprintf("UPDATE replicator.node_state SET contact_at = pg_catalog.now(),"
												 " contact_master_max_id = $2,"
												 " contact_lag_events = GREATEST($2 OPERATOR(pg_catalog.-)"
												 "   (SELECT coalesce(pg_catalog.max(e.id), 0) FROM %s e), 0),"
												 " contact_lag = coalesce(pg_catalog.now() OPERATOR(pg_catalog.-) $3, interval '0')"
												 " WHERE epoch OPERATOR(pg_catalog.=) $1 AND name OPERATOR(pg_catalog.<>) master",
												 source_table("events")),
										3, types, values, nulls, false) != SPI_OK_UPDATE)
		elog(ERROR, "could not update replicator.node_state");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("this node is not a slave at epoch " INT64_FORMAT, epoch)));
	SPI_finish();
	PG_RETURN_VOID();
}

/* Whether epoch began with master's switchover from from_master at first_id. */
static bool
took_over_from(int64 epoch, const char *master, const char *from_master, int64 first_id)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT8OID, TEXTOID};
	Datum		values[4] = {Int64GetDatum(epoch),
		CStringGetTextDatum(psprintf("from \"%s\"", from_master)),
		Int64GetDatum(first_id), CStringGetTextDatum(master)};

	exec_owner("SELECT FROM replicator.epochs WHERE epoch OPERATOR(pg_catalog.=) $1"
			   " AND how OPERATOR(pg_catalog.=) 'switchover' AND detail OPERATOR(pg_catalog.=) $2"
			   " AND first_id OPERATOR(pg_catalog.=) $3 AND master OPERATOR(pg_catalog.=) $4",
			   4, types, values, SPI_OK_SELECT);
	return SPI_processed == 1;
}

PG_FUNCTION_INFO_V1(replicator_take_over);

/*
 * take_over(epoch, from_master, max_id): a switchover's last step, called
 * by the fenced master once this node holds all max_id events.  This node
 * becomes master at epoch, and from_master its slave.
 */
Datum
replicator_take_over(PG_FUNCTION_ARGS)
{
	int64		epoch = PG_GETARG_INT64(0);
	char	   *from_master = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int64		max_id = PG_GETARG_INT64(2);
	NodeState	state;
	int64		held;

	check_superuser("take_over");
	SPI_connect();
	replicator_read_node_state(&state, true);
	/*
	 * Asked again after an outcome in doubt: done already, by this node's
	 * history (it may have moved on since).
	 */
	if (state.exists && took_over_from(epoch, state.name, from_master, max_id + 1))
	{
		SPI_finish();
		PG_RETURN_VOID();
	}
	if (!state.exists || state.is_master || strcmp(state.master, from_master) != 0 ||
		state.epoch != epoch - 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this node is not a slave of \"%s\" at epoch " INT64_FORMAT, from_master, epoch - 1),
				 state.exists ?
				 errdetail("It is \"%s\", %s at epoch " INT64_FORMAT ".", state.name,
						   state.is_master ? "a master" : psprintf("a slave of \"%s\"", state.master),
						   state.epoch) :
				 errdetail("It is in no topology.")));
	/* the stream of the old master stops here, at a batch boundary */
	replicator_lock_event_source();
	held = events_max_id();
	if (held != max_id)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("node \"%s\" holds " INT64_FORMAT " events, not the " INT64_FORMAT " of \"%s\"",
						state.name, held, max_id, from_master)));
	replicator_become_master(&state, epoch, "switchover", psprintf("from \"%s\"", from_master),
							 max_id + 1);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * This node becomes master at epoch; its former master becomes a slave.
 * Needs SPI, the node_state row locked and the event source locked.
 */
void
replicator_become_master(NodeState *state, int64 epoch, const char *how, const char *detail,
						 int64 first_id)
{
	Oid			types[5] = {INT8OID, TEXTOID, INT8OID, TEXTOID, TEXTOID};
	Datum		values[5] = {Int64GetDatum(epoch), CStringGetTextDatum(state->name),
		Int64GetDatum(first_id), CStringGetTextDatum(how),
	CStringGetTextDatum(detail ? detail : "")};

	exec_owner("UPDATE replicator.node_state SET epoch = $1, master = $2, contact_at = NULL,"
			   " contact_master_max_id = NULL, contact_lag_events = NULL, contact_lag = NULL,"
			   " topology_md5 = NULL",
			   2, types, values, SPI_OK_UPDATE);
	exec_owner("INSERT INTO replicator.epochs (epoch, master, first_id, how, detail)"
			   " VALUES ($1, $2, $3, $4, NULLIF($5, ''))",
			   5, types, values, SPI_OK_INSERT);
	/* the one master row moves: the old one first, for the unique index */
	exec_owner("UPDATE replicator.replicas SET role = 'slave'"
			   " WHERE role OPERATOR(pg_catalog.=) 'master'", 0, NULL, NULL, SPI_OK_UPDATE);
	exec_owner("UPDATE replicator.replicas SET role = 'master', invalid_reason = NULL, invalid_since = NULL"
			   " WHERE name OPERATOR(pg_catalog.=) $2", 2, types, values, SPI_OK_UPDATE);
	set_next_id(first_id);
	replicator_request_rescan_at_commit();
	ereport(LOG,
			(errmsg("replicator: node \"%s\" is master at epoch " INT64_FORMAT " (%s%s%s), from event id " INT64_FORMAT " on",
					state->name, epoch, how, detail ? " " : "", detail ? detail : "", first_id)));
}

PG_FUNCTION_INFO_V1(replicator_node_position);

/* node_position(): this node's name, epoch and max(id), for a failover. */
Datum
replicator_node_position(PG_FUNCTION_ARGS)
{
	NodeState	state;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	replicator_check_sql_version();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	SPI_connect();
	replicator_read_node_state(&state, false);
	SPI_finish();
	values[0] = state.exists ? CStringGetTextDatum(state.name) : (Datum) 0;
	nulls[0] = !state.exists;
	values[1] = Int64GetDatum(state.exists ? state.epoch : 0);
	values[2] = Int64GetDatum(events_max_id());
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
