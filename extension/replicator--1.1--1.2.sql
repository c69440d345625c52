-- replicator 1.1 -> 1.2: replica topology (nodes, roles, epochs, read
-- routing, switchover, failover).  The objects after this script are exactly
-- those of a fresh 1.2 install (t/ checks it).

\echo Use "ALTER EXTENSION replicator UPDATE TO '1.2'" to load this file. \quit

-- Before 1.2 the role was stored and unused: every replica was a plain
-- destination, and stays one.  From 1.2 on, role 'master' names this node
-- as a topology's master (add_replica(..., role => 'master')).
DO $$
DECLARE
	masters text;
BEGIN
	SELECT pg_catalog.string_agg(pg_catalog.quote_literal(name), ', ' ORDER BY name) INTO masters
	FROM replicator.replicas WHERE role = 'master';
	IF masters IS NOT NULL THEN
		UPDATE replicator.replicas SET role = 'slave' WHERE role = 'master';
		RAISE WARNING 'replicas % keep streaming as destinations (role ''slave'')', masters
			USING DETAIL = 'From 1.2 on, role ''master'' names this database itself as the master of a topology.',
				  HINT = 'To make this database a topology''s master: SELECT replicator.add_replica(''<name>'', ''<how others reach it>'', role => ''master'').';
	END IF;
END
$$;

-- replica_status gains stale, tables and diverged, from worker_stats.
DROP VIEW replicator.replica_status;
DROP FUNCTION replicator.worker_stats();

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
GRANT SELECT ON replicator.replica_status TO PUBLIC;


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
