/*-------------------------------------------------------------------------
 *
 * rule_apply.h
 *	  Apply decoded changes to a rule's target (rule_apply.c): runs of
 *	  changes as multi-row statements, conflicts resolved in the same
 *	  statement, several statements and the progress record per round trip.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_RULE_APPLY_H
#define REPLICATOR_RULE_APPLY_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "libpq-fe.h"

#include "rule_catalog.h"
#include "rule_decode.h"

/* A table as the apply knows it. */
typedef struct RuleApplyTable
{
	RuleTable  *table;
	List	   *columns;		/* char *: the columns both sides have */
	List	   *row_type;		/* char *: the target's columns, in order */
	Oid			target_relid;	/* the target's table */
	bool		update_triggers;	/* fire there on update: apply each update */
	MemoryContext cxt;			/* of what is known of the target: set by
								 * whoever makes the table */
	/* rows named as layout have row_type's values at row_type_from (-1: none) */
	int			layout_n;
	char	  **layout;
	int		   *row_type_from;
	bool		paused;			/* its changes are skipped */
	/* the initial copy holds the changes of transactions visible to it */
	bool		copied;
	TransactionId copy_xmin;
	TransactionId copy_xmax;
	List	   *copy_xip;		/* TransactionId, as uintptr_t */
	XLogRecPtr	copy_until;		/* commits from here on are not in the copy */
	/* since last reported to the local catalog */
	int64		inserted;
	int64		updated;
	int64		deleted;
	int64		conflicts;
} RuleApplyTable;

/* A conflict met, recorded locally once the target has committed. */
typedef struct RuleConflict
{
	int64		target_id;		/* its row in replicator_apply.conflicts */
	char	   *table_name;
	char	   *op;
	char	   *kind;
	char	   *key;
	char	   *source_row;
	char	   *target_row;
	char	   *resolution;
	bool		set_aside;		/* conflict_resolution 'error' */
} RuleConflict;

typedef struct RuleApply
{
	PGconn	   *conn;
	RuleConflictResolution resolution;
	char	   *timestamp_column;
	bool		use_origin;		/* last-write-wins by commit timestamps */
	char	   *source;			/* progress key: this source and slot */
	char	   *slot;
	int			max_rows;		/* per statement */

	StringInfoData sql;			/* statements not yet sent */
	List	   *owners;			/* what each statement applies (or NULL) */

	/* sent, results not yet in: a batch commits while the next is built */
	bool		in_flight;
	bool		sent_open;		/* what was sent left a transaction open */
	XLogRecPtr	in_flight_lsn;	/* what it records if it commits */
	List	   *sent_owners;
	XLogRecPtr	committed_lsn;	/* the last commit whose results came in */

	/*
	 * Batches commit asynchronously there; what is flushed there is known
	 * from the target's WAL positions each commit reports.
	 */
	XLogRecPtr	durable_lsn;	/* committed and flushed there */
	List	   *not_flushed;	/* DurablePoint *, oldest first */
	bool		in_flight_durable;	/* the commit in flight is synchronous */
	bool		batch_conflicts;	/* the open batch met conflicts: its commit
									 * is synchronous */
	XLogRecPtr	commit_wal;		/* target WAL: where its commit ended, */
	XLogRecPtr	flushed_wal;	/* and how far it was flushed */
	bool		xact_open;
	int64		changes;		/* in the open target transaction */

	/*
	 * The runs being built: each one table, one kind of change, distinct
	 * keys.  One at a time, in the source's order; with reorder (the
	 * target session replicates as PostgreSQL's own apply does, no
	 * triggers or foreign keys checked), one per table, since changes of
	 * different tables in one target transaction commute.
	 */
	List	   *runs;			/* struct RuleRun *, in the order they began */
	bool		reorder;
	int64		run_bytes;		/* of the runs under way */

	/* statements prepared in the target session (rule_apply.c) */
	List	   *prepared;
	List	   *to_prepare;		/* before what is built is sent */
	int			prepared_count;
	MemoryContext prepared_cxt;

	List	   *conflicts;		/* RuleConflict *, since the last commit */
	/* a statement failed: its message and table (NULL: not a table's) */
	char	   *error;
	RuleApplyTable *error_table;
	bool		error_transient;	/* a deadlock, a timeout, a shutdown: retry */
	MemoryContext cxt;			/* what is built: reset once sent */
	MemoryContext sent_cxt;		/* what is in flight */
	MemoryContext conflict_cxt; /* conflicts and error: reset once recorded */
} RuleApply;

extern void replicator_rule_apply_init(RuleApply *apply, PGconn *conn, const RuleConfig *config,
									   const char *source, const char *slot);
extern void replicator_rule_apply_change(RuleApply *apply, RuleApplyTable *table,
										 const RuleTxn *txn, RuleChange *change);
extern void replicator_rule_apply_rows(RuleApply *apply, RuleApplyTable *table, RuleRow **rows,
									   int n);
extern bool replicator_rule_apply_send(RuleApply *apply, const char *extra_sql);
extern bool replicator_rule_apply_commit(RuleApply *apply, XLogRecPtr lsn, const char *extra_sql,
										 bool wait, bool durable);
extern bool replicator_rule_apply_wait(RuleApply *apply);
extern void replicator_rule_apply_reset(RuleApply *apply);
extern void replicator_rule_apply_recorded(RuleApply *apply);
extern void replicator_rule_read_conflict(RuleApply *apply, PGresult *res, int r,
										  const char *table_name);
extern char *replicator_rule_target_columns(PGconn *conn, RuleApplyTable *table);
extern bool replicator_rule_row_type_changed(PGconn *conn, RuleApplyTable *table);

#endif							/* REPLICATOR_RULE_APPLY_H */
