/*-------------------------------------------------------------------------
 *
 * replicas.h
 *	  The management API's check of its caller.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_REPLICAS_H
#define REPLICATOR_REPLICAS_H

#include "postgres.h"

/* superusers and members of replicator_admin only */
extern void replicator_check_admin(void);

#endif							/* REPLICATOR_REPLICAS_H */
