/* rule_sync.c: sync(), a rule run once now (stub, being written) */
#include "postgres.h"

#include "fmgr.h"

PG_FUNCTION_INFO_V1(replicator_sync);

Datum
replicator_sync(PG_FUNCTION_ARGS)
{
	elog(ERROR, "sync is not written yet");
	PG_RETURN_VOID();
}
