/*-------------------------------------------------------------------------
 *
 * utility_hook.h
 *	  DDL the workers must hear of at once.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_UTILITY_HOOK_H
#define REPLICATOR_UTILITY_HOOK_H

#include "postgres.h"

extern void replicator_install_utility_hook(void);

#endif							/* REPLICATOR_UTILITY_HOOK_H */
