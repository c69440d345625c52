/*-------------------------------------------------------------------------
 *
 * topology_doc.h
 *	  The topology as a jsonb document, and the file that holds a copy.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_TOPOLOGY_DOC_H
#define REPLICATOR_TOPOLOGY_DOC_H

extern char *replicator_topology_document(bool pretty, bool *in_topology);
extern void replicator_write_topology_file(void);

#endif							/* REPLICATOR_TOPOLOGY_DOC_H */
