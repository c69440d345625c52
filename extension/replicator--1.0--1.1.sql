-- replicator 1.0 -> 1.1: hardening.  The objects after this script are
-- exactly those of a fresh 1.1 install (t/ checks it).

\echo Use "ALTER EXTENSION replicator UPDATE TO '1.1'" to load this file. \quit

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
