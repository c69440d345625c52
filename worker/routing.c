/*-------------------------------------------------------------------------
 *
 * routing.c
 *	  What read_replica() reads from shared memory, and who puts it there.
 *
 * read_replica() reads no catalog: the scan worker copies the topology
 * (tolerances, conninfos without passwords, the master, the strategy) into
 * shared memory at every catalog change, and each streaming worker reports
 * how far behind its destination is.
 *
 * behind_since is the ts of the oldest event the destination lacks, 0 when
 * it has them all, kept from what the worker reads and what commits: a
 * batch read while nothing is in flight starts at the oldest missing event;
 * a commit makes the next batch in flight the oldest; a commit that reaches
 * the last event read, with nothing more seen, clears it.  Events that
 * commit after the last read count from the next read, which the commit's
 * latch makes immediate.  The replica_status view computes lag from the
 * events table instead, exactly; this is for routing, per call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "connection.h"
#include "routing.h"
#include "settings.h"
#include "shmem.h"

typedef struct ScanReplica
{
	char	   *name;
	bool		is_master;
	char	   *conninfo;		/* without password, "" if it has none */
	int64		lag_tolerance_ms;
} ScanReplica;

static const char *const routing_names[] = {
	[ROUTING_LEAST_LAG] = "least-lag",
	[ROUTING_ROUND_ROBIN] = "round-robin",
	[ROUTING_RANDOM] = "random"
};

bool
replicator_parse_routing(const char *strategy, ReadRouting *routing)
{
	for (int i = 0; i < (int) lengthof(routing_names); i++)
		if (strcmp(strategy, routing_names[i]) == 0)
		{
			*routing = (ReadRouting) i;
			return true;
		}
	return false;
}

const char *
replicator_routing_name(ReadRouting routing)
{
	return routing_names[routing];
}

/* ----------------------------------------------------------------
 * Scan worker
 * ----------------------------------------------------------------
 */

/*
 * What read_replica() may hand to any role: the conninfo without its
 * secrets, or "" if it does not parse or does not fit in shared memory (a
 * truncated conninfo would connect elsewhere).
 */
static char *
public_conninfo(const char *name, const char *conninfo)
{
	char	   *stripped = replicator_conninfo_without_password(conninfo);

	if (stripped == NULL)
		return "";
	if (strlen(stripped) >= REPLICA_CONNINFO_LEN)
	{
		ereport(WARNING,
				(errmsg("replicator: the connection string of replica \"%s\" is longer than %d bytes: read_replica() returns it without one",
						name, REPLICA_CONNINFO_LEN - 1)));
		return "";
	}
	return stripped;
}

static char *
value_in(int row, int col, MemoryContext cxt)
{
	char	   *value = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);

	return value ? MemoryContextStrdup(cxt, value) : NULL;
}

/*
 * Read the topology of this database's catalog; needs a transaction and SPI.
 * The result lives in TopMemoryContext (the scan worker exits soon after).
 */
void
replicator_topology_read(ScanTopology *topology)
{
	MemoryContext top = TopMemoryContext;
	char	   *master = NULL;
	ListCell   *lc;
	int			ret;

	memset(topology, 0, sizeof(ScanTopology));
	topology->routing = ROUTING_LEAST_LAG;

	ret = SPI_execute("SELECT name, master, routing FROM replicator.node_state", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.node_state: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		char	   *routing = value_in(0, 3, top);

		topology->in_topology = true;
		topology->node_name = value_in(0, 1, top);
		master = value_in(0, 2, top);
		topology->is_master = strcmp(topology->node_name, master) == 0;
		if (!replicator_parse_routing(routing, &topology->routing))
			topology->routing = ROUTING_LEAST_LAG;
	}

	ret = SPI_execute("SELECT name, role OPERATOR(pg_catalog.=) 'master', conninfo,"
					  " pg_catalog.round(pg_catalog.extract('epoch', lag_tolerance)"
					  "  OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8"
					  " FROM replicator.replicas WHERE stream_events",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.replicas: %s", SPI_result_code_string(ret));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		ScanReplica *replica = MemoryContextAllocZero(top, sizeof(ScanReplica));
		char	   *conninfo = value_in(r, 3, CurrentMemoryContext);
		char	   *tolerance = value_in(r, 4, CurrentMemoryContext);
		MemoryContext old;

		replica->name = value_in(r, 1, top);
		replica->is_master = strcmp(SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2), "t") == 0;
		/* a negative tolerance tolerates nothing, as 0 */
		replica->lag_tolerance_ms = tolerance ? Max(0, pg_strtoint64(tolerance)) : -1;
		/* SPI's context ends with SPI_finish: the list outlives it */
		old = MemoryContextSwitchTo(top);
		replica->conninfo = pstrdup(public_conninfo(replica->name, conninfo));
		topology->replicas = lappend(topology->replicas, replica);
		MemoryContextSwitchTo(old);
	}

	/*
	 * The master: the row node_state names (after a failover its role may
	 * still say 'slave'); with no node_state row, the one with role
	 * 'master'; a standalone source has neither.
	 */
	foreach(lc, topology->replicas)
	{
		ScanReplica *replica = lfirst(lc);

		if (master ? strcmp(replica->name, master) == 0 :
			replica->is_master && topology->master_name == NULL)
		{
			topology->master_name = replica->name;
			topology->master_conninfo = replica->conninfo;
		}
	}
	/* a master with no row here: its name, and no conninfo to give */
	if (master && topology->master_name == NULL)
		topology->master_name = master;
}

