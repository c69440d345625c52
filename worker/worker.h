/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  Shared memory between the launcher, the streaming workers and the
 *	  SQL functions that manage and watch them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_WORKER_H
#define REPLICATOR_WORKER_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "nodes/pg_list.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#include "replicator.h"
#include "connection.h"

#define REPLICATOR_MAX_REPLICAS		64
#define REPLICA_NAME_LEN			64
#define REPLICA_ERROR_LEN			512

typedef enum ReplicaState
{
	REPLICA_STOPPED = 0,
	REPLICA_CONNECTING,
	REPLICA_CATCHING_UP,
	REPLICA_STREAMING,
	REPLICA_DISCONNECTED,
	REPLICA_INVALID
} ReplicaState;

/* One destination of one source database. */
typedef struct ReplicaSlot
{
	bool		in_use;
	bool		wanted;			/* the catalog says: stream to it */
	Oid			dboid;
	char		name[REPLICA_NAME_LEN];
	uint32		generation;		/* bumped each time the slot is reassigned */
	pid_t		pid;			/* streaming worker, 0 if none */
	Latch	   *latch;			/* its latch, set when events commit */
	TimestampTz start_after;	/* launcher's restart backoff */
	int			failed_starts;

	/* reported by the worker */
	ReplicaState state;
	int64		position;		/* destination max(id), -1 if unknown */
	int64		events_sent;
	int64		bytes_sent;
	char		last_error[REPLICA_ERROR_LEN];
	TimestampTz last_error_at;
	TimestampTz last_contact;
} ReplicaSlot;

/* A database the launcher knows of. */
typedef struct DatabaseEntry
{
	Oid			dboid;
	uint64		catalog_generation; /* bumped at each catalog change's commit */
	uint64		scanned_generation; /* the generation the last scan started at */
	pid_t		scan_pid;		/* scan worker running, 0 if none */
	TimestampTz scan_started;
	TimestampTz dropping_until; /* DROP DATABASE under way: start nothing */
} DatabaseEntry;

typedef struct ReplicatorShared
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	pid_t		launcher_pid;
	ReplicaSlot slots[REPLICATOR_MAX_REPLICAS];
	/* replicator.max_databases entries; free ones have dboid 0 */
	DatabaseEntry databases[FLEXIBLE_ARRAY_MEMBER];
} ReplicatorShared;

extern ReplicatorShared *ReplicatorState;

/* shmem.c */
extern void replicator_shmem_request(void);
extern void replicator_request_rescan(Oid dboid);
extern bool replicator_try_rescan(Oid dboid);
extern void replicator_stop_database_workers(Oid dboid);
extern void replicator_forget_database(Oid dboid);
extern void replicator_database_drop_failed(Oid dboid);
extern void replicator_release_database(Oid dboid, uint64 scanned_generation);
extern uint64 replicator_catalog_generation(Oid dboid);
extern const char *replica_state_name(ReplicaState state);

/* launcher.c */
extern void replicator_register_launcher(void);
extern PGDLLEXPORT void replicator_launcher_main(Datum arg);
extern PGDLLEXPORT void replicator_scan_main(Datum arg);

/* stream.c */
extern PGDLLEXPORT void replicator_stream_main(Datum arg);

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

/* apply.c: sessions to one destination, committing batches in order */
#define REPLICATOR_MAX_SESSIONS		8

typedef struct ApplySet ApplySet;
typedef void (*ApplyCommitted) (int64 last_id, int count, int64 bytes);

extern ApplySet *apply_open(PGconn *first, const char *conninfo, const char *appname,
							bool require_password, const char *identity,
							int nsessions, int64 position,
							ApplyCommitted on_commit, char **error);
extern void apply_close(ApplySet *set);
extern bool apply_idle(ApplySet *set);
extern bool apply_failed_validation(ApplySet *set);
extern int64 apply_sent_upto(ApplySet *set);
extern bool apply_can_take(ApplySet *set, const Batch *batch);
extern char *apply_send(ApplySet *set, const Batch *batch);
extern void apply_poll(ApplySet *set);
extern char *apply_wait(ApplySet *set, bool *woken);

/* destination.c: slate's start-up checks */
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
	List	   *other_names;	/* other replicas with a known destination */
	List	   *other_identities;
} SourceFacts;

extern void read_source_facts(Oid nspid, const char *replica, SourceFacts *facts);
extern List *add_check(List *checks, const char *check, bool ok, char *detail);
extern List *check_destination(PGconn *conn, SourceFacts *facts, bool create_table,
							   DestinationInfo *info);
extern bool first_event_matches(PGconn *conn, SourceFacts *facts, char **detail,
								char **contents, bool *transient);
extern char *first_failure(List *checks, bool *transient);
extern char *source_identity(void);
extern char *remote_identity(PGconn *conn, char **error, bool *transient);

/* slate's events table, as format_type() names its columns */
#define EVENTS_COLUMNS "id bigint, ts timestamp with time zone, event jsonb"
#define EVENTS_COLUMNS_SQL \
	"(SELECT pg_catalog.string_agg(attname OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||)" \
	" pg_catalog.format_type(atttypid, atttypmod), ', ' ORDER BY attnum)" \
	" FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('events')" \
	" AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped)"

#endif							/* REPLICATOR_WORKER_H */
