/*-------------------------------------------------------------------------
 *
 * replicas.h
 *	  The management API's check of its caller.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_REPLICAS_H
#define REPLICATOR_REPLICAS_H

#include "postgres.h"

#include "fmgr.h"

#include "node.h"

/* superusers and members of replicator_admin only */
extern void replicator_check_admin(void);
extern char *replicator_text_arg(FunctionCallInfo fcinfo, int n, const char *what);
extern uint64 replicator_catalog_exec(const char *sql, int nargs, Oid *types, Datum *values,
									  const char *nulls);

/* the topology changes on its master (or a standalone source) only */
extern NodeState replicator_check_topology_writable(const char *what, bool dropping);

#endif							/* REPLICATOR_REPLICAS_H */
