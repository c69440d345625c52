/*-------------------------------------------------------------------------
 *
 * dump_restore.h
 *	  pg_dump and pg_restore of an event source (dump_restore.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DUMP_RESTORE_H
#define DUMP_RESTORE_H

#include "utils/relcache.h"

/* events' INSERT guard: true if this statement is the restore COPY */
extern bool replicator_restore_copy_begins(Relation rel);

/* add_replica around its insert: true before, false after */
extern void replicator_replica_api_insert(bool starting);

#endif							/* DUMP_RESTORE_H */
