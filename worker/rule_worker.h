/*-------------------------------------------------------------------------
 *
 * rule_worker.h
 *	  A cdc rule's background worker (rule_worker.c): its slot, the initial
 *	  copy of its tables, and the stream of decoded changes to its target.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_RULE_WORKER_H
#define REPLICATOR_RULE_WORKER_H

#include "postgres.h"

extern PGDLLEXPORT void replicator_rule_main(Datum arg);

#endif							/* REPLICATOR_RULE_WORKER_H */
