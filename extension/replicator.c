/*-------------------------------------------------------------------------
 *
 * replicator.c
 *	  Module initialisation: settings, shared memory, hooks and the launcher.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"

#include "launcher.h"
#include "settings.h"
#include "shmem.h"
#include "utility_hook.h"

PG_MODULE_MAGIC;

static bool replicator_preloaded = false;

void		_PG_init(void);

void
_PG_init(void)
{
	replicator_define_settings();

	if (!process_shared_preload_libraries_in_progress)
		return;

	replicator_preloaded = true;
	replicator_shmem_request();
	replicator_register_commit_wakeup();
	replicator_install_utility_hook();

	/*
	 * pg_upgrade runs its servers in binary-upgrade mode: nothing may stream
	 * from (or write to) a cluster while it is being upgraded.
	 */
	if (!IsBinaryUpgrade)
		replicator_register_launcher();
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
