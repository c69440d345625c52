/*-------------------------------------------------------------------------
 *
 * stream.h
 *	  The streaming worker of one destination.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_STREAM_H
#define REPLICATOR_STREAM_H

#include "postgres.h"

extern PGDLLEXPORT void replicator_stream_main(Datum arg);

#endif							/* REPLICATOR_STREAM_H */
