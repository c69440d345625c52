-- DROP and re-CREATE, and an event source in another schema.
DROP EXTENSION replicator;
SELECT count(*) FROM pg_namespace WHERE nspname = 'replicator';
SELECT to_regclass('events'), to_regclass('id');
CREATE EXTENSION replicator;
SELECT count(*) FROM events;
SELECT first_id FROM insert_events_array(ARRAY['{"fresh":true}']::jsonb[]);
DROP EXTENSION replicator;

CREATE SCHEMA es;
CREATE EXTENSION replicator SCHEMA es;
SELECT first_id, last_id FROM es.insert_events_array(ARRAY['{"a":1}','{"b":2}']::jsonb[]);
SELECT es.insert_events($$($1[1], $2, '{"c":3}')$$);
SELECT id, event FROM es.events ORDER BY id;
INSERT INTO es.events VALUES (9, now(), '{}');
DROP EXTENSION replicator;
DROP SCHEMA es;

-- the management schema is not a place for the event source
CREATE SCHEMA replicator;
CREATE EXTENSION replicator SCHEMA replicator;
DROP SCHEMA replicator;

-- unknown parameters in our prefix are refused
SET replicator.no_such_setting = 1;
SHOW replicator.max_events_per_write;
SHOW replicator.connect_timeout;
CREATE EXTENSION replicator;
