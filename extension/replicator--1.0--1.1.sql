-- replicator 1.0 -> 1.1: hardening.  The objects after this script are
-- exactly those of a fresh 1.1 install (t/ checks it).

\echo Use "ALTER EXTENSION replicator UPDATE TO '1.1'" to load this file. \quit

-- slate's replicator requires exactly one routine named insert_events: the
-- jsonb[] form gets a name of its own.
ALTER FUNCTION @extschema@.insert_events(jsonb[]) RENAME TO insert_events_array;

-- pg_dump keeps the events and the destinations (see the install script).
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events', '');

CREATE FUNCTION @extschema@.check_restored_events()
RETURNS trigger
AS 'MODULE_PATHNAME', 'replicator_check_restored_events'
LANGUAGE C;

CREATE TRIGGER check_restored_events
	AFTER INSERT ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.check_restored_events();

SELECT pg_catalog.pg_extension_config_dump('replicator.replicas', '');

CREATE FUNCTION replicator.pause_unmanaged_replica()
RETURNS trigger
AS 'MODULE_PATHNAME', 'replicator_pause_unmanaged_replica'
LANGUAGE C;

CREATE TRIGGER pause_unmanaged_replica
	BEFORE INSERT ON replicator.replicas
	FOR EACH ROW EXECUTE FUNCTION replicator.pause_unmanaged_replica();

-- The load tools leave the extension: tests and bench/ load
-- bench/load_tools.sql themselves.
ALTER EXTENSION replicator DROP PROCEDURE replicator.load_person_data(text, integer, integer, integer);
ALTER EXTENSION replicator DROP FUNCTION replicator.person_event(text, bigint, integer, integer);
ALTER EXTENSION replicator DROP FUNCTION replicator.perf_event();
DROP PROCEDURE replicator.load_person_data(text, integer, integer, integer);
DROP FUNCTION replicator.person_event(text, bigint, integer, integer);
DROP FUNCTION replicator.perf_event();

-- One history: a replica dropped and added again in one transaction is a
-- new one to its running worker, which starts over with full checks.
ALTER TABLE replicator.replicas
	ADD COLUMN incarnation uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid();

-- Privileges: the catalog changes only through the API functions, and the
-- password rule follows who added or last changed a replica (changed_by),
-- not a column its editors could set.
REVOKE ALL ON replicator.replicas FROM replicator_admin;
ALTER TABLE replicator.replicas ADD COLUMN changed_by name NOT NULL DEFAULT CURRENT_USER;
UPDATE replicator.replicas SET changed_by = created_by;
ALTER TABLE replicator.replicas DROP COLUMN require_password;
-- 1.0 stored the first events' contents in the reason, which every role reads
UPDATE replicator.replicas
	SET invalid_reason = 'same first event: the destination''s first event differs from the source''s (replicator.validate() shows both)'
	WHERE invalid_reason LIKE 'same first event: the destination''s first event (%';

-- What admins read in the table before, without its conninfo: the view.
CREATE OR REPLACE VIEW replicator.replica_status AS
SELECT r.name,
	   r.role,
	   CASE
		   WHEN r.invalid_reason IS NOT NULL THEN 'invalid'
		   WHEN NOT r.enabled THEN 'paused'
		   ELSE coalesce(w.state, 'starting')
	   END AS state,
	   CASE WHEN pg_catalog.pg_has_role('replicator_admin', 'MEMBER')
			THEN replicator.mask_conninfo(r.conninfo) END AS conninfo,
	   w.position,
	   m.max_id AS source_max_id,
	   m.max_id - w.position AS lag_events,
	   CASE
		   WHEN w.position IS NULL THEN NULL
		   WHEN w.position >= m.max_id THEN interval '0'
		   ELSE pg_catalog.now() - (SELECT e.ts FROM @extschema@.events e WHERE e.id = w.position + 1)
	   END AS lag,
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
	 LEFT JOIN replicator.worker_stats() w ON w.name = r.name
	 CROSS JOIN (SELECT coalesce(max(id), 0) AS max_id FROM @extschema@.events) m;
