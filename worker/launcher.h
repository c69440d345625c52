/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher and the per-database scan workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_LAUNCHER_H
#define REPLICATOR_LAUNCHER_H

#include "postgres.h"

extern void replicator_register_launcher(void);
extern PGDLLEXPORT void replicator_launcher_main(Datum arg);
extern PGDLLEXPORT void replicator_scan_main(Datum arg);

#endif							/* REPLICATOR_LAUNCHER_H */
