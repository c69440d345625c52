/* rule_validate.c: validate_rule(), the schema compatibility report (stub, being written) */
#include "postgres.h"

#include "fmgr.h"

PG_FUNCTION_INFO_V1(replicator_validate_rule);

Datum
replicator_validate_rule(PG_FUNCTION_ARGS)
{
	elog(ERROR, "validate_rule is not written yet");
	PG_RETURN_VOID();
}
