/*-------------------------------------------------------------------------
 *
 * settings.h
 *	  The configuration parameters (replicator.*).
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_SETTINGS_H
#define REPLICATOR_SETTINGS_H

extern int	replicator_max_events_per_write;
extern int	replicator_connect_timeout;
extern int	replicator_poll_interval;
extern char *replicator_destination_synchronous_commit;
extern int	replicator_destination_sessions;
extern int	replicator_max_databases;
extern char *replicator_topology_file;

extern void replicator_define_settings(void);

#endif							/* REPLICATOR_SETTINGS_H */
