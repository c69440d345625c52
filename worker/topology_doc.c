/*-------------------------------------------------------------------------
 *
 * topology_doc.c
 *	  The topology as a jsonb document: replicator.topology() returns it,
 *	  and the scan worker of a database in a topology writes it to
 *	  replicator.topology_file after every catalog change, for monitors that
 *	  do not connect to the database.  No password in either: conninfo is
 *	  masked.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "catalog.h"
#include "settings.h"
#include "topology_doc.h"

/*
 * Built by jsonb functions, run as the extension's owner: every function
 * and operator schema-qualified.  Only what the API changes (each change
 * rescans, and so rewrites the file), nothing a worker reports (lag, worker
 * state, destination: replica_status has them), so that the file written
 * at the last change still equals topology().  state is the catalog's part
 * of replica_status.state.
 */
#define TOPOLOGY_SQL(wrap) \
	"SELECT " wrap "(pg_catalog.jsonb_build_object(" \
	" 'database', pg_catalog.current_database()," \
	" 'node', n.name," \
	" 'epoch', COALESCE(n.epoch, 0)," \
	" 'master', n.master," \
	" 'routing', n.routing," \
	" 'nodes', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(" \
	"   'name', r.name," \
	"   'role', r.role," \
	"   'conninfo', replicator.mask_conninfo(r.conninfo)," \
	"   'lag_tolerance', r.lag_tolerance::pg_catalog.text," \
	"   'lag_tolerance_ms', (pg_catalog.date_part('epoch', r.lag_tolerance)" \
	"                        OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8," \
	"   'enabled', r.enabled," \
	"   'state', CASE WHEN r.name OPERATOR(pg_catalog.=) n.name THEN 'this node'" \
	"                 WHEN r.invalid_reason IS NOT NULL THEN 'invalid'" \
	"                 WHEN NOT r.enabled THEN 'paused'" \
	"                 ELSE 'enabled' END," \
	"   'created_at', r.created_at) ORDER BY r.name)" \
	"  FROM replicator.replicas r WHERE r.stream_events), '[]'::pg_catalog.jsonb)," \
	" 'epochs', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(" \
	"   'epoch', e.epoch," \
	"   'master', e.master," \
	"   'first_id', e.first_id," \
	"   'started_at', e.started_at," \
	"   'how', e.how," \
	"   'detail', e.detail) ORDER BY e.epoch)" \
	"  FROM replicator.epochs e), '[]'::pg_catalog.jsonb)))::pg_catalog.text," \
	" n.name IS NOT NULL" \
	" FROM (VALUES (true)) one(x) LEFT JOIN replicator.node_state n ON true"

/*
 * The document as jsonb text (indented if pretty), in the caller's memory
 * context; *in_topology: this database is a node (has a node_state row).
 * A standalone source's document has node, master and routing null, epoch
 * 0.  Needs a transaction and an active snapshot.
 */
char *
replicator_topology_document(bool pretty, bool *in_topology)
{
	MemoryContext caller = CurrentMemoryContext;
	int			nest;
	int			ret;
	bool		isnull;
	char	   *doc;

	/*
	 * The text of timestamps and intervals follows the session's TimeZone
	 * and IntervalStyle: fix them, so that every session and the scan worker
	 * write the same document.  Restored below, or by the abort.
	 */
	nest = NewGUCNestLevel();
	(void) set_config_option("TimeZone", "UTC", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("IntervalStyle", "postgres", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	SPI_connect();
	ret = replicator_spi_execute_as_owner(pretty ? TOPOLOGY_SQL("pg_catalog.jsonb_pretty") : TOPOLOGY_SQL(""),
										  0, NULL, NULL, NULL, true);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the topology: %s", SPI_result_code_string(ret));
	doc = MemoryContextStrdup(caller, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	*in_topology = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	SPI_finish();

	AtEOXact_GUC(true, nest);
	return doc;
}

/*
 * replicator.topology_file with %d replaced by this database's name ('/'
 * in it by '_', and a name of only dots by as many '_', so that it names no
 * other directory) and %% by %.
 */
static char *
topology_file_path(void)
{
	StringInfoData buf;
	char	   *dbname = get_database_name(MyDatabaseId);

	initStringInfo(&buf);
	for (const char *p = replicator_topology_file; *p; p++)
	{
		if (p[0] == '%' && p[1] == 'd')
		{
			const char *name = dbname ? dbname : "";
			bool		dots = strspn(name, ".") == strlen(name);

			for (const char *q = name; *q; q++)
				appendStringInfoChar(&buf, *q == '/' || dots ? '_' : *q);
			p++;
		}
		else if (p[0] == '%' && p[1] == '%')
		{
			appendStringInfoChar(&buf, '%');
			p++;
		}
		else
			appendStringInfoChar(&buf, *p);
	}
	return buf.data;
}

/*
 * Replace path with contents atomically: a temporary file in the same
 * directory, fsync'd, renamed over it, then the directory fsync'd.  Not
 * durable_rename(): it fsyncs the old file at data_sync_elevel, a PANIC
 * with data_sync_retry off, and a monitoring file must never take the
 * server down.  Errors are ERRORs; the temporary file is removed.
 */
static void
write_file_atomically(const char *path, const char *contents)
{
	char	   *tmp = psprintf("%s.%d.tmp", path, MyProcPid);
	char	   *dir = pstrdup(path);
	size_t		len = strlen(contents);
	int			fd;
	int			save_errno;

	fd = OpenTransientFile(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmp)));
	errno = 0;
	if (write(fd, contents, len) != (ssize_t) len || pg_fsync(fd) != 0)
	{
		save_errno = errno ? errno : ENOSPC;
		CloseTransientFile(fd);
		unlink(tmp);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", tmp)));
	}
	if (CloseTransientFile(fd) != 0 || rename(tmp, path) != 0)
	{
		save_errno = errno;
		unlink(tmp);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not rename file \"%s\" to \"%s\": %m", tmp, path)));
	}
	get_parent_directory(dir);
	(void) fsync_fname_ext(dir[0] ? dir : ".", true, false, ERROR);
}

/*
 * The scan worker's part, after it read the catalog: if replicator.
 * topology_file is set and this database is in a topology, write its
 * document there.  A failure is a WARNING: the scan must go on starting
 * workers.  Needs a transaction and an active snapshot.
 */
void
replicator_write_topology_file(void)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *path;

	if (replicator_topology_file == NULL || replicator_topology_file[0] == '\0')
		return;
	path = topology_file_path();

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		bool		in_topology;
		char	   *doc = replicator_topology_document(true, &in_topology);

		if (in_topology)
			write_file_atomically(path, psprintf("%s\n", doc));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
		ereport(WARNING,
				(errmsg("replicator: could not write the topology of database \"%s\" to \"%s\": %s",
						get_database_name(MyDatabaseId), path, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}
