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
