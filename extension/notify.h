/*-------------------------------------------------------------------------
 *
 * notify.h
 *	  Notifications of new events on channel "eventsinsert".
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_NOTIFY_H
#define REPLICATOR_NOTIFY_H

#include "postgres.h"

/* Notification channel, as slate's replicator listens on it. */
#define REPLICATOR_NOTIFY_CHANNEL "eventsinsert"

extern void replicator_suppress_notify(bool suppress);
extern void replicator_notify_restored(int64 last_id);

#endif							/* REPLICATOR_NOTIFY_H */
