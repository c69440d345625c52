/*-------------------------------------------------------------------------
 *
 * replicator.c
 *	  Module initialisation: configuration parameters and preload state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "replicator.h"

PG_MODULE_MAGIC;

int			replicator_max_events_per_write = 10000;
int			replicator_connect_timeout = 15000;
bool		replicator_preloaded = false;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("replicator.max_events_per_write",
							"Maximum number of events written to a destination in one transaction.",
							NULL,
							&replicator_max_events_per_write,
							10000, 1, 10000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("replicator.connect_timeout",
							"Maximum time to wait for a connection to a destination.",
							NULL,
							&replicator_connect_timeout,
							15000, 1000, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("replicator");

	if (process_shared_preload_libraries_in_progress)
		replicator_preloaded = true;
}

PG_FUNCTION_INFO_V1(replicator_streaming_available);

/*
 * Streaming needs the postmaster to have loaded us; backends forked from it
 * inherit the flag set in _PG_init.
 */
Datum
replicator_streaming_available(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(replicator_preloaded);
}
