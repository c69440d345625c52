/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Shared memory between the launcher, the streaming workers and the
 *	  SQL functions that manage and watch them; signals sent at commit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_SHMEM_H
#define REPLICATOR_SHMEM_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#define REPLICATOR_MAX_REPLICAS		64
#define REPLICA_NAME_LEN			64
/* sessions of masters' streams a node keeps track of, per database */
#define REPLICATOR_MAX_ATTACHED	32
#define REPLICA_ERROR_LEN			512
#define REPLICA_CONNINFO_LEN		1024

typedef enum ReplicaState
{
	REPLICA_STOPPED = 0,
	REPLICA_CONNECTING,
	REPLICA_CATCHING_UP,
	REPLICA_STREAMING,
	REPLICA_DISCONNECTED,
	REPLICA_INVALID
} ReplicaState;

/*
 * One destination of one source database, or one cdc rule's worker
 * (is_rule: then name is the rule's).
 */
typedef struct ReplicaSlot
{
	bool		in_use;
	bool		is_rule;
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

	/* topology (1.2): set by the scan from the catalog */
	int64		lag_tolerance_ms;	/* -1: none */
	char		conninfo[REPLICA_CONNINFO_LEN]; /* without its password */
	/* reported by the worker */
	bool		is_node;		/* the destination has the extension: a slave */
	TimestampTz behind_since;	/* ts of the oldest event it lacks, 0 if none */
	int32		tables;			/* user tables in the destination, -1 unknown */
	int64		diverged;		/* events it set aside when it joined us */

	/* rules (1.3): reported by the rule's worker */
	uint64		applied_lsn;	/* every change before it is on the target */
	char		copy_table[REPLICA_ERROR_LEN];	/* initial copy under way */
	int64		rows_copied;
	int64		rows_total;
	int64		pending_changes;	/* decoded, not yet committed there */
	TimestampTz oldest_pending; /* commit time of the oldest of them */
	int32		count_waiters;	/* sync() calls reading the counts: record
								 * them with every batch */
} ReplicaSlot;

typedef enum ReadRouting
{
	ROUTING_LEAST_LAG = 0,
	ROUTING_ROUND_ROBIN,
	ROUTING_RANDOM
} ReadRouting;

/* A database the launcher knows of. */
typedef struct DatabaseEntry
{
	Oid			dboid;
	uint64		catalog_generation; /* bumped at each catalog change's commit */
	uint64		scanned_generation; /* the generation the last scan started at */
	pid_t		scan_pid;		/* scan worker running, 0 if none */
	TimestampTz scan_started;
	TimestampTz dropping_until; /* DROP DATABASE under way: start nothing */

	/* topology (1.2): set by the scan from the catalog */
	bool		in_topology;	/* this database is a node */
	bool		is_master;
	ReadRouting routing;
	char		node_name[REPLICA_NAME_LEN];
	char		master_name[REPLICA_NAME_LEN];
	char		master_conninfo[REPLICA_CONNINFO_LEN];	/* without password */
	pg_atomic_uint64 round_robin;	/* read_replica's turn, for all sessions */
	/* set by promote() while it switches over: insert_events refuses */
	bool		fenced;
	pid_t		fenced_by;
	char		fenced_for[REPLICA_NAME_LEN];
	/* take_over was sent and its outcome is not known: fenced until told */
	bool		fence_in_doubt;
	int64		fence_epoch;	/* the fence holds while the node is at it */
	/* this node's sessions attached as a master's stream, and at which epoch */
	pid_t		attached_pid[REPLICATOR_MAX_ATTACHED];
	int64		attached_epoch[REPLICATOR_MAX_ATTACHED];
	/* cdc rule workers of this database: woken by every commit that wrote */
	pg_atomic_uint32 rule_workers;
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

extern void replicator_shmem_request(void);
extern void replicator_request_rescan(Oid dboid);
extern bool replicator_try_rescan(Oid dboid);
extern void replicator_stop_database_workers(Oid dboid);
extern void replicator_forget_database(Oid dboid);
extern void replicator_database_drop_failed(Oid dboid);
extern void replicator_release_database(Oid dboid, uint64 scanned_generation);
extern uint64 replicator_catalog_generation(Oid dboid);
extern const char *replicator_replica_state_name(ReplicaState state);
extern int	replicator_copy_slots(Oid dboid, bool is_rule, ReplicaSlot *out);


/* signals sent at commit of the calling transaction */
extern void replicator_request_rescan_at_commit(void);
extern void replicator_request_rescan_of_created(Oid dboid);
extern void replicator_wake_workers_at_commit(void);
extern void replicator_wake_rule_workers(Oid dboid);
extern void replicator_register_commit_wakeup(void);

#endif							/* REPLICATOR_SHMEM_H */
