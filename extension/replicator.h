/*-------------------------------------------------------------------------
 *
 * replicator.h
 *	  Declarations shared by the SQL-callable code and the workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_H
#define REPLICATOR_H

#include "postgres.h"

/* Notification channel, as slate's replicator listens on it. */
#define REPLICATOR_NOTIFY_CHANNEL "eventsinsert"

/* GUCs (replicator.c) */
extern int	replicator_max_events_per_write;
extern int	replicator_connect_timeout;
extern int	replicator_poll_interval;
extern char *replicator_destination_synchronous_commit;
extern int	replicator_destination_sessions;
extern int	replicator_max_databases;

/* True in processes forked after the library was preloaded. */
extern bool replicator_preloaded;

/* write_guard.c: let the extension's own next statement on relid through */
extern void replicator_allow_next_write(Oid relid);
extern void replicator_forbid_writes(void);

/* notify.c */
extern void replicator_suppress_notify(bool suppress);
extern void replicator_notify_restored(int64 last_id);

/* the version of the SQL objects this library works with */
#define REPLICATOR_SQL_VERSION "1.1"

/* replicator.c */
extern Oid	replicator_source_namespace(void);
extern void replicator_check_sql_version(void);
extern int	replicator_spi_execute_as_owner(const char *sql, int nargs, Oid *types,
											Datum *values, const char *nulls,
											bool read_only);
extern bool replicator_replica_requires_password(const char *changed_by);

/* utility_hook.c */
extern void replicator_install_utility_hook(void);

/* worker/shmem.c: signals sent at commit of the calling transaction */
extern void replicator_request_rescan_at_commit(void);
extern void replicator_request_rescan_of_created(Oid dboid);
extern void replicator_wake_workers_at_commit(void);

#endif							/* REPLICATOR_H */
