/*-------------------------------------------------------------------------
 *
 * destination.h
 *	  The checks a destination passes on every connection (slate's, and
 *	  one history).
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_DESTINATION_H
#define REPLICATOR_DESTINATION_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "libpq-fe.h"
#include "nodes/pg_list.h"

typedef struct DestinationCheck
{
	const char *check;
	bool		ok;
	bool		transient;		/* failed: it could not run, for now */
	/* stored in the catalog and shown to every role: never event contents */
	char	   *detail;
	/* the detail with event contents, or NULL: for validate() and the log */
	char	   *contents;
} DestinationCheck;

typedef struct DestinationInfo
{
	char	   *identity;		/* system identifier/port/database */
	int64		max_id;			/* -1 if the table was empty or missing */
	int64		count;
	bool		created_table;
} DestinationInfo;

/* What the checks compare a destination with. */
typedef struct SourceFacts
{
	Oid			nspid;			/* the event source's schema */
	char	   *identity;
	int64		max_id;			/* 0 if empty */
	bool		has_first;
	int64		first_id;
	TimestampTz first_ts;
	char	   *first_event;	/* jsonb text */
	char	   *node_name;		/* this node, if it is a topology's master */
	List	   *other_names;	/* other replicas with a known destination */
	List	   *other_identities;
} SourceFacts;

extern void replicator_read_source_facts(Oid nspid, const char *replica, SourceFacts *facts);
extern List *replicator_add_check(List *checks, const char *check, bool ok, char *detail);
extern List *replicator_check_identity(PGconn *conn, SourceFacts *facts, DestinationInfo *info);
extern List *replicator_check_contents(PGconn *conn, SourceFacts *facts, bool create_table,
									   DestinationInfo *info);
extern List *replicator_check_destination(PGconn *conn, SourceFacts *facts, bool create_table,
										  DestinationInfo *info);
extern bool replicator_first_event_matches(PGconn *conn, SourceFacts *facts, char **detail,
										   char **contents, bool *transient);
extern char *replicator_first_failure(List *checks, bool *transient);
extern char *replicator_source_identity(void);
extern char *replicator_remote_identity(PGconn *conn, char **error, bool *transient);

/* slate's events table, as format_type() names its columns */
#define EVENTS_COLUMNS "id bigint, ts timestamp with time zone, event jsonb"
#define EVENTS_COLUMNS_SQL \
	"(SELECT pg_catalog.string_agg(attname OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||)" \
	" pg_catalog.format_type(atttypid, atttypmod), ', ' ORDER BY attnum)" \
	" FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('events')" \
	" AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped)"

#endif							/* REPLICATOR_DESTINATION_H */
