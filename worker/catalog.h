/*-------------------------------------------------------------------------
 *
 * catalog.h
 *	  The event source's schema and the replica catalog, for the workers and
 *	  the SQL functions alike.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_CATALOG_H
#define REPLICATOR_CATALOG_H

#include "postgres.h"

/* the version of the SQL objects this library works with */
#define REPLICATOR_SQL_VERSION "1.3"

/* pg_extension's row of replicator in this database */
typedef struct ReplicatorExtension
{
	Oid			oid;
	Oid			nspid;			/* the event source's schema */
	Oid			owner;
	char	   *version;
} ReplicatorExtension;

extern bool replicator_extension(ReplicatorExtension *ext);
extern Oid	replicator_source_namespace(void);
extern void replicator_check_sql_version(void);
extern void replicator_require_sql_version(const char *version);
extern int	replicator_spi_execute_as(Oid role, bool no_row_security, const char *sql, int nargs,
									  Oid *types, Datum *values, const char *nulls, bool read_only);
extern int	replicator_spi_execute_as_owner(const char *sql, int nargs, Oid *types,
											Datum *values, const char *nulls,
											bool read_only);
extern bool replicator_replica_requires_password(const char *changed_by);
extern void replicator_begin_local(void);
extern void replicator_end_local(void);

#endif							/* REPLICATOR_CATALOG_H */
