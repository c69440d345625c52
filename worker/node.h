/*-------------------------------------------------------------------------
 *
 * node.h
 *	  This database's place in a replica topology (replicator.node_state),
 *	  for the workers and the SQL functions alike.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_NODE_H
#define REPLICATOR_NODE_H

#include "postgres.h"

#include "datatype/timestamp.h"

typedef struct NodeState
{
	bool		exists;			/* false: a standalone source */
	char	   *name;
	int64		epoch;
	char	   *master;
	bool		is_master;
	/* a slave's last heartbeat from its master */
	bool		has_contact;
	TimestampTz contact_at;
	int64		contact_master_max_id;
	int64		contact_lag_events;
	int64		contact_lag_us;
	char	   *topology_md5;	/* of the topology last pushed here */
} NodeState;

extern bool replicator_read_node_state(NodeState *state, bool for_update);
extern char *replicator_topology_push_document(void);
extern int64 replicator_local_max_id(Oid nspid, TimestampTz *max_ts);
extern bool replicator_node_role_now(char *name, char *master, int64 *epoch);
extern TimestampTz replicator_event_ts(Oid nspid, int64 id);

/* switchover fence, in shared memory: insert_events refuses meanwhile */
extern bool replicator_fence(const char *fenced_for, int64 epoch);
extern void replicator_unfence(bool in_doubt);
extern void replicator_register_attached(int64 epoch);
extern int	replicator_end_attached_sessions(int64 epoch);
extern bool replicator_fenced(int64 epoch, char *fenced_for);
extern void replicator_refuse_if_in_doubt(const char *candidate);

#endif							/* REPLICATOR_NODE_H */
