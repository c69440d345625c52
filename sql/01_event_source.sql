-- The event source objects, as slate's tools expect them.
CREATE EXTENSION replicator;
SELECT replicator.streaming_available();

\d events
\d id
SELECT * FROM id;

-- the jsonb[] form returns the ids it assigned
SELECT first_id, last_id FROM insert_events_array(ARRAY['{"entityName":"Person","operation":"created"}', '{"n":2}']::jsonb[]);
SELECT first_id, last_id FROM insert_events_array(ARRAY['{"n":3}']::jsonb[]);
SELECT id, event FROM events ORDER BY id;
SELECT id FROM id;

-- errors of the jsonb[] form, and nothing changes
SELECT insert_events_array(NULL::jsonb[]);
SELECT insert_events_array('{}'::jsonb[]);
SELECT insert_events_array(ARRAY['{"a":1}', NULL]::jsonb[]);
SELECT insert_events_array(ARRAY[['{"a":1}'], ['{"b":1}']]::jsonb[]);
SELECT count(*), max(id) FROM events;
SELECT id FROM id;

-- slate's text form: the text after INSERT INTO events (id, ts, event) VALUES
SELECT insert_events($$($1[1], $2, '{"entityName":"Person","entityId":"e1"}'),($1[2], $2, '{"n":5}')$$);
SELECT insert_events($$($1[1], $2, '{"s":"it''s"}'::jsonb)$$);
SELECT insert_events($$($1[1], $2, E'{"s":"tab\\tx"}')$$);
SELECT id, event FROM events WHERE id > 3 ORDER BY id;

-- slate's errors for slate's bad input
SELECT insert_events('');
SELECT insert_events($$(1, $2, '{}')$$);
SELECT insert_events($$($1[1], $2, '{}'),($1[3], $2, '{}')$$);
SELECT insert_events($$($1[2], $2, '{}'),($1[3], $2, '{}')$$);
SELECT insert_events($$($1[2], $2, '{}')$$);
-- anything but ($1[k], $2, '<json>') rows is refused, never executed
SELECT insert_events($$($1[1], now(), '{}')$$);
SELECT insert_events($$($1[1], $2, '{}', 4)$$);
SELECT insert_events($$($1[1], $2, (SELECT '{}'))$$);
SELECT insert_events($$($1[1], $2, '{}'); DROP TABLE events$$);
SELECT insert_events($$($1[1], $2, '{}') RETURNING id$$);
SELECT insert_events($$($1[1], $2, 'not json')$$);
SELECT insert_events($$($1[1], $2, '{}'$$);
SELECT insert_events(NULL::text);
SELECT count(*), max(id) FROM events;
SELECT id FROM id;
