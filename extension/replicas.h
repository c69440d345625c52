/*-------------------------------------------------------------------------
 *
 * replicas.h
 *	  The management API's rules, for the other API files (replicas.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_REPLICAS_H
#define REPLICATOR_REPLICAS_H

/* superusers and members of replicator_admin only; SQL objects current */
extern void replicator_check_admin(void);

#endif							/* REPLICATOR_REPLICAS_H */
