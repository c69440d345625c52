/* rule_worker.c (being written) */
#include "postgres.h"

#include "storage/ipc.h"

#include "rule_worker.h"

void
replicator_rule_main(Datum arg)
{
	proc_exit(0);
}
