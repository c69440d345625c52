/*-------------------------------------------------------------------------
 *
 * rule_catalog.c
 *	  Read a replication rule and resolve the tables it covers.
 *
 * Tables are stored as the caller of add_rule named them, qualified at that
 * time, or as '*': every ordinary, logged user table outside the system's
 * schemas and the extension's own objects, resolved afresh at each call so
 * that a table created later joins the rule.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/rls.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
#include "utils/regproc.h"

#include "catalog.h"
#include "rule_catalog.h"

static char *
spi_text(HeapTuple tup, TupleDesc desc, int col, MemoryContext cxt)
{
	char	   *value = SPI_getvalue(tup, desc, col);

	return value ? MemoryContextStrdup(cxt, value) : NULL;
}

/*
 * The rule and its target, read as the extension's owner.  False if there
 * is no such rule.  Needs a transaction and a snapshot.
 */
bool
replicator_rule_read(const char *name, RuleConfig *config)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	bool		found = false;

	memset(config, 0, sizeof(RuleConfig));
	SPI_connect();
	if (replicator_spi_execute_as_owner("SELECT r.id, r.target, p.conninfo, p.changed_by,"
										" r.mode OPERATOR(pg_catalog.=) 'cdc', r.conflict_resolution,"
										" r.timestamp_column, r.paused, r.tables, r.created_by"
										" FROM replicator.rules r JOIN replicator.replicas p"
										" ON p.name OPERATOR(pg_catalog.=) r.target"
										" WHERE r.name OPERATOR(pg_catalog.=) $1",
										1, types, values, NULL, true) != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.rules");
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *resolution;
		ArrayType  *tables;
		Datum	   *elems;
		int			nelems;
		MemoryContext old;

		found = true;
		config->name = MemoryContextStrdup(cxt, name);
		config->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		config->target = spi_text(tup, desc, 2, cxt);
		config->conninfo = spi_text(tup, desc, 3, cxt);
		config->changed_by = spi_text(tup, desc, 4, cxt);
		config->cdc = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		resolution = SPI_getvalue(tup, desc, 6);
		if (strcmp(resolution, "target-wins") == 0)
			config->resolution = RULE_TARGET_WINS;
		else if (strcmp(resolution, "last-write-wins") == 0)
			config->resolution = RULE_LAST_WRITE_WINS;
		else if (strcmp(resolution, "error") == 0)
			config->resolution = RULE_ERROR;
		else
			config->resolution = RULE_SOURCE_WINS;
		config->timestamp_column = spi_text(tup, desc, 7, cxt);
		config->paused = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
		config->created_by = spi_text(tup, desc, 10, cxt);
		tables = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 9, &isnull));
		deconstruct_array(tables, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &nelems);
		old = MemoryContextSwitchTo(cxt);
		for (int i = 0; i < nelems; i++)
			config->tables = lappend(config->tables, TextDatumGetCString(elems[i]));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return found;
}

/*
 * Names of the rules; cdc_only: those whose worker should run, cdc rules
 * neither paused themselves nor aimed at a paused or invalid replica (a
 * restored target arrives paused, and its rules with it).
 */
List *
replicator_rule_names(bool cdc_only)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *names = NIL;

	SPI_connect();
	if (replicator_spi_execute_as_owner(cdc_only ?
										"SELECT r.name FROM replicator.rules r JOIN replicator.replicas p"
										" ON p.name OPERATOR(pg_catalog.=) r.target"
										" WHERE NOT r.paused AND r.mode OPERATOR(pg_catalog.=) 'cdc'"
										" AND p.enabled AND p.invalid_reason IS NULL ORDER BY r.name" :
										"SELECT name FROM replicator.rules ORDER BY name",
										0, NULL, NULL, NULL, true) != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.rules");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *name = spi_text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, cxt);
		MemoryContext old = MemoryContextSwitchTo(cxt);

		names = lappend(names, name);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return names;
}

/* Is relid a member of the replicator extension (its events, id, ...)? */
static bool
extension_member(Oid relid)
{
	ReplicatorExtension ext;
	Relation	depend;
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;
	bool		member = false;

	if (!replicator_extension(&ext))
		return false;
	depend = table_open(DependRelationId, AccessShareLock);
	ScanKeyInit(&key[0], Anum_pg_depend_classid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(RelationRelationId));
	ScanKeyInit(&key[1], Anum_pg_depend_objid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(depend, DependDependerIndexId, true, NULL, 2, key);
	while (!member && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tup);

		member = dep->deptype == DEPENDENCY_EXTENSION &&
			dep->refclassid == ExtensionRelationId && dep->refobjid == ext.oid;
	}
	systable_endscan(scan);
	table_close(depend, AccessShareLock);
	return member;
}

