/*-------------------------------------------------------------------------
 *
 * promote.c
 *	  promote(): switchover and failover.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

PG_FUNCTION_INFO_V1(replicator_promote);

Datum
replicator_promote(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("not implemented yet")));
	PG_RETURN_VOID();
}

