/*-------------------------------------------------------------------------
 *
 * routing.h
 *	  What read routing needs in shared memory (routing.c): the topology
 *	  the scan reads from the catalog, and the lag and table count the
 *	  streaming worker reports.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_ROUTING_H
#define REPLICATOR_ROUTING_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "libpq-fe.h"
#include "nodes/pg_list.h"

#include "shmem.h"

/* The catalog's topology of one database, as the scan read it. */
typedef struct ScanTopology
{
	bool		in_topology;	/* node_state has its row */
	bool		is_master;
	ReadRouting routing;
	char	   *node_name;
	char	   *master_name;
	char	   *master_conninfo;	/* without password */
	List	   *replicas;		/* of ScanReplica */
} ScanTopology;

/* scan worker: inside its transaction, then with the lock held */
extern void replicator_topology_read(ScanTopology *topology);
extern void replicator_topology_store(Oid dboid, const ScanTopology *topology);

/* streaming worker: behind_since, exact as batches are read and committed */
extern void replicator_lag_reset(void);
extern void replicator_lag_batch_read(ReplicaSlot *slot, int64 first_id, int64 last_id,
									  TimestampTz first_ts, bool more);
extern void replicator_lag_read_nothing(ReplicaSlot *slot);
extern TimestampTz replicator_lag_batch_committed(ReplicaSlot *slot, int64 last_id);

/* streaming worker: the destination's user tables, once per connection */
extern void replicator_report_tables(PGconn *conn, ReplicaSlot *slot, const char *replica);

extern bool replicator_parse_routing(const char *strategy, ReadRouting *routing);
extern const char *replicator_routing_name(ReadRouting routing);

#endif							/* REPLICATOR_ROUTING_H */
