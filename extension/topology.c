/*-------------------------------------------------------------------------
 *
 * topology.c
 *	  node() and topology(): what a node says of itself and its topology.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#include "catalog.h"
#include "connection.h"
#include "topology_doc.h"

PG_FUNCTION_INFO_V1(replicator_node);

/*
 * (name, role, epoch, master, master_conninfo): where this node stands and
 * where its master is, for a client that lost its master and asks any node.
 * Executable by anyone; the catalog is read as the extension's owner, and
 * the master's conninfo shown with its password masked unless the caller
 * is a superuser.  A standalone source (no node_state row) is no node:
 * name, role, master and master_conninfo null, epoch 0.
 */
Datum
replicator_node(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {true, true, false, true, true};
	int			ret;

	replicator_check_sql_version();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);
	values[2] = Int64GetDatum(0);

	SPI_connect();
	ret = replicator_spi_execute_as_owner("SELECT n.name, n.epoch, n.master, r.conninfo"
										  " FROM replicator.node_state n"
										  " LEFT JOIN replicator.replicas r"
										  " ON r.name OPERATOR(pg_catalog.=) n.master",
										  0, NULL, NULL, NULL, true);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read replicator.node_state: %s", SPI_result_code_string(ret));
	if (SPI_processed > 0)
	{
		HeapTuple	tuple = SPI_tuptable->vals[0];
		TupleDesc	tupdesc = SPI_tuptable->tupdesc;
		char	   *name;
		char	   *master;
		char	   *conninfo;
		bool		isnull;

		MemoryContextSwitchTo(caller);
		name = SPI_getvalue(tuple, tupdesc, 1);
		values[2] = SPI_getbinval(tuple, tupdesc, 2, &isnull);
		master = SPI_getvalue(tuple, tupdesc, 3);
		conninfo = SPI_getvalue(tuple, tupdesc, 4);

		values[0] = CStringGetTextDatum(name);
		nulls[0] = false;
		values[1] = CStringGetTextDatum(strcmp(master, name) == 0 ? "master" : "slave");
		nulls[1] = false;
		values[3] = CStringGetTextDatum(master);
		nulls[3] = false;
		if (conninfo != NULL && !superuser())
		{
			char	   *error = NULL;

			/* one that does not parse is not shown: it could hold a password */
			conninfo = replicator_conninfo_mask(conninfo, &error);
		}
		if (conninfo != NULL)
		{
			values[4] = CStringGetTextDatum(conninfo);
			nulls[4] = false;
		}
	}
	SPI_finish();

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(replicator_topology);

/*
 * The topology as jsonb: this node, its epoch, master and read routing, the
 * nodes (replicas) with masked conninfo, and the history of epochs.  The
 * same document the scan worker writes to replicator.topology_file.
 */
Datum
replicator_topology(PG_FUNCTION_ARGS)
{
	bool		in_topology;
	char	   *doc;

	replicator_check_sql_version();
	doc = replicator_topology_document(false, &in_topology);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(doc)));
}

