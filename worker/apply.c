/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  The destination side of streaming: a few sessions to one destination
 *	  that apply batches side by side and commit them strictly in id order.
 *
 * A batch sent while nothing is under way is one self-committing statement:
 * a prepared INSERT when it is small (VALUES for one event, unnest() of
 * arrays for a few: one round trip, for latency), a COPY otherwise.  While
 * catching up, further large batches go to the other sessions inside
 * BEGIN ... COPY, and each one's COMMIT is sent only once every batch
 * before it has committed.  So the destination always holds a gapless
 * prefix of the events: readers there never see a gap, and its max(id)
 * stays the exact position after any failure, since a transaction whose
 * COMMIT was not sent is rolled back when its session closes.
 *
 * Results are collected as they arrive, by replicator_apply_poll() between
 * the rows of the next batch and by replicator_apply_wait() on the latch and
 * every session's socket; the only other waits (connecting, the start of a
 * COPY) are on the latch and the socket too.  The first failure sticks; the caller then
 * closes the set and reconnects, unless it is a unique violation: the
 * destination holds ids this source did not send there (another source
 * streams into it), a validation failure, never one to skip.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "apply.h"
#include "connection.h"
#include "destination.h"
#include "node_link.h"

#define COPY_SQL			"COPY events (id, ts, event) FROM STDIN (FORMAT binary)"
#define INSERT_STATEMENT	"replicator_insert"
#define INSERT_ONE_STATEMENT "replicator_insert_one"
/*
 * COPY data is handed to libpq in pieces of this size, each once libpq has
 * sent the last: libpq moves its unsent data to the front of its buffer at
 * every partial send, which costs more than the sending when the buffer
 * holds a whole batch.
 */
#define COPY_CHUNK_BYTES	(64 * 1024)
/* Smaller batches are not worth a transaction of their own beside another. */
#define PARALLEL_MIN_BYTES	(256 * 1024)

typedef enum SessionStep
{
	STEP_IDLE,
	STEP_APPLYING,				/* the batch's statement is under way */
	STEP_APPLIED,				/* in BEGIN: applied, waiting for its turn */
	STEP_COMMITTING
} SessionStep;

typedef struct ApplySession
{
	PGconn	   *conn;
	SessionStep step;
	bool		autocommit;		/* the statement commits by itself */
	bool		succeeded;		/* the step's command reported success */
	bool		feeding;		/* COPY data left to hand to libpq */
	StringInfoData copy;		/* the batch's COPY data */
	int			copy_queued;	/* how much of it libpq has taken */
	int			event_pos;		/* its socket in the wait set */
	bool		readable;		/* the last wait saw its socket readable */
	int64		last_id;
	int			count;
	int64		bytes;
} ApplySession;

struct ApplySet
{
	MemoryContext cxt;
	int			nsessions;
	ApplySession *sessions;
	int		   *order;			/* sessions with a batch, oldest first */
	int			inflight;
	int64		sent_upto;		/* last id sent, or the position */
	WaitEventSet *waitset;
	char	   *error;			/* the first failure; sticks */
	bool		invalid;		/* it is a validation failure */
	ApplyCommitted on_commit;
};

static void
fail(ApplySet *set, PGconn *conn, PGresult *res, const char *what)
{
	if (set->error == NULL)
	{
		char	   *reason = what ? pstrdup(what) : replicator_remote_error(conn, res);

		set->error = MemoryContextStrdup(set->cxt, reason);
	}
}

/*
 * The statements small batches use.  ROWS FROM spells out what unnest() of
 * several arrays means, since that shorthand exists only unqualified.
 */
static const char *const insert_statements[] = {
	"PREPARE " INSERT_STATEMENT
	" (pg_catalog.int8[], pg_catalog.timestamptz[], pg_catalog.jsonb[]) AS"
	" INSERT INTO events (id, ts, event) SELECT * FROM ROWS FROM"
	" (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))",
	"PREPARE " INSERT_ONE_STATEMENT
	" (pg_catalog.int8, pg_catalog.timestamptz, pg_catalog.jsonb) AS"
	" INSERT INTO events (id, ts, event) VALUES ($1, $2, $3)",
};

/* The prepared INSERTs.  NULL or the error. */
static char *
prepare_inserts(PGconn *conn)
{
	char	   *error = NULL;

	for (size_t i = 0; error == NULL && i < lengthof(insert_statements); i++)
		error = replicator_remote_expect(conn, replicator_remote_exec(conn, insert_statements[i], 0, NULL),
										 PGRES_COMMAND_OK);
	return error;
}

