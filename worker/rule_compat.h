/*-------------------------------------------------------------------------
 *
 * rule_compat.h
 *	  The schema compatibility report of a replication rule (rule_compat.c):
 *	  what in the target's tables would stop the rule, or silently change
 *	  what it copies, for validate_rule() and the rule's worker alike.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_RULE_COMPAT_H
#define REPLICATOR_RULE_COMPAT_H

#include "postgres.h"

#include "libpq-fe.h"
#include "nodes/pg_list.h"

#include "rule_catalog.h"

/* One finding: an error stops the rule, a warning does not. */
typedef struct RuleCompatIssue
{
	char	   *table_name;		/* qualified, as the rule names it */
	char	   *column_name;	/* NULL for table-level */
	bool		error;
	char	   *issue;
	char	   *detail;			/* what to do */
} RuleCompatIssue;

/*
 * The issues of tables (RuleTable *) on the target of config, and of the
 * names in missing (char *: tables of the rule gone from this database),
 * sorted by table, column (table-level first), errors first.  Needs a
 * transaction and a snapshot: reads local catalogs, and data through SPI
 * as the extension's owner.  conn: a connected session on the target.
 */
extern List *replicator_rule_compat(PGconn *conn, const RuleConfig *config,
									List *tables, List *missing);
extern bool replicator_rule_compat_has_errors(List *issues);

#endif							/* REPLICATOR_RULE_COMPAT_H */
