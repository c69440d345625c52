/*-------------------------------------------------------------------------
 *
 * connection.h
 *	  The one way the extension reaches a remote server (connection.c):
 *	  settings in the startup packet, the password rule, file descriptor
 *	  accounting, DNS and connect bounded by replicator.connect_timeout,
 *	  and every wait on the latch and the socket.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATOR_CONNECTION_H
#define REPLICATOR_CONNECTION_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "libpq-fe.h"

/* What a connection is for: the settings its session gets. */
typedef enum ReplicatorSessionKind
{
	REPLICATOR_SESSION_QUERY,	/* validate, diff, restore_events */
	REPLICATOR_SESSION_APPLY	/* a worker's session: also synchronous_commit */
} ReplicatorSessionKind;

extern PGconn *replicator_remote_connect(const char *conninfo, const char *appname,
										 ReplicatorSessionKind kind,
										 bool require_password,
										 char **error, bool *transient);
extern void replicator_remote_close(PGconn *conn);
extern PGresult *replicator_remote_exec(PGconn *conn, const char *sql, int nparams,
										const char *const *values);
extern bool replicator_remote_send(PGconn *conn, const char *sql);
extern PGresult *replicator_remote_prepare(PGconn *conn, const char *name, const char *sql);
extern bool replicator_remote_collect_each(PGconn *conn,
										   void (*each_result) (PGresult *res, int i, void *arg),
										   void *arg);
extern bool replicator_remote_exec_each(PGconn *conn, const char *sql,
										void (*each_result) (PGresult *res, int i, void *arg),
										void *arg);
extern int	replicator_remote_get_copy(PGconn *conn, char **buf);
extern PGresult *replicator_remote_last_result(PGconn *conn);
extern PGresult *replicator_remote_one_row(PGconn *conn, const char *sql, int nparams,
										   const char *const *values, char **error,
										   bool *transient);
extern char **replicator_result_cells(PGresult *res, int64 *bytes);
extern bool replicator_remote_error_transient(const PGresult *res);
extern void replicator_conninfo_append(StringInfo buf, const char *keyword, const char *value);
extern char *replicator_remote_error(PGconn *conn, PGresult *res);
extern char *replicator_remote_expect(PGconn *conn, PGresult *res, ExecStatusType expected);
extern char *replicator_conninfo_mask(const char *conninfo, char **error);
extern char *replicator_conninfo_password(const char *conninfo);
extern char *replicator_conninfo_without_password(const char *conninfo);

#endif							/* REPLICATOR_CONNECTION_H */
