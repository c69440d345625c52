-- replicator 1.2: the event source (events, id, insert_events, triggers) in
-- the extension's schema, and the schema "replicator" for management.

\echo Use "CREATE EXTENSION replicator" to load this file. \quit

-- The management schema has a fixed name; the event source must not share it.
DO $$
BEGIN
	IF '@extschema@' = 'replicator' THEN
		RAISE EXCEPTION 'the event source cannot be installed in schema "replicator"'
			USING ERRCODE = 'invalid_schema_name',
				  DETAIL = 'Schema "replicator" holds the extension''s management API.',
				  HINT = 'Use CREATE EXTENSION replicator, or CREATE EXTENSION replicator SCHEMA another_schema.';
	END IF;
END
$$;

CREATE SCHEMA replicator;
COMMENT ON SCHEMA replicator IS 'replicator management API';

-- True when the library was loaded through shared_preload_libraries, which
-- the streaming workers need.
CREATE FUNCTION replicator.streaming_available()
RETURNS boolean
AS 'MODULE_PATHNAME', 'replicator_streaming_available'
LANGUAGE C STABLE PARALLEL SAFE;

DO $$
BEGIN
	IF NOT replicator.streaming_available() THEN
		RAISE WARNING 'replicator is not loaded through shared_preload_libraries: events can be inserted but will not be streamed'
			USING HINT = 'Add shared_preload_libraries = ''replicator'' to postgresql.conf and restart the server.';
	END IF;
END
$$;

