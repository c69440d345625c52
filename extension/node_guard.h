/*-------------------------------------------------------------------------
 *
 * node_guard.h
 *	  Who writes events on a node: insert_events on its master only, and on
 *	  a slave its master's stream, at the slave's epoch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_NODE_GUARD_H
#define REPLICATOR_NODE_GUARD_H

#include "postgres.h"

extern void replicator_check_insert_allowed(void);
extern void replicator_attach_session(const char *master, int64 epoch);
extern bool replicator_master_stream_may_write(void);

#endif							/* REPLICATOR_NODE_GUARD_H */
