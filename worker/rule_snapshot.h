/*-------------------------------------------------------------------------
 *
 * rule_snapshot.h
 *	  Make one table of a rule's target an exact mirror of the source's
 *	  (rule_snapshot.c): compare by hashes first, then move only the rows
 *	  that differ.  For sync() of a snapshot rule, and for a cdc rule's
 *	  worker re-synchronising a single table.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_RULE_SNAPSHOT_H
#define REPLICATOR_RULE_SNAPSHOT_H

#include "postgres.h"

#include "libpq-fe.h"

#include "rule_catalog.h"

/*
 * Mirror table (which must have a key) into the same schema-qualified table
 * of the target reached by conn, in one target transaction, committed on
 * return.  The source is read under the active snapshot (read-only SPI):
 * the caller's statement snapshot.  Adds what it did to *inserted, *updated
 * and *deleted, and to *rows_sent the rows and keys sent to the target.
 * On error the target transaction is left open or aborted: close the
 * connection, or roll it back, before using it again.
 */
extern void replicator_rule_mirror_table(PGconn *conn, RuleTable *table,
										 int64 *inserted, int64 *updated,
										 int64 *deleted, int64 *rows_sent);

#endif							/* REPLICATOR_RULE_SNAPSHOT_H */
