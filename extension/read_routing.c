/*-------------------------------------------------------------------------
 *
 * read_routing.c
 *	  read_replica(): a node to read from, chosen from shared memory; and
 *	  set_read_routing(), the strategy it chooses by.
 *
 * Applications call read_replica() before reads, so it touches no catalog
 * and runs no query: the scan worker keeps the topology in shared memory
 * (routing.c) and the streaming workers their destinations' positions and
 * lag.  It never returns a password: the conninfos there have none.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "replicas.h"
#include "routing.h"
#include "settings.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(replicator_set_read_routing);

Datum
replicator_set_read_routing(PG_FUNCTION_ARGS)
{
	char	   *strategy = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ReadRouting routing;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	int			ret;
	uint64		updated;

	replicator_check_admin();
	/* a slave's strategy is its master's, pushed to it */
	(void) replicator_check_topology_writable(NULL, false);
	if (!replicator_parse_routing(strategy, &routing))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid read routing strategy \"%s\"", strategy),
				 errhint("The strategies are 'least-lag', 'round-robin' and 'random'.")));

	values[0] = CStringGetTextDatum(replicator_routing_name(routing));
	SPI_connect();
	ret = replicator_spi_execute_as_owner("UPDATE replicator.node_state SET routing = $1",
										  1, types, values, NULL, false);
	if (ret < 0)
		elog(ERROR, "could not update replicator.node_state: %s", SPI_result_code_string(ret));
	updated = SPI_processed;
	SPI_finish();

	/* the strategy is the node's: a standalone source has no node */
	if (updated == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database is not a node of a replica topology"),
				 errdetail("The read routing strategy is kept with this node's place in the topology."),
				 errhint("Register this node first: SELECT replicator.add_replica('<its name>', '<how the others reach it>', role => 'master');")));

	/* read_replica() reads it from shared memory: the scan copies it there */
	replicator_request_rescan_at_commit();
	PG_RETURN_VOID();
}

/*
 * Whether slot is too far behind: it lacks an event older than its
 * tolerance.  Candidates are connected, so "no contact for longer than the
 * tolerance", the view's other half of stale, does not arise here.
 */
static bool
slot_stale(const ReplicaSlot *slot, TimestampTz *now)
{
	if (slot->lag_tolerance_ms < 0 || slot->behind_since == 0)
		return false;
	if (*now == 0)
		*now = GetCurrentTimestamp();
	return *now - slot->behind_since > slot->lag_tolerance_ms * 1000;
}

PG_FUNCTION_INFO_V1(replicator_read_replica);

/*
 * Candidates: this database's streamed slaves, connected (streaming or
 * catching up), not stale, at least at min_event_id.  least-lag takes the
 * highest position (the first name among equals), round-robin the next in
 * name order by a counter all sessions share, random any with equal odds.
 * With no candidate, the master's row; with no master either (a standalone
 * source), no row.
 */
Datum
replicator_read_replica(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		min_event_id = PG_ARGISNULL(0) ? PG_INT64_MIN : PG_GETARG_INT64(0);
	int			candidates[REPLICATOR_MAX_REPLICAS];
	int			n = 0;
	int			chosen = -1;
	TimestampTz now = 0;
	DatabaseEntry *db = NULL;
	char		name[REPLICA_NAME_LEN];
	char		conninfo[REPLICA_CONNINFO_LEN];
	bool		found = false;

	InitMaterializedSRF(fcinfo, 0);
	if (ReplicatorState == NULL)
		return (Datum) 0;

	LWLockAcquire(ReplicatorState->lock, LW_SHARED);
	for (int i = 0; i < replicator_max_databases && db == NULL; i++)
		if (ReplicatorState->databases[i].dboid == MyDatabaseId)
			db = &ReplicatorState->databases[i];

	for (int i = 0; i < REPLICATOR_MAX_REPLICAS; i++)
	{
		const ReplicaSlot *slot = &ReplicatorState->slots[i];
		int			j;

		if (!slot->in_use || !slot->wanted || slot->dboid != MyDatabaseId ||
			(slot->state != REPLICA_STREAMING && slot->state != REPLICA_CATCHING_UP) ||
			slot->position < min_event_id || slot_stale(slot, &now))
			continue;
		/* in name order, so that choices do not depend on slot numbers */
		for (j = n; j > 0 && strcmp(ReplicatorState->slots[candidates[j - 1]].name, slot->name) > 0; j--)
			candidates[j] = candidates[j - 1];
		candidates[j] = i;
		n++;
	}

	if (n > 0 && db != NULL)
	{
		switch (db->routing)
		{
			case ROUTING_LEAST_LAG:
				chosen = candidates[0];
				for (int k = 1; k < n; k++)
					if (ReplicatorState->slots[candidates[k]].position >
						ReplicatorState->slots[chosen].position)
						chosen = candidates[k];
				break;
			case ROUTING_ROUND_ROBIN:
				chosen = candidates[pg_atomic_fetch_add_u64(&db->round_robin, 1) % n];
				break;
			case ROUTING_RANDOM:
				chosen = candidates[pg_prng_uint64_range(&pg_global_prng_state, 0, n - 1)];
				break;
		}
	}

	if (chosen >= 0)
	{
		strlcpy(name, ReplicatorState->slots[chosen].name, REPLICA_NAME_LEN);
		strlcpy(conninfo, ReplicatorState->slots[chosen].conninfo, REPLICA_CONNINFO_LEN);
		found = true;
	}
	else if (db != NULL && db->master_name[0] != '\0')
	{
		strlcpy(name, db->master_name, REPLICA_NAME_LEN);
		strlcpy(conninfo, db->master_conninfo, REPLICA_CONNINFO_LEN);
		found = true;
	}
	LWLockRelease(ReplicatorState->lock);

	if (found)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(name);
		/* "": it had none that may be shown (see routing.c) */
		values[1] = CStringGetTextDatum(conninfo);
		nulls[1] = conninfo[0] == '\0';
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
