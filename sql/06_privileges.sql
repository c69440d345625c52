-- An application role needs exactly what the README lists.
CREATE ROLE replicator_test_app;
SET ROLE replicator_test_app;
SELECT insert_events_array(ARRAY['{"as":"app"}']::jsonb[]);
RESET ROLE;
GRANT INSERT, SELECT ON events TO replicator_test_app;
GRANT SELECT, UPDATE ON id TO replicator_test_app;
SET ROLE replicator_test_app;
SELECT last_id - first_id + 1 AS inserted FROM insert_events_array(ARRAY['{"as":"app"}','{"as":"app"}']::jsonb[]);
SELECT insert_events($$($1[1], $2, '{"as":"app"}')$$);
-- and still cannot go around insert_events
INSERT INTO events VALUES (100, now(), '{}');
UPDATE id SET id = 1;
RESET ROLE;
SELECT count(*) = max(id) AS gapless FROM events;
DROP OWNED BY replicator_test_app;
DROP ROLE replicator_test_app;
