/*-------------------------------------------------------------------------
 *
 * apply.h
 *	  A streaming worker's sessions to its destination, committing batches
 *	  in id order; and the batches they apply.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_APPLY_H
#define REPLICATOR_APPLY_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "libpq-fe.h"

#include "node_link.h"

/*
 * A batch of events for one destination transaction, read by stream.c and
 * sent by apply.c.
 */
typedef struct Batch
{
	StringInfoData copy;		/* binary COPY, header to trailer */
	int64		first_id;
	int64		last_id;
	int			count;
	bool		more;			/* events beyond this batch were seen */
	/*
	 * A small batch also as binary parameters of one INSERT: int8[],
	 * timestamptz[], jsonb[], or for a single event (single) int8,
	 * timestamptz, jsonb.  Else NULL.
	 */
	bytea	   *params[3];
	bool		single;
} Batch;

#define REPLICATOR_MAX_SESSIONS		8

typedef struct ApplySet ApplySet;
typedef void (*ApplyCommitted) (int64 last_id, int count, int64 bytes);

extern ApplySet *replicator_apply_open(PGconn *first, const char *conninfo, const char *appname,
									   bool require_password, const char *identity,
									   const NodeAttach *attach, int nsessions, int64 position,
									   ApplyCommitted on_commit, char **error);
extern void replicator_apply_close(ApplySet *set);
extern bool replicator_apply_idle(ApplySet *set);
extern PGconn *replicator_apply_idle_conn(ApplySet *set);
extern bool replicator_apply_failed_validation(ApplySet *set);
extern int64 replicator_apply_sent_upto(ApplySet *set);
extern bool replicator_apply_can_take(ApplySet *set, const Batch *batch);
extern char *replicator_apply_send(ApplySet *set, const Batch *batch);
extern void replicator_apply_poll(ApplySet *set);
extern char *replicator_apply_wait(ApplySet *set, bool *woken);

#endif							/* REPLICATOR_APPLY_H */
