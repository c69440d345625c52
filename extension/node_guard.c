/*-------------------------------------------------------------------------
 *
 * node_guard.c
 *	  Who writes events on a node of a topology.
 *
 * On the master (and on a standalone source) insert_events writes, unless a
 * switchover fences the node.  On a slave, insert_events fails naming the
 * master, and only the sessions of the master's streaming worker insert:
 * those that called attach_to_master() with the slave's epoch.  Both are
 * judged against node_state as committed now, after the statement took its
 * lock: a promotion of this node (which locks events or the id row first)
 * is seen by every statement that follows it, so a master of an older
 * epoch never writes into a node of a newer one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "node.h"
#include "node_guard.h"
#include "shmem.h"

/* this session's attach_to_master(), if any */
static int64 attached_epoch = 0;
static char attached_master[REPLICA_NAME_LEN];

/*
 * insert_events calls this holding the id row lock (and before taking it,
 * to fail fast): a fenced node or a slave refuses.
 */
void
replicator_check_insert_allowed(void)
{
	char		name[REPLICA_NAME_LEN];
	char		master[REPLICA_NAME_LEN];
	char		fenced_for[REPLICA_NAME_LEN];
	int64		epoch = 0;
	bool		in_topology = replicator_node_role_now(name, master, &epoch);

	if (replicator_fenced(epoch, fenced_for))
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("this node is handing over to \"%s\": insert events there", fenced_for),
				 errdetail("A switchover to \"%s\" is under way.", fenced_for),
				 errhint("replicator.node() on any node says where the master is.")));
	if (in_topology && strcmp(name, master) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("this node is a slave: insert events on its master \"%s\"", master),
				 errdetail("Node \"%s\" follows master \"%s\" at epoch " INT64_FORMAT ".",
						   name, master, epoch),
				 errhint("replicator.node() on any node says where the master is.")));
}

/* attach_to_master() succeeded: this session's statements are the stream's */
void
replicator_attach_session(const char *master, int64 epoch)
{
	strlcpy(attached_master, master, REPLICA_NAME_LEN);
	attached_epoch = epoch;
	replicator_register_attached(epoch);
}

/*
 * Whether this session may insert into events as its master's stream:
 * attached, and the node is still a slave of that master at that epoch.
 */
bool
replicator_master_stream_may_write(void)
{
	char		name[REPLICA_NAME_LEN] = "";
	char		master[REPLICA_NAME_LEN] = "";
	int64		epoch = 0;

	if (attached_epoch == 0)
		return false;
	if (!replicator_node_role_now(name, master, &epoch) ||
		strcmp(name, master) == 0 || epoch != attached_epoch ||
		strcmp(master, attached_master) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("master \"%s\" of epoch " INT64_FORMAT " may no longer write here",
						attached_master, attached_epoch),
				 errdetail("This node is now at epoch " INT64_FORMAT ", %s.", epoch,
						   name[0] == '\0' ? "in no topology" :
						   strcmp(name, master) == 0 ? "its own master" :
						   psprintf("following \"%s\"", master))));
	return true;
}
