-- replicator 1.0: the event source (events, id, insert_events, triggers) in
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

-- The safe form: one event per array element, no SQL text.
CREATE FUNCTION @extschema@.insert_events(events jsonb[],
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
