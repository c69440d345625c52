/*-------------------------------------------------------------------------
 *
 * node_protocol.c
 *	  The slave's side of the node protocol, called by its master's worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

PG_FUNCTION_INFO_V1(replicator_attach_to_master);

Datum
replicator_attach_to_master(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("not implemented yet")));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_master_heartbeat);

Datum
replicator_master_heartbeat(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("not implemented yet")));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_take_over);

Datum
replicator_take_over(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("not implemented yet")));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_node_position);

Datum
replicator_node_position(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("not implemented yet")));
	PG_RETURN_VOID();
}

