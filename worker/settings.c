/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  The configuration parameters (replicator.*), defined from _PG_init.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "apply.h"
#include "settings.h"

int			replicator_max_events_per_write = 10000;
int			replicator_connect_timeout = 15000;
int			replicator_poll_interval = 1000;
char	   *replicator_destination_synchronous_commit = NULL;
int			replicator_destination_sessions = 2;
int			replicator_max_databases = 64;
char	   *replicator_topology_file = NULL;

/*
 * The destination sessions send this value in their startup packet: a
 * value the server refuses would make every connection fail, so refuse it
 * here, where the mistake is made.
 */
static bool
check_destination_synchronous_commit(char **newval, void **extra, GucSource source)
{
	static const char *const values[] = {"local", "remote_write", "remote_apply", NULL};
	bool		b;

	if (parse_bool(*newval, &b))
		return true;
	for (int i = 0; values[i] != NULL; i++)
		if (pg_strcasecmp(*newval, values[i]) == 0)
			return true;
	GUC_check_errdetail("Valid values are on, off, local, remote_write and remote_apply.");
	return false;
}

/* Define every parameter, then reserve the prefix. */
void
replicator_define_settings(void)
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

	DefineCustomIntVariable("replicator.poll_interval",
							"How often an idle streaming worker looks for new events.",
							"Workers are woken at the commit of every insert_events() call; this is only the backstop.",
							&replicator_poll_interval,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("replicator.destination_synchronous_commit",
							   "synchronous_commit of the streaming workers' destination sessions.",
							   "off is safe: a batch a destination crash loses is sent again, since the position is the destination's own max(id).",
							   &replicator_destination_synchronous_commit,
							   "off",
							   PGC_SIGHUP, 0,
							   check_destination_synchronous_commit, NULL, NULL);

	DefineCustomIntVariable("replicator.destination_sessions",
							"Sessions each streaming worker opens to its destination.",
							"While catching up, large batches are applied in these sessions side by side and committed in id order.",
							&replicator_destination_sessions,
							2, 1, REPLICATOR_MAX_SESSIONS,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("replicator.topology_file",
							   "File the topology of each database in one is written to, at every change.",
							   "As replicator.topology() returns it, without passwords; %d is replaced by the database's name. Empty: no file.",
							   &replicator_topology_file,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	/* shared memory is sized by it: only while the postmaster loads us */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("replicator.max_databases",
								"Databases with the extension that the launcher serves at once.",
								"Databases without the extension take no entry once scanned.",
								&replicator_max_databases,
								64, 1, 65536,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);

	MarkGUCPrefixReserved("replicator");
}
