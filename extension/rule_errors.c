/* rule_errors.c: retry_rule_error(), skip_rule_error() (stub, being written) */
#include "postgres.h"

#include "fmgr.h"

PG_FUNCTION_INFO_V1(replicator_retry_rule_error);

Datum
replicator_retry_rule_error(PG_FUNCTION_ARGS)
{
	elog(ERROR, "retry_rule_error is not written yet");
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(replicator_skip_rule_error);

Datum
replicator_skip_rule_error(PG_FUNCTION_ARGS)
{
	elog(ERROR, "skip_rule_error is not written yet");
	PG_RETURN_VOID();
}