/* Into shared memory: the caller holds ReplicatorState->lock exclusively. */
void
replicator_topology_store(Oid dboid, const ScanTopology *topology)
{
	for (int i = 0; i < replicator_max_databases; i++)
	{
		DatabaseEntry *db = &ReplicatorState->databases[i];

		if (db->dboid != dboid)
			continue;
		db->in_topology = topology->in_topology;
		db->is_master = topology->is_master;
		db->routing = topology->routing;
		strlcpy(db->node_name, topology->node_name ? topology->node_name : "", REPLICA_NAME_LEN);
		strlcpy(db->master_name, topology->master_name ? topology->master_name : "", REPLICA_NAME_LEN);
		strlcpy(db->master_conninfo, topology->master_conninfo ? topology->master_conninfo : "",
				REPLICA_CONNINFO_LEN);
	}

	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		ReplicaSlot *slot = &ReplicatorState->slots[i];
		ListCell   *lc;

		if (!slot->in_use || slot->dboid != dboid)
			continue;
		slot->lag_tolerance_ms = -1;
		slot->conninfo[0] = '\0';
		foreach(lc, topology->replicas)
		{
			ScanReplica *replica = lfirst(lc);

			if (strcmp(replica->name, slot->name) == 0)
			{
				slot->lag_tolerance_ms = replica->lag_tolerance_ms;
				strlcpy(slot->conninfo, replica->conninfo, REPLICA_CONNINFO_LEN);
			}
		}
	}
}

/* ----------------------------------------------------------------
 * Streaming worker
 * ----------------------------------------------------------------
 */

/* batches sent and not yet committed, oldest first (they commit in order) */
typedef struct InFlight
{
	int64		last_id;
	TimestampTz first_ts;
} InFlight;

static InFlight *inflight = NULL;
static int	inflight_cap = 0;
static int	inflight_head = 0;
static int	inflight_count = 0;
static int64 read_upto = -1;	/* the last event read */
static bool read_more = false;	/* the last read saw events beyond it */

static void
set_behind_since(ReplicaSlot *slot, TimestampTz ts)
{
	/* we are the only writer: read without the lock */
	if (slot->behind_since == ts)
		return;
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->behind_since = ts;
	LWLockRelease(ReplicatorState->lock);
}

/* A new connection: batches in flight on the old one are gone. */
void
replicator_lag_reset(void)
{
	inflight_head = inflight_count = 0;
	read_upto = -1;
	read_more = false;
}

void
replicator_lag_batch_read(ReplicaSlot *slot, int64 first_id, int64 last_id,
						  TimestampTz first_ts, bool more)
{
	/* nothing in flight: everything before it has committed */
	if (inflight_count == 0)
		set_behind_since(slot, first_ts);

	if (inflight_count == inflight_cap)
	{
		int			cap = Max(16, inflight_cap * 2);
		InFlight   *grown = MemoryContextAlloc(TopMemoryContext, sizeof(InFlight) * cap);

		for (int i = 0; i < inflight_count; i++)
			grown[i] = inflight[(inflight_head + i) % inflight_cap];
		if (inflight)
			pfree(inflight);
		inflight = grown;
		inflight_cap = cap;
		inflight_head = 0;
	}
	inflight[(inflight_head + inflight_count) % inflight_cap].last_id = last_id;
	inflight[(inflight_head + inflight_count) % inflight_cap].first_ts = first_ts;
	inflight_count++;
	read_upto = last_id;
	read_more = more;
}

/* A read found nothing beyond what was read before. */
void
replicator_lag_read_nothing(ReplicaSlot *slot)
{
	read_more = false;
	if (inflight_count == 0)
		set_behind_since(slot, 0);
}

/*
 * A batch committed up to last_id: the new behind_since, for the caller to
 * store with the position, under the lock it takes for that.
 */
TimestampTz
replicator_lag_batch_committed(ReplicaSlot *slot, int64 last_id)
{
	while (inflight_count > 0 && inflight[inflight_head].last_id <= last_id)
	{
		inflight_head = (inflight_head + 1) % inflight_cap;
		inflight_count--;
	}
	if (inflight_count > 0)
		return inflight[inflight_head].first_ts;
	if (!read_more && last_id >= read_upto)
		return 0;
	/* the next event is not read yet: the next read sets it exactly */
	return slot->behind_since;
}

/*
 * How many user tables the destination has (the seed's schema count), for
 * replica_status.  Not a check: if it cannot be counted, it is unknown.
 */
void
replicator_report_tables(PGconn *conn, ReplicaSlot *slot, const char *replica)
{
	char	   *error = NULL;
	int32		tables = -1;
	PGresult   *res;

	res = replicator_remote_one_row(conn,
									"SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c"
									" JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
									" WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog.\"char\"[])"
									" AND n.nspname OPERATOR(pg_catalog.<>) ALL ('{pg_catalog,information_schema,replicator}'::pg_catalog.name[])"
									" AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast|temp_)'",
									0, NULL, &error, NULL);
	if (res == NULL)
		ereport(LOG,
				(errmsg("replicator: destination \"%s\": could not count its tables: %s",
						replica, error)));
	else
	{
		tables = pg_strtoint32(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	LWLockAcquire(ReplicatorState->lock, LW_EXCLUSIVE);
	slot->tables = tables;
	LWLockRelease(ReplicatorState->lock);
}
