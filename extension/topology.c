/*-------------------------------------------------------------------------
 *
 * topology.c
 *	  node(), topology() and set_read_routing(): what a node says of itself and its topology.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

PG_FUNCTION_INFO_V1(replicator_node);

Datum
replicator_node(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("not implemented yet")));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_topology);

Datum
replicator_topology(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("not implemented yet")));
	PG_RETURN_VOID();
}

