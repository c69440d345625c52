/*-------------------------------------------------------------------------
 *
 * read_routing.c
 *	  read_replica(): a node to read from, chosen from shared memory.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

PG_FUNCTION_INFO_V1(replicator_read_replica);

Datum
replicator_read_replica(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("not implemented yet")));
	PG_RETURN_VOID();
}