/*
 * Another session to the destination, or NULL with *error set.  It must
 * reach the same database of the same server as the first.
 */
static PGconn *
add_session(const char *conninfo, const char *appname, bool require_password,
			const char *identity, const NodeAttach *attach, char **error)
{
	int64		max_id;
	int64		diverged;
	PGconn	   *conn = replicator_remote_connect(conninfo, appname, REPLICATOR_SESSION_APPLY,
												 require_password, error, NULL);
	char	   *other;

	if (conn == NULL)
		return NULL;
	other = replicator_remote_identity(conn, error, NULL);
	if (other != NULL && strcmp(other, identity) != 0)
		*error = psprintf("it reached %s, not %s", other, identity);
	if (other == NULL || strcmp(other, identity) != 0 ||
		(*error = prepare_inserts(conn)) != NULL ||
		(attach != NULL && !replicator_attach_remote(conn, attach, &max_id, &diverged, error, NULL)))
	{
		replicator_remote_close(conn);
		return NULL;
	}
	return conn;
}

/*
 * Open the set on a connection of replicator_remote_connect() already
 * validated (whose server identity is given), adding sessions up to
 * nsessions.  Takes ownership of first: on failure it is closed and *error
 * set.  Added sessions are a bonus: one that cannot be had (too many
 * connections there, say) is logged, and the set works with fewer.
 */
ApplySet *
replicator_apply_open(PGconn *first, const char *conninfo, const char *appname,
					  bool require_password, const char *identity, const NodeAttach *attach,
					  int nsessions, int64 position, ApplyCommitted on_commit, char **error)
{
	ApplySet   *set = palloc0(sizeof(ApplySet));

	set->cxt = CurrentMemoryContext;
	set->sessions = palloc0(sizeof(ApplySession) * nsessions);
	set->order = palloc0(sizeof(int) * nsessions);
	set->sent_upto = position;
	set->on_commit = on_commit;
	for (int i = 0; i < nsessions; i++)
		initStringInfo(&set->sessions[i].copy);
	set->sessions[0].conn = first;
	set->nsessions = 1;

	*error = prepare_inserts(first);
	if (*error)
	{
		replicator_apply_close(set);
		return NULL;
	}
	while (set->nsessions < nsessions)
	{
		char	   *why;
		PGconn	   *conn = add_session(conninfo, appname, require_password, identity, attach, &why);

		if (conn == NULL)
		{
			ereport(LOG,
					(errmsg("replicator: %s: applying in %d session(s) instead of %d",
							appname, set->nsessions, nsessions),
					 errdetail("Another session to the destination failed: %s", why)));
			break;
		}
		set->sessions[set->nsessions++].conn = conn;
	}

	set->waitset = CreateWaitEventSet(set->cxt, set->nsessions + 2);
	AddWaitEventToSet(set->waitset, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set->waitset, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < set->nsessions; i++)
		set->sessions[i].event_pos = AddWaitEventToSet(set->waitset, WL_SOCKET_READABLE,
													   PQsocket(set->sessions[i].conn), NULL,
													   &set->sessions[i]);
	return set;
}

/* Close every session: a transaction not yet committed is rolled back. */
void
replicator_apply_close(ApplySet *set)
{
	for (int i = 0; i < set->nsessions; i++)
		replicator_remote_close(set->sessions[i].conn);
	if (set->waitset)
		FreeWaitEventSet(set->waitset);
	set->waitset = NULL;
	set->nsessions = 0;
}

bool
replicator_apply_idle(ApplySet *set)
{
	return set->inflight == 0;
}

/* The first session, for a statement of the caller's: only while idle. */
PGconn *
replicator_apply_idle_conn(ApplySet *set)
{
	Assert(set->inflight == 0);
	return set->sessions[0].conn;
}

/* Whether the failure that stopped the set is a validation failure. */
bool
replicator_apply_failed_validation(ApplySet *set)
{
	return set->error != NULL && set->invalid;
}

/* Where the next batch starts: after the last one sent. */
int64
replicator_apply_sent_upto(ApplySet *set)
{
	return set->sent_upto;
}

/*
 * Whether batch can be sent now.  A batch goes out at once when nothing
 * is under way; beside others only when it is large enough for a
 * transaction of its own to pay off, and a session is free.
 */
