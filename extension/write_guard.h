/*-------------------------------------------------------------------------
 *
 * write_guard.h
 *	  The guards that keep events append-only and the id table the
 *	  allocator's own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_WRITE_GUARD_H
#define REPLICATOR_WRITE_GUARD_H

#include "postgres.h"

/* let the extension's own next statement on relid through */
extern void replicator_allow_next_write(Oid relid);
extern void replicator_allow_next_delete(Oid relid);
extern void replicator_forbid_writes(void);

#endif							/* REPLICATOR_WRITE_GUARD_H */
