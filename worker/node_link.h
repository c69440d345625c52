/*-------------------------------------------------------------------------
 *
 * node_link.h
 *	  The master's side of the node protocol: a streaming worker's calls on
 *	  a destination that has the extension.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_NODE_LINK_H
#define REPLICATOR_NODE_LINK_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "libpq-fe.h"

/* attach_to_master()'s statement and its four parameters */
#define REPLICATOR_ATTACH_SQL \
	"SELECT max_id, diverged FROM replicator.attach_to_master($1, $2::pg_catalog.int8, $3, $4::pg_catalog.jsonb)"

typedef struct NodeAttach
{
	const char *params[4];		/* master, epoch, node, topology */
} NodeAttach;

extern char *replicator_remote_extension_version(PGconn *conn, char **error, bool *transient);
extern bool replicator_attach_remote(PGconn *conn, const NodeAttach *attach, int64 *max_id,
									 int64 *diverged, char **error, bool *transient);
extern char *replicator_heartbeat_remote(PGconn *conn, int64 epoch, int64 master_max_id,
										 TimestampTz behind_since);

#endif							/* REPLICATOR_NODE_LINK_H */
