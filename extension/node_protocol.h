/*-------------------------------------------------------------------------
 *
 * node_protocol.h
 *	  Role changes of this node, shared by the node protocol and promote().
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_NODE_PROTOCOL_H
#define REPLICATOR_NODE_PROTOCOL_H

#include "postgres.h"

#include "node.h"

extern void replicator_become_master(NodeState *state, int64 epoch, const char *how,
									 const char *detail, int64 first_id);
extern void replicator_lock_event_source(void);

#endif							/* REPLICATOR_NODE_PROTOCOL_H */