bool
replicator_apply_can_take(ApplySet *set, const Batch *batch)
{
	if (set->inflight == 0)
		return true;
	return batch->params[0] == NULL && batch->copy.len >= PARALLEL_MIN_BYTES &&
		set->inflight < set->nsessions;
}

/* The oldest batch has committed: report it and free its session. */
static void
committed_head(ApplySet *set)
{
	ApplySession *s = &set->sessions[set->order[0]];

	s->step = STEP_IDLE;
	set->inflight--;
	memmove(set->order, set->order + 1, sizeof(int) * set->inflight);
	set->on_commit(s->last_id, s->count, s->bytes);
}

/* The oldest batch may commit once applied: send its COMMIT. */
static void
commit_in_turn(ApplySet *set)
{
	ApplySession *s;

	if (set->inflight == 0 || set->error)
		return;
	s = &set->sessions[set->order[0]];
	if (s->step != STEP_APPLIED)
		return;
	if (!PQsendQuery(s->conn, "COMMIT"))
	{
		fail(set, s->conn, NULL, NULL);
		return;
	}
	s->step = STEP_COMMITTING;
	s->succeeded = false;
	(void) PQflush(s->conn);
}

/* Session i's command has returned all its results. */
static void
step_done(ApplySet *set, int i)
{
	ApplySession *s = &set->sessions[i];

	if (!s->succeeded)
	{
		fail(set, s->conn, NULL, "the destination returned no result");
		return;
	}
	if (s->step == STEP_APPLYING && !s->autocommit)
	{
		s->step = STEP_APPLIED;
		commit_in_turn(set);
		return;
	}
	/* a self-committing batch or a COMMIT: only the oldest can be either */
	Assert(set->order[0] == i);
	committed_head(set);
	commit_in_turn(set);
}

/*
 * Hand the COPY data to libpq as the socket takes it, and end the COPY
 * after the last piece.  Never waits.
 */
static void
feed(ApplySet *set, ApplySession *s)
{
	while (s->feeding)
	{
		int			rc = PQflush(s->conn);

		if (rc > 0)
			return;				/* the socket is full */
		if (rc == 0 && s->copy_queued < s->copy.len)
		{
			int			len = Min(COPY_CHUNK_BYTES, s->copy.len - s->copy_queued);

			rc = PQputCopyData(s->conn, s->copy.data + s->copy_queued, len);
			if (rc > 0)
				s->copy_queued += len;
		}
		else if (rc == 0)
		{
			rc = PQputCopyEnd(s->conn, NULL);
			if (rc > 0)
				s->feeding = false;
		}
		if (rc < 0)
		{
			fail(set, s->conn, NULL, NULL);
			return;
		}
		if (rc == 0)
			return;				/* libpq could not take it now */
	}
	(void) PQflush(s->conn);
}

/*
 * Send what the sockets take and collect the results that have arrived,
 * without waiting.  Failures stick in the set.
 */
void
replicator_apply_poll(ApplySet *set)
{
	for (int i = 0; i < set->nsessions && set->error == NULL; i++)
	{
		ApplySession *s = &set->sessions[i];

		if (s->feeding)
		{
			feed(set, s);
			if (set->error)
				return;
		}

		/*
		 * An idle session is read only when its socket said so (a server
		 * ending it): a live event should not pay a recv() for each idle one.
		 */
		if (s->step == STEP_IDLE && !s->feeding && !s->readable)
			continue;
		s->readable = false;
		if (PQflush(s->conn) < 0 || !PQconsumeInput(s->conn))
		{
			fail(set, s->conn, NULL, NULL);
			return;
		}
		/* results come once the COPY data has ended */
		if (s->feeding || (s->step != STEP_APPLYING && s->step != STEP_COMMITTING))
			continue;
		while (!PQisBusy(s->conn))
		{
			PGresult   *res = PQgetResult(s->conn);
			const char *sqlstate;

			if (res == NULL)
			{
				step_done(set, i);
				break;
			}
			/*
			 * Another writer holds ids of this batch: the destination is no
			 * longer a prefix of our history.  The reason names the ids,
			 * not the key's detail, which an index on the event's contents
			 * would fill with them.
			 */
			sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			if (PQresultStatus(res) == PGRES_FATAL_ERROR && sqlstate != NULL &&
				strcmp(sqlstate, "23505") == 0)
			{
				const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

				set->invalid = true;
				fail(set, s->conn, NULL,
					 psprintf("unique violation%s%s%s while applying events " INT64_FORMAT " to " INT64_FORMAT
							  ": the destination holds events this source did not send (does another source stream into it?)",
							  constraint ? " on constraint \"" : "", constraint ? constraint : "",
							  constraint ? "\"" : "",
							  s->last_id - s->count + 1, s->last_id));
				PQclear(res);
				return;
			}
			/* an aborted transaction "commits" with the tag ROLLBACK */
			if (PQresultStatus(res) != PGRES_COMMAND_OK ||
				(s->step == STEP_COMMITTING && strcmp(PQcmdStatus(res), "COMMIT") != 0))
			{
				fail(set, s->conn, res,
					 PQresultStatus(res) == PGRES_COMMAND_OK ? "the destination rolled the batch back" : NULL);
				PQclear(res);
				return;
			}
			PQclear(res);
			s->succeeded = true;
		}
	}
}