-- The event source, with slate's definitions so that slate's tools accept it.
CREATE TABLE @extschema@.events (
	id		bigint PRIMARY KEY,
	ts		timestamptz NOT NULL,
	event	jsonb NOT NULL
);
CREATE INDEX events_ts ON @extschema@.events (ts);
CREATE INDEX events_entity_name ON @extschema@.events ((event #>> '{entityName}'));
CREATE INDEX events_operation ON @extschema@.events ((event #>> '{operation}'));
CREATE INDEX events_property_name ON @extschema@.events ((event #>> '{propertyName}'));
CREATE INDEX events_entity_id ON @extschema@.events ((event #>> '{entityId}'));
CREATE INDEX events_metadata_command ON @extschema@.events ((event #>> '{metadata,command}'));
COMMENT ON TABLE @extschema@.events IS 'append-only events; rows enter only through insert_events()';

-- One row: the next id to assign and the ts of the last call, so that ts
-- increases strictly from one call to the next.  The unique index on a
-- constant keeps it one row without stopping HOT updates.
CREATE TABLE @extschema@.id (
	id		bigint NOT NULL,
	last_ts	timestamptz
);
CREATE UNIQUE INDEX id_one_row ON @extschema@.id ((true));
INSERT INTO @extschema@.id (id) VALUES (1);
COMMENT ON TABLE @extschema@.id IS 'next id to assign to an event (one row)';

-- slate's form: the text after "INSERT INTO events (id, ts, event) VALUES",
-- rows of ($1[k], $2, '<json>'), k = 1..n.  Returns the number of rows.
CREATE FUNCTION @extschema@.insert_events(insertvalues text)
RETURNS integer
AS 'MODULE_PATHNAME', 'replicator_insert_events_text'
LANGUAGE C VOLATILE;

-- The safe form: one event per array element, no SQL text.  A name of its
-- own: slate's replicator requires exactly one routine named insert_events.
CREATE FUNCTION @extschema@.insert_events_array(events jsonb[],
										   OUT first_id bigint,
										   OUT last_id bigint,
										   OUT ts timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'replicator_insert_events_jsonb'
LANGUAGE C VOLATILE;

-- Notification of new events on channel "eventsinsert".
CREATE FUNCTION @extschema@.notify_event_insert()
RETURNS trigger
AS 'MODULE_PATHNAME', 'replicator_notify_event_insert'
LANGUAGE C;

CREATE TRIGGER notify_insert
	AFTER INSERT ON @extschema@.events
	FOR EACH ROW EXECUTE FUNCTION @extschema@.notify_event_insert();

-- Guards: events is append-only, and rows enter only through insert_events.
CREATE FUNCTION @extschema@.filter_sql_command()
RETURNS trigger
AS 'MODULE_PATHNAME', 'replicator_filter_sql_command'
LANGUAGE C;

CREATE TRIGGER check_sql_command
	BEFORE UPDATE OR DELETE OR TRUNCATE ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.filter_sql_command();

CREATE FUNCTION @extschema@.filter_insert()
RETURNS trigger
AS 'MODULE_PATHNAME', 'replicator_filter_insert'
LANGUAGE C;

CREATE TRIGGER check_insert
	BEFORE INSERT ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.filter_insert();

-- The id table changes only through insert_events.
CREATE TRIGGER check_sql_command
	BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.id
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.filter_sql_command();

-- pg_dump keeps the events; pg_restore COPYs them into the empty table (the
-- one COPY check_insert lets through), and this trigger then checks their
-- ids are 1..N and sets the id row after them.  The id table is not dumped:
-- it follows from the events.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events', '');

CREATE FUNCTION @extschema@.check_restored_events()
RETURNS trigger
AS 'MODULE_PATHNAME', 'replicator_check_restored_events'
LANGUAGE C;

CREATE TRIGGER check_restored_events
	AFTER INSERT ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.check_restored_events();

-- ------------------------------------------------------------------------
-- Destinations (replicas) and the streaming workers' management API.
-- ------------------------------------------------------------------------

-- Managing destinations is for superusers and members of replicator_admin.
-- Roles are cluster-wide: the role outlives DROP EXTENSION.
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'replicator_admin') THEN
		CREATE ROLE replicator_admin NOLOGIN;
	END IF;
END
$$;

CREATE TABLE replicator.replicas (
	name		text PRIMARY KEY
				CHECK (name ~ '^[A-Za-z0-9_.-]{1,48}$'),
	conninfo	text NOT NULL,
	role		text NOT NULL DEFAULT 'slave' CHECK (role IN ('master', 'slave')),
	lag_tolerance interval,
	enabled		boolean NOT NULL DEFAULT true,
	-- set by a worker whose destination failed validation; cleared by resume
	invalid_reason text,
	invalid_since timestamptz,
	-- "system identifier/port/database" of the destination, once validated
	destination text,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	created_by	name NOT NULL DEFAULT CURRENT_USER,
	-- new at each add_replica: a worker that finds another one here (a
	-- drop and add in one transaction) starts over with full checks
	incarnation	uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	-- who added the replica or last changed its conninfo: unless that role
	-- is a superuser when a worker connects, the destination must ask for
	-- the password
	changed_by	name NOT NULL DEFAULT CURRENT_USER,
	-- false: a database registered only as a rule's target, no events go there
	stream_events boolean NOT NULL DEFAULT true,
	CONSTRAINT replicas_events_to_slaves CHECK (stream_events OR role = 'slave')
);
-- Changed only through the API functions (and read by admins through
-- replica_status, which masks passwords): no role has privileges on it.
REVOKE ALL ON replicator.replicas FROM PUBLIC;
COMMENT ON TABLE replicator.replicas IS 'destinations the streaming workers copy events to';
-- pg_dump keeps the destinations; restored rows (any row add_replica did
-- not insert) arrive paused, so that a copy of a source never streams into
-- the original's destinations on its own.
SELECT pg_catalog.pg_extension_config_dump('replicator.replicas', '');

CREATE FUNCTION replicator.pause_unmanaged_replica()
RETURNS trigger
AS 'MODULE_PATHNAME', 'replicator_pause_unmanaged_replica'
LANGUAGE C;

CREATE TRIGGER pause_unmanaged_replica
	BEFORE INSERT ON replicator.replicas
	FOR EACH ROW EXECUTE FUNCTION replicator.pause_unmanaged_replica();

CREATE FUNCTION replicator.add_replica(name text, conninfo text,
									   role text DEFAULT 'slave',
									   lag_tolerance interval DEFAULT NULL,
									   enabled boolean DEFAULT true,
									   stream_events boolean DEFAULT true)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_add_replica'
LANGUAGE C VOLATILE;

CREATE FUNCTION replicator.drop_replica(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_drop_replica'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION replicator.pause_replica(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_pause_replica'
LANGUAGE C VOLATILE STRICT;

-- Resumes a paused destination, or one marked invalid once it is fixed.
CREATE FUNCTION replicator.resume_replica(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_resume_replica'
LANGUAGE C VOLATILE STRICT;

-- slate's start-up checks, on demand (its --dry-run).
CREATE FUNCTION replicator.validate(name text DEFAULT NULL)
RETURNS TABLE (replica text, check_name text, ok boolean, detail text)
AS 'MODULE_PATHNAME', 'replicator_validate'
LANGUAGE C VOLATILE;

CREATE FUNCTION replicator.wait_for_replica(name text, timeout interval DEFAULT '1 min')
RETURNS boolean
AS 'MODULE_PATHNAME', 'replicator_wait_for_replica'
LANGUAGE C VOLATILE STRICT;

-- conninfo with any password replaced by ********
CREATE FUNCTION replicator.mask_conninfo(conninfo text)
RETURNS text
AS 'MODULE_PATHNAME', 'replicator_mask_conninfo'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- ------------------------------------------------------------------------
-- Topology (1.2): nodes, roles, epochs, read routing, switchover, failover.
-- ------------------------------------------------------------------------

-- Only one node of a topology is its master: the row add_replica(...,
-- role => 'master') registers, naming this node and how others reach it.
CREATE UNIQUE INDEX replicas_one_master ON replicator.replicas ((true)) WHERE role = 'master';

-- This node: its name in the topology, its epoch and its master.  At most
-- one row; none until this database joins a topology (a standalone source
-- streams to its replicas as before).  No row is inserted here, so that a
-- restored dump's row is the only one.
CREATE TABLE replicator.node_state (
	one			boolean PRIMARY KEY DEFAULT true CHECK (one),
	name		text NOT NULL,
	epoch		bigint NOT NULL CHECK (epoch > 0),
	master		text NOT NULL,
	routing		text NOT NULL DEFAULT 'least-lag'
				CHECK (routing IN ('least-lag', 'round-robin', 'random')),
	-- a slave's last heartbeat from its master: when, the master's max(id)
	-- then, and how far behind this node was (events, age of the oldest
	-- event it lacked); what failover judges lag tolerance by
	contact_at	timestamptz,
	contact_master_max_id bigint,
	contact_lag_events bigint,
	contact_lag interval,
	-- md5 of the topology the master last pushed here: unchanged, not applied
	topology_md5 text
);
REVOKE ALL ON replicator.node_state FROM PUBLIC;
COMMENT ON TABLE replicator.node_state IS 'this node''s place in the replica topology (one row once it has one)';
SELECT pg_catalog.pg_extension_config_dump('replicator.node_state', '');

-- Every epoch of the topology's history, as PostgreSQL's timeline history:
-- epoch e's master wrote the events from first_id on.  A node at epoch e
-- joining a master whose history has a later epoch f holds diverged events
-- from first_id(f) on.
CREATE TABLE replicator.epochs (
	epoch		bigint PRIMARY KEY CHECK (epoch > 0),
	master		text NOT NULL,
	first_id	bigint NOT NULL CHECK (first_id > 0),
	started_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	how			text NOT NULL CHECK (how IN ('registered', 'switchover', 'failover', 'forced failover')),
	detail		text
);
REVOKE ALL ON replicator.epochs FROM PUBLIC;
COMMENT ON TABLE replicator.epochs IS 'the history of the topology''s masters';
SELECT pg_catalog.pg_extension_config_dump('replicator.epochs', '');

-- Events a demoted master (or a slave fed by it) held beyond the common
-- history: moved here when it rejoined, never dropped.
CREATE TABLE replicator.diverged_events (
	id			bigint NOT NULL,
	ts			timestamptz NOT NULL,
	event		jsonb NOT NULL,
	epoch		bigint NOT NULL,
	moved_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (epoch, id)
);
REVOKE ALL ON replicator.diverged_events FROM PUBLIC;
GRANT SELECT ON replicator.diverged_events TO replicator_admin;
COMMENT ON TABLE replicator.diverged_events IS 'events this node held beyond the common history when it rejoined a newer master';
SELECT pg_catalog.pg_extension_config_dump('replicator.diverged_events', '');

-- What the workers of this database report from shared memory.
CREATE FUNCTION replicator.worker_stats(
	OUT name text, OUT pid integer, OUT state text, OUT "position" bigint,
	OUT events_sent bigint, OUT bytes_sent bigint, OUT last_error text,
	OUT last_error_at timestamptz, OUT last_contact timestamptz,
	OUT tables integer, OUT diverged bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'replicator_worker_stats'
LANGUAGE C VOLATILE;

-- Lag is exact: ids are gapless, so lag_events is what the replica lacks,
-- and lag the age of the oldest event it lacks (zero when it has them all).
-- stale: lag above the replica's tolerance, or no contact for longer.
CREATE VIEW replicator.replica_status AS
SELECT r.name,
	   r.role,
	   CASE
		   WHEN r.name = n.name THEN 'this node'
		   WHEN r.role = 'master' THEN 'master'
		   WHEN n.master <> n.name THEN 'streamed by ' || n.master
		   WHEN NOT r.stream_events THEN 'rule target'
		   WHEN r.invalid_reason IS NOT NULL THEN 'invalid'
		   WHEN NOT r.enabled THEN 'paused'
		   ELSE coalesce(w.state, 'starting')
	   END AS state,
	   CASE WHEN pg_catalog.pg_has_role('replicator_admin', 'MEMBER')
			THEN replicator.mask_conninfo(r.conninfo) END AS conninfo,
	   w.position,
	   m.max_id AS source_max_id,
	   m.max_id - w.position AS lag_events,
	   l.lag,
	   coalesce(r.lag_tolerance < l.lag
				OR (w.state IS DISTINCT FROM 'streaming' AND w.state IS DISTINCT FROM 'catching_up'
					AND pg_catalog.now() - coalesce(w.last_contact, r.created_at) > r.lag_tolerance),
				false)
		   AND r.name IS DISTINCT FROM n.name AND r.role = 'slave' AS stale,
	   w.tables,
	   w.diverged,
	   w.events_sent,
	   w.bytes_sent,
	   coalesce(r.invalid_reason, w.last_error) AS last_error,
	   coalesce(r.invalid_since, w.last_error_at) AS last_error_at,
	   w.last_contact,
	   w.pid,
	   r.enabled,
	   r.lag_tolerance,
	   r.destination,
	   r.created_at,
	   r.created_by,
	   r.changed_by
FROM replicator.replicas r
	 LEFT JOIN replicator.node_state n ON true
	 LEFT JOIN replicator.worker_stats() w ON w.name = r.name
	 CROSS JOIN (SELECT coalesce(max(id), 0) AS max_id FROM @extschema@.events) m
	 LEFT JOIN LATERAL (SELECT CASE
				WHEN w.position IS NULL THEN NULL
				WHEN w.position >= m.max_id THEN interval '0'
				ELSE pg_catalog.now() - (SELECT e.ts FROM @extschema@.events e WHERE e.id = w.position + 1)
			END AS lag) l ON true;
GRANT USAGE ON SCHEMA replicator TO PUBLIC;
GRANT SELECT ON replicator.replica_status TO PUBLIC;

REVOKE EXECUTE ON FUNCTION replicator.add_replica(text, text, text, interval, boolean, boolean),
	replicator.drop_replica(text), replicator.pause_replica(text),
	replicator.resume_replica(text), replicator.validate(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION replicator.add_replica(text, text, text, interval, boolean, boolean),
	replicator.drop_replica(text), replicator.pause_replica(text),
	replicator.resume_replica(text), replicator.validate(text) TO replicator_admin;

-- Tell the launcher this database now has the extension.
CREATE FUNCTION replicator.rescan()
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_rescan'
LANGUAGE C VOLATILE;
SELECT replicator.rescan();

-- slate's restore_events: refill an empty event source from a copy of its
-- events elsewhere.  fromPort is ours (slate's host could not name a port).
CREATE FUNCTION @extschema@.restore_events(fromHost text, fromDatabase text,
										   fromDatabaseUser text DEFAULT NULL,
										   fromDatabasePassword text DEFAULT NULL,
										   fromPort integer DEFAULT NULL,
										   OUT rows_restored bigint,
										   OUT next_insert_id bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'replicator_restore_events'
LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION @extschema@.restore_events(text, text, text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.restore_events(text, text, text, text, integer) TO replicator_admin;

-- ------------------------------------------------------------------------
-- Verification.  (The load tools are not part of the extension: the tests
-- and bench/ load bench/load_tools.sql.)
-- ------------------------------------------------------------------------

-- The differences between the source's events and a destination's:
-- kind is missing, extra, different ts, different event, or (validate)
-- invalid source / invalid destination.
CREATE FUNCTION replicator.diff(replica text, max_diffs bigint DEFAULT NULL,
								validate boolean DEFAULT false)
RETURNS TABLE (id bigint, kind text, source text, destination text)
AS 'MODULE_PATHNAME', 'replicator_diff'
LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION replicator.diff(text, bigint, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION replicator.diff(text, bigint, boolean) TO replicator_admin;


-- What any node says of itself and its master.
CREATE FUNCTION replicator.node(OUT name text, OUT role text, OUT epoch bigint,
								OUT master text, OUT master_conninfo text)
RETURNS record
AS 'MODULE_PATHNAME', 'replicator_node'
LANGUAGE C STABLE;

-- The topology as jsonb (no passwords): nodes, roles, tolerances, routing,
-- epochs.
CREATE FUNCTION replicator.topology()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'replicator_topology'
LANGUAGE C STABLE;

CREATE FUNCTION replicator.set_read_routing(strategy text)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_set_read_routing'
LANGUAGE C VOLATILE STRICT;

-- A node to read from: a connected, non-stale slave at least at
-- min_event_id, chosen by the routing strategy; the master if none.
CREATE FUNCTION replicator.read_replica(min_event_id bigint DEFAULT NULL)
RETURNS TABLE (name text, conninfo text)
AS 'MODULE_PATHNAME', 'replicator_read_replica'
LANGUAGE C VOLATILE;

-- Switchover (on the master, with a name) or failover (on a slave, without).
CREATE FUNCTION replicator.promote(name text DEFAULT NULL,
								   timeout interval DEFAULT '30 s',
								   force boolean DEFAULT false)
RETURNS TABLE (master text, epoch bigint, last_event_id bigint)
AS 'MODULE_PATHNAME', 'replicator_promote'
LANGUAGE C VOLATILE;

-- The node protocol: called by a master's streaming worker on the nodes it
-- streams to (superusers only; not for applications).
CREATE FUNCTION replicator.attach_to_master(master text, epoch bigint, node text,
											topology jsonb,
											OUT max_id bigint, OUT diverged bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'replicator_attach_to_master'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION replicator.master_heartbeat(epoch bigint, master_max_id bigint,
											behind_since timestamptz)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_master_heartbeat'
LANGUAGE C VOLATILE;

CREATE FUNCTION replicator.take_over(epoch bigint, from_master text, max_id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_take_over'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION replicator.node_position(OUT name text, OUT epoch bigint,
										 OUT max_id bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'replicator_node_position'
LANGUAGE C STABLE;

REVOKE EXECUTE ON FUNCTION replicator.set_read_routing(text),
	replicator.promote(text, interval, boolean),
	replicator.attach_to_master(text, bigint, text, jsonb),
	replicator.master_heartbeat(bigint, bigint, timestamptz),
	replicator.take_over(bigint, text, bigint),
	replicator.node_position() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION replicator.set_read_routing(text),
	replicator.promote(text, interval, boolean),
	replicator.node_position() TO replicator_admin;


-- A rule copies tables of this database to a replica.  Changed only through
-- add_rule, drop_rule, pause_rule and resume_rule.
CREATE TABLE replicator.rules (
	name		text PRIMARY KEY
		CHECK (name ~ '^[A-Za-z0-9_.-]{1,48}$'),
	-- the cdc rule's logical replication slot is replicator_rule_<dboid>_<id>
	id			integer NOT NULL UNIQUE
		GENERATED BY DEFAULT AS IDENTITY,
	target		text NOT NULL REFERENCES replicator.replicas (name),
	mode		text NOT NULL CHECK (mode IN ('snapshot', 'cdc')),
	-- as given: names (resolved when the rule was added) or '*'
	tables		text[] NOT NULL,
	conflict_resolution text NOT NULL
		CHECK (conflict_resolution IN ('source-wins', 'target-wins', 'last-write-wins', 'error')),
	timestamp_column text,
	paused		boolean NOT NULL DEFAULT false,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	created_by	name NOT NULL DEFAULT CURRENT_USER
);
REVOKE ALL ON replicator.rules FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('replicator.rules', '');
SELECT pg_catalog.pg_extension_config_dump('replicator.rules_id_seq', '');

-- The tables a rule copies, kept by its worker: a '*' rule gains a row for
-- each table created later.  state: copy (initial copy due), ready, paused
-- (this table only, with the reason).
CREATE TABLE replicator.rule_tables (
	rule		text NOT NULL REFERENCES replicator.rules (name) ON DELETE CASCADE,
	table_name	text NOT NULL,			-- schema-qualified, quoted as needed
	state		text NOT NULL DEFAULT 'copy'
		CHECK (state IN ('copy', 'ready', 'paused')),
	reason		text,
	inserted	bigint NOT NULL DEFAULT 0,
	updated		bigint NOT NULL DEFAULT 0,
	deleted		bigint NOT NULL DEFAULT 0,
	conflicts	bigint NOT NULL DEFAULT 0,
	copied_at	timestamptz,
	-- when a copy was last asked for: the target's record of a copy names
	-- the request it answered, so a copy is never done twice for one
	copy_requested timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	PRIMARY KEY (rule, table_name)
);
REVOKE ALL ON replicator.rule_tables FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('replicator.rule_tables', '');

-- Every conflict a rule met, with both versions and what was done.
CREATE TABLE replicator.conflicts (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	rule		text NOT NULL,
	table_name	text NOT NULL,
	key			jsonb NOT NULL,
	source_row	jsonb,
	target_row	jsonb,
	kind		text NOT NULL,		-- key exists, row missing, changed on target
	resolution	text NOT NULL,		-- source-wins, target-wins, set aside
	at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	-- its row in the target's replicator_apply.conflicts, where the batch
	-- that met it left it: recorded here once, whatever crashes
	target_seq	bigint,
	UNIQUE (rule, target_seq)
);
REVOKE ALL ON replicator.conflicts FROM PUBLIC;
GRANT SELECT, DELETE ON replicator.conflicts TO replicator_admin;
SELECT pg_catalog.pg_extension_config_dump('replicator.conflicts', '');
SELECT pg_catalog.pg_extension_config_dump('replicator.conflicts_id_seq', '');

-- Changes set aside by conflict_resolution 'error': the rest of the stream
-- goes on.  retry_rule_error() applies one again, skip_rule_error() drops it.
CREATE TABLE replicator.rule_errors (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	rule		text NOT NULL,
	table_name	text NOT NULL,
	op			text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
	key			jsonb NOT NULL,
	source_row	jsonb,
	reason		text NOT NULL,
	at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	target_seq	bigint,
	UNIQUE (rule, target_seq)
);
REVOKE ALL ON replicator.rule_errors FROM PUBLIC;
GRANT SELECT ON replicator.rule_errors TO replicator_admin;
SELECT pg_catalog.pg_extension_config_dump('replicator.rule_errors', '');
SELECT pg_catalog.pg_extension_config_dump('replicator.rule_errors_id_seq', '');

CREATE FUNCTION replicator.add_rule(name text, target text, mode text,
									tables text[] DEFAULT '{*}',
									conflict_resolution text DEFAULT 'source-wins',
									timestamp_column text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_add_rule'
LANGUAGE C VOLATILE;

CREATE FUNCTION replicator.drop_rule(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_drop_rule'
LANGUAGE C VOLATILE;

CREATE FUNCTION replicator.pause_rule(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_pause_rule'
LANGUAGE C VOLATILE;

CREATE FUNCTION replicator.resume_rule(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_resume_rule'
LANGUAGE C VOLATILE;

CREATE FUNCTION replicator.validate_rule(name text)
RETURNS TABLE (table_name text, column_name text, severity text, issue text, detail text)
AS 'MODULE_PATHNAME', 'replicator_validate_rule'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION replicator.sync(name text)
RETURNS TABLE (table_name text, inserted bigint, updated bigint, deleted bigint)
AS 'MODULE_PATHNAME', 'replicator_sync'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION replicator.wait_for_rule(name text, timeout interval DEFAULT '1 min')
RETURNS boolean
AS 'MODULE_PATHNAME', 'replicator_wait_for_rule'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION replicator.retry_rule_error(id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_retry_rule_error'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION replicator.skip_rule_error(id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'replicator_skip_rule_error'
LANGUAGE C VOLATILE STRICT;

-- What the rules' workers report from shared memory.
CREATE FUNCTION replicator.rule_worker_stats(
	OUT rule text, OUT pid integer, OUT state text, OUT applied_lsn pg_lsn,
	OUT copy_table text, OUT rows_copied bigint, OUT rows_total bigint,
	OUT pending_changes bigint, OUT oldest_pending timestamptz,
	OUT last_error text, OUT last_error_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'replicator_rule_worker_stats'
LANGUAGE C VOLATILE;

-- Per rule and table; a rule whose target replica is paused (as a
-- restored one is) is paused too.  lag_changes and lag: changes decoded and not yet
-- applied, and the age of the oldest of them (zero once caught up).
-- retained_wal: what the rule's slot keeps on this server.
CREATE VIEW replicator.rule_status AS
SELECT r.name AS rule,
	   r.mode,
	   t.table_name,
	   CASE
		   WHEN r.paused OR NOT p.enabled OR p.invalid_reason IS NOT NULL THEN 'paused'
		   WHEN s.wal_status = 'lost' THEN 'needs resync'
		   WHEN t.state = 'paused' THEN 'paused'
		   WHEN r.mode = 'snapshot' THEN coalesce(t.state, 'not synced')
		   WHEN w.state IN ('invalid', 'connecting', 'disconnected', 'starting') THEN w.state
		   WHEN t.table_name = w.copy_table THEN 'copying'
		   ELSE coalesce(t.state, w.state, 'starting')
	   END AS state,
	   CASE WHEN t.table_name = w.copy_table THEN w.rows_copied END AS rows_copied,
	   CASE WHEN t.table_name = w.copy_table THEN w.rows_total END AS rows_total,
	   w.pending_changes AS lag_changes,
	   CASE WHEN w.oldest_pending IS NULL THEN CASE WHEN w.pid IS NOT NULL THEN interval '0' END
			ELSE pg_catalog.now() - w.oldest_pending END AS lag,
	   pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_wal_bytes,
	   w.applied_lsn,
	   t.inserted,
	   t.updated,
	   t.deleted,
	   t.conflicts,
	   coalesce(t.reason, w.last_error) AS last_error,
	   w.last_error_at,
	   r.target,
	   r.conflict_resolution,
	   r.tables AS rule_tables,
	   w.pid
FROM replicator.rules r
	 JOIN replicator.replicas p ON p.name = r.target
	 LEFT JOIN replicator.rule_tables t ON t.rule = r.name
	 LEFT JOIN replicator.rule_worker_stats() w ON w.rule = r.name
	 LEFT JOIN pg_catalog.pg_replication_slots s
		ON s.slot_name = 'replicator_rule_' || (SELECT oid FROM pg_catalog.pg_database
												 WHERE datname = pg_catalog.current_database())
						 || '_' || r.id;
REVOKE ALL ON replicator.rule_status FROM PUBLIC;
GRANT SELECT ON replicator.rule_status TO replicator_admin;

REVOKE EXECUTE ON FUNCTION replicator.add_rule(text, text, text, text[], text, text),
	replicator.drop_rule(text), replicator.pause_rule(text),
	replicator.resume_rule(text), replicator.validate_rule(text),
	replicator.sync(text), replicator.wait_for_rule(text, interval),
	replicator.retry_rule_error(bigint), replicator.skip_rule_error(bigint),
	replicator.rule_worker_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION replicator.add_rule(text, text, text, text[], text, text),
	replicator.drop_rule(text), replicator.pause_rule(text),
	replicator.resume_rule(text), replicator.validate_rule(text),
	replicator.sync(text), replicator.wait_for_rule(text, interval),
	replicator.retry_rule_error(bigint), replicator.skip_rule_error(bigint),
	replicator.rule_worker_stats() TO replicator_admin;