/*
 * Tables no rule may cover: the extension's own, anything in its management
 * schema or in replicator_apply (a target's progress), system schemas.
 */
bool
replicator_rule_excluded(Oid relid)
{
	Oid			nsp = get_rel_namespace(relid);
	char	   *nspname = OidIsValid(nsp) ? get_namespace_name(nsp) : NULL;

	if (nspname == NULL || IsCatalogNamespace(nsp) || isAnyTempNamespace(nsp) ||
		IsToastNamespace(nsp) || strcmp(nspname, "information_schema") == 0 ||
		strcmp(nspname, "replicator") == 0 || strcmp(nspname, "replicator_apply") == 0)
		return true;
	return extension_member(relid);
}

/* What '*' takes: an ordinary, logged, unpartitioned user table. */
static bool
star_candidate(Form_pg_class rel, Oid relid)
{
	return rel->relkind == RELKIND_RELATION && rel->relpersistence == RELPERSISTENCE_PERMANENT &&
		!rel->relispartition && !replicator_rule_excluded(relid);
}

/* The key a rule identifies rows by: the replica identity index, else the pkey. */
static List *
table_key(Relation rel)
{
	Oid			indexid = RelationGetReplicaIndex(rel);
	List	   *key = NIL;
	Relation	index;

	/* the identity the WAL carries; under REPLICA IDENTITY FULL, the pkey */
	if (!OidIsValid(indexid))
		indexid = RelationGetPrimaryKeyIndex(rel);
	if (!OidIsValid(indexid))
		return NIL;
	index = index_open(indexid, AccessShareLock);
	for (int i = 0; i < index->rd_index->indnkeyatts; i++)
	{
		AttrNumber	attnum = index->rd_index->indkey.values[i];

		key = lappend(key, pstrdup(NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname)));
	}
	index_close(index, AccessShareLock);
	return key;
}

/* A resolved table, or NULL if relid is no longer a table. */
RuleTable *
replicator_rule_table(Oid relid)
{
	Relation	rel = try_relation_open(relid, AccessShareLock);
	RuleTable  *table;
	TupleDesc	desc;

	if (rel == NULL)
		return NULL;
	table = palloc0(sizeof(RuleTable));
	table->relid = relid;
	table->nspname = get_namespace_name(RelationGetNamespace(rel));
	table->relname = pstrdup(RelationGetRelationName(rel));
	table->qualified = quote_qualified_identifier(table->nspname, table->relname);
	table->key = table_key(rel);
	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && !att->attgenerated)
			table->columns = lappend(table->columns, pstrdup(NameStr(att->attname)));
	}
	relation_close(rel, AccessShareLock);
	return table;
}

static bool
creator_may_read(const RuleConfig *config, Oid relid)
{
	Oid			role = config->created_by ? get_role_oid(config->created_by, true) : InvalidOid;

	if (!OidIsValid(role))
		return false;
	if (superuser_arg(role))
		return true;
	return pg_class_aclcheck(relid, role, ACL_SELECT) == ACLCHECK_OK &&
		check_enable_rls(relid, role, true) != RLS_ENABLED;
}

static int
rule_table_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(((RuleTable *) lfirst(a))->qualified, ((RuleTable *) lfirst(b))->qualified);
}

/*
 * The tables the rule covers now, in a stable order (by qualified name).
 * Named tables that no longer exist go to *missing (char *), if given.
 */