/*
 * Wait until a session has news or the latch is set, then collect what
 * arrived.  Sets *woken if the latch was set.  NULL or the error.
 */
char *
replicator_apply_wait(ApplySet *set, bool *woken)
{
	WaitEvent	events[REPLICATOR_MAX_SESSIONS + 2];
	int			n;

	if (set->error)
		return set->error;
	for (int i = 0; i < set->nsessions; i++)
	{
		ApplySession *s = &set->sessions[i];
		int			want = WL_SOCKET_READABLE;

		if (s->feeding)
			feed(set, s);
		if (s->feeding || PQflush(s->conn) == 1)
			want |= WL_SOCKET_WRITEABLE;
		ModifyWaitEvent(set->waitset, s->event_pos, want, NULL);
	}
	n = WaitEventSetWait(set->waitset, -1, events, lengthof(events), PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			*woken = true;
		}
		if (events[i].events & WL_SOCKET_READABLE)
			((ApplySession *) events[i].user_data)->readable = true;
	}
	replicator_apply_poll(set);
	return set->error;
}

/*
 * Send batch on a free session (replicator_apply_can_take() said so).  NULL
 * or the error.
 */
char *
replicator_apply_send(ApplySet *set, const Batch *batch)
{
	ApplySession *s = NULL;
	bool		autocommit = (set->inflight == 0);
	int			i;

	if (set->error)
		return set->error;
	for (i = 0; i < set->nsessions; i++)
		if (set->sessions[i].step == STEP_IDLE)
			break;
	Assert(i < set->nsessions);
	s = &set->sessions[i];

	if (autocommit && batch->params[0] != NULL)
	{
		const char *values[3];
		int			lengths[3];
		int			formats[3] = {1, 1, 1};

		for (int p = 0; p < 3; p++)
		{
			values[p] = VARDATA(batch->params[p]);
			lengths[p] = VARSIZE(batch->params[p]) - VARHDRSZ;
		}
		if (!PQsendQueryPrepared(s->conn, batch->single ? INSERT_ONE_STATEMENT : INSERT_STATEMENT,
								 3, values, lengths, formats, 0))
			fail(set, s->conn, NULL, NULL);
	}
	else
	{
		char	   *error = replicator_remote_expect(s->conn,
													 replicator_remote_exec(s->conn, autocommit ? COPY_SQL : "BEGIN; " COPY_SQL, 0, NULL),
													 PGRES_COPY_IN);

		if (error)
			fail(set, s->conn, NULL, error);
		/* the session keeps its own copy: the caller's batch is freed */
		resetStringInfo(&s->copy);
		appendBinaryStringInfo(&s->copy, batch->copy.data, batch->copy.len);
		s->copy_queued = 0;
		s->feeding = true;
	}
	if (set->error)
		return set->error;

	s->step = STEP_APPLYING;
	s->autocommit = autocommit;
	s->succeeded = false;
	s->last_id = batch->last_id;
	s->count = batch->count;
	s->bytes = batch->copy.len;
	if (autocommit && batch->params[0] != NULL)
		s->bytes = VARSIZE(batch->params[0]) + VARSIZE(batch->params[1]) +
			VARSIZE(batch->params[2]) - 3 * VARHDRSZ;
	set->order[set->inflight++] = i;
	set->sent_upto = batch->last_id;
	if (s->feeding)
		feed(set, s);
	else
		(void) PQflush(s->conn);
	return set->error;
}
