/*-------------------------------------------------------------------------
 *
 * rule_catalog.h
 *	  A replication rule as the catalog holds it (replicator.rules and its
 *	  target in replicator.replicas), and the tables it covers, for the
 *	  rule's worker and the SQL functions alike (rule_catalog.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_RULE_CATALOG_H
#define REPLICATOR_RULE_CATALOG_H

#include "postgres.h"

#include "nodes/pg_list.h"

typedef enum RuleConflictResolution
{
	RULE_SOURCE_WINS,
	RULE_TARGET_WINS,
	RULE_LAST_WRITE_WINS,
	RULE_ERROR
} RuleConflictResolution;

typedef struct RuleConfig
{
	char	   *name;
	int32		id;				/* names its slot */
	char	   *target;			/* the replica's name */
	char	   *conninfo;		/* the target's, password included */
	char	   *changed_by;		/* who last set that conninfo: password rule */
	char	   *created_by;		/* who added the rule: reads only what they may */
	bool		cdc;			/* else snapshot */
	List	   *tables;			/* char *: qualified names as stored, or "*" */
	RuleConflictResolution resolution;
	char	   *timestamp_column;	/* NULL if none */
	bool		paused;
} RuleConfig;

/* One table a rule covers, resolved in this database. */
typedef struct RuleTable
{
	Oid			relid;
	char	   *qualified;		/* quote_qualified_identifier(schema, name) */
	char	   *nspname;
	char	   *relname;
	List	   *key;			/* char *: primary key or replica identity
								 * index columns, NIL if it has neither */
	List	   *columns;		/* char *: every column but generated ones */
} RuleTable;

extern bool replicator_rule_read(const char *name, RuleConfig *config);
extern List *replicator_rule_names(bool cdc_only);
extern List *replicator_rule_resolve(const RuleConfig *config, List **missing);
extern RuleTable *replicator_rule_table(Oid relid);
extern bool replicator_rule_covers(const RuleConfig *config, Oid relid);
extern bool replicator_rule_excluded(Oid relid);
extern char *replicator_rule_slot_name(int32 id);
extern void replicator_rule_drop_orphan_slots(void);
extern Oid	replicator_rule_table_owner(Oid relid);
extern int	replicator_rule_spi_as_owner(Oid relid, const char *sql, int nargs, Oid *types,
										 Datum *values, const char *nulls, bool read_only);
extern const char *replicator_rule_resolution_name(RuleConflictResolution r);

#endif							/* REPLICATOR_RULE_CATALOG_H */
