/*-------------------------------------------------------------------------
 *
 * rule_decode.h
 *	  The extension's logical decoding output plugin (rule_decode.c): each
 *	  row change of a committed transaction as its columns' text, handed to
 *	  the rule worker that decodes in its own process.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_RULE_DECODE_H
#define REPLICATOR_RULE_DECODE_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "access/tupdesc.h"
#include "nodes/pg_list.h"

typedef enum RuleOp
{
	RULE_INSERT = 'i',
	RULE_UPDATE = 'u',
	RULE_DELETE = 'd',
	RULE_TRUNCATE = 't'
} RuleOp;

/* A committed transaction, as the worker is told of it. */
typedef struct RuleTxn
{
	TransactionId xid;
	XLogRecPtr	end_lsn;		/* end of its commit record */
	TimestampTz commit_time;
} RuleTxn;

/*
 * A row: its columns' names and their type's output (NULL: SQL NULL), in
 * the order of the table's columns, as pgoutput sends them.
 */
typedef struct RuleRow
{
	int			ncols;
	char	  **names;
	char	  **values;
	bool	   *json;			/* the value is JSON (a json or jsonb column) */
} RuleRow;

/* One row change. */
typedef struct RuleChange
{
	RuleOp		op;
	Oid			relid;
	RuleRow    *new_row;		/* insert, update */
	RuleRow    *old_row;		/* of the old key, or the old row under
								 * REPLICA IDENTITY FULL (update, delete);
								 * NULL for an update that kept its key */
	bool		old_is_full;	/* old_row holds every column */
	List	   *unchanged;		/* char *: TOASTed columns an update left as
								 * they were (not in new_row) */
	char	   *key;			/* the replica identity's values as text: a
								 * run of statements never holds a row twice */
	char	   *old_key;		/* of the old row, if the update changed it */
} RuleChange;

/* What the worker decoding in its own process is called back with. */
typedef struct RuleDecodeSink
{
	/* relation is open; false: not this rule's, ignore */
	void		(*change) (void *arg, const RuleTxn *txn, RuleChange *change);
	void		(*commit) (void *arg, const RuleTxn *txn);
	void	   *arg;
} RuleDecodeSink;

extern RuleRow *replicator_rule_row(TupleDesc desc, Datum *values, bool *nulls,
									List **unchanged);
extern char *replicator_rule_row_json(const RuleRow *row);

/* Set by the worker before it decodes; NULL in any other process. */
extern RuleDecodeSink *replicator_rule_decode_sink;

#endif							/* REPLICATOR_RULE_DECODE_H */