List *
replicator_rule_resolve(const RuleConfig *config, List **missing)
{
	List	   *tables = NIL;
	List	   *relids = NIL;
	ListCell   *lc;
	bool		star = false;

	foreach(lc, config->tables)
	{
		const char *name = lfirst(lc);
		RangeVar   *rv;
		Oid			relid;

		if (strcmp(name, "*") == 0)
		{
			star = true;
			continue;
		}
		rv = makeRangeVarFromNameList(stringToQualifiedNameList(name));
		relid = RangeVarGetRelid(rv, NoLock, true);
		if (!OidIsValid(relid) || replicator_rule_excluded(relid))
		{
			if (missing)
				*missing = lappend(*missing, pstrdup(name));
			continue;
		}
		relids = list_append_unique_oid(relids, relid);
	}
	if (star)
	{
		Relation	pg_class = table_open(RelationRelationId, AccessShareLock);
		TableScanDesc scan = table_beginscan_catalog(pg_class, 0, NULL);
		HeapTuple	tup;

		while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
		{
			Form_pg_class rel = (Form_pg_class) GETSTRUCT(tup);

			if (star_candidate(rel, rel->oid))
				relids = list_append_unique_oid(relids, rel->oid);
		}
		table_endscan(scan);
		table_close(pg_class, AccessShareLock);
	}
	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);
		RuleTable  *table;

		/*
		 * The worker reads as a superuser: a rule takes only what the role
		 * that added it may read now (SELECT, and no row security on it).
		 */
		if (!creator_may_read(config, relid))
		{
			if (missing)
				*missing = lappend(*missing, psprintf("%s (%s may not read it)",
													 get_rel_name(relid), config->created_by));
			continue;
		}
		table = replicator_rule_table(relid);
		if (table)
			tables = lappend(tables, table);
	}
	list_sort(tables, rule_table_cmp);
	return tables;
}

/* Does the rule cover relid now (a table the worker has not seen yet)? */
bool
replicator_rule_covers(const RuleConfig *config, Oid relid)
{
	ListCell   *lc;
	HeapTuple	tup;
	bool		covers = false;

	foreach(lc, config->tables)
	{
		const char *name = lfirst(lc);

		if (strcmp(name, "*") == 0)
		{
			tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
			if (HeapTupleIsValid(tup))
			{
				covers = star_candidate((Form_pg_class) GETSTRUCT(tup), relid);
				ReleaseSysCache(tup);
			}
		}
		else
			covers = RangeVarGetRelid(makeRangeVarFromNameList(stringToQualifiedNameList(name)),
									  NoLock, true) == relid &&
				!replicator_rule_excluded(relid);
		if (covers)
			return true;
	}
	return false;
}

/* Slot names are cluster-wide: the database's oid keeps them apart. */
char *
replicator_rule_slot_name(int32 id)
{
	return psprintf("replicator_rule_%u_%d", MyDatabaseId, id);
}

const char *
replicator_rule_resolution_name(RuleConflictResolution r)
{
	switch (r)
	{
		case RULE_SOURCE_WINS:
			return "source-wins";
		case RULE_TARGET_WINS:
			return "target-wins";
		case RULE_LAST_WRITE_WINS:
			return "last-write-wins";
		case RULE_ERROR:
			return "error";
	}
	return "?";
}

/*
 * Drop this database's rule slots whose rule is gone (drop_rule, or a
 * dropped and re-added rule: a new id).  A slot in use is left for the
 * next scan, once its worker has stopped.
 */
void
replicator_rule_drop_orphan_slots(void)
{
	char	   *sql = psprintf("SELECT pg_catalog.pg_drop_replication_slot(s.slot_name)"
							   " FROM pg_catalog.pg_replication_slots s"
							   " WHERE s.datoid OPERATOR(pg_catalog.=) %u AND NOT s.active"
							   " AND s.slot_name OPERATOR(pg_catalog.~) '^replicator_rule_%u_[0-9]+$'"
							   " AND NOT EXISTS (SELECT FROM replicator.rules r"
							   "  WHERE s.slot_name OPERATOR(pg_catalog.=) ('replicator_rule_%u_'"
							   "  OPERATOR(pg_catalog.||) r.id))",
							   MyDatabaseId, MyDatabaseId, MyDatabaseId);

	SPI_connect();
	if (SPI_execute(sql, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not drop the slots of dropped rules");
	SPI_finish();
}

/* The table's owner, the table locked against a drop meanwhile. */
Oid
replicator_rule_table_owner(Oid relid)
{
	HeapTuple	tup;
	Oid			owner;

	LockRelationOid(relid, AccessShareLock);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table with OID %u of a rule was dropped meanwhile", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Run sql on a table's rows as its owner: rendering a row can run code the
 * owner chose (a cast of their type), which must never run with the rights
 * of the worker or the extension's owner.  No row security: it would copy
 * a subset silently.
 */
int
replicator_rule_spi_as_owner(Oid relid, const char *sql, int nargs, Oid *types, Datum *values,
							 const char *nulls, bool read_only)
{
	return replicator_spi_execute_as(replicator_rule_table_owner(relid), true,
									 sql, nargs, types, values, nulls, read_only);
}
