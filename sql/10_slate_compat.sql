-- slate's own tools accept our event source: slate-replicator's start-up
-- validation (lib/replicator.js, validateDatabase) as a superuser and as an
-- application role with the README's grants, and diff(..., validate => true)
-- on events that slate's loadPersonData writes (testingStats).
CREATE DATABASE replicator_regress_slate;
CREATE DATABASE replicator_regress_slate_dst;
\c replicator_regress_slate
SET client_min_messages = warning;
CREATE EXTENSION replicator;
RESET client_min_messages;

-- slate's queries and the row counts it requires on an event source
CREATE TEMP VIEW slate_checks AS
SELECT 'notify trigger' AS test, 1 AS required,
       (SELECT count(*) FROM INFORMATION_SCHEMA.triggers WHERE event_object_table = 'events' AND trigger_name = 'notify_insert') AS found
UNION ALL SELECT 'notify trigger function', 1,
       (SELECT count(*) FROM INFORMATION_SCHEMA.routines WHERE routine_name = 'notify_event_insert' AND routine_type = 'FUNCTION')
UNION ALL SELECT 'command check trigger', 2,
       (SELECT count(*) FROM INFORMATION_SCHEMA.triggers WHERE event_object_table = 'events' AND trigger_name = 'check_sql_command')
UNION ALL SELECT 'command check trigger function', 1,
       (SELECT count(*) FROM INFORMATION_SCHEMA.routines WHERE routine_name = 'filter_sql_command' AND routine_type = 'FUNCTION')
UNION ALL SELECT 'insert_events function', 1,
       (SELECT count(*) FROM INFORMATION_SCHEMA.routines WHERE routine_name = 'insert_events' AND routine_type = 'FUNCTION')
UNION ALL SELECT 'restore_events function', 1,
       (SELECT count(*) FROM INFORMATION_SCHEMA.routines WHERE routine_name = 'restore_events' AND routine_type = 'FUNCTION')
UNION ALL SELECT 'id table', 1,
       (SELECT count(*) FROM INFORMATION_SCHEMA.tables WHERE table_name = 'id' AND table_schema = 'public');
GRANT SELECT ON slate_checks TO PUBLIC;

-- as a superuser
SELECT test, required, found, found = required AS passes FROM slate_checks;

-- as the application role slate's replicator connects as, with the README's
-- grants; restore_events is visible only with EXECUTE on it
CREATE ROLE replicator_regress_slate_app;
GRANT INSERT, SELECT ON events TO replicator_regress_slate_app;
GRANT SELECT, UPDATE ON id TO replicator_regress_slate_app;
SET ROLE replicator_regress_slate_app;
SELECT test, found FROM slate_checks WHERE test = 'restore_events function';
RESET ROLE;
GRANT EXECUTE ON FUNCTION restore_events(text, text, text, text, integer) TO replicator_regress_slate_app;
SET ROLE replicator_regress_slate_app;
SELECT test, required, found, found = required AS passes FROM slate_checks;
-- and it inserts as slate's clients do
SELECT insert_events($$($1[1], $2, '{"as":"slate app"}')$$);
RESET ROLE;

-- diff understands slate's loadPersonData validation data: each event of a
-- call carries testingStats {programId, dbOperationNum, dbOperationId,
-- dbOperationEventNum (1..n), dbOperationEventCount (n), dbOperationTS}
CREATE FUNCTION slate_call(c int, n int, nums int[]) RETURNS integer LANGUAGE sql AS $$
SELECT insert_events(string_agg(format('($1[%s], $2, %L)', o,
         jsonb_build_object('entityName', 'Person', 'operation', 'created',
           'testingStats', jsonb_build_object('programId', 'a0e1c2d3-prog', 'dbOperationNum', c,
             'dbOperationId', 'op-' || c, 'dbOperationEventNum', k,
             'dbOperationEventCount', n, 'dbOperationTS', '2026-11-23T00:00:00.000Z'))),
       ', ' ORDER BY o))
FROM unnest(nums) WITH ORDINALITY AS u(k, o)
$$;
SELECT slate_call(c, 3, ARRAY[1, 2, 3]) FROM generate_series(1, 4) c;
SELECT format('host=%s port=%s dbname=replicator_regress_slate_dst',
              current_setting('unix_socket_directories'), current_setting('port')) AS dst \gset
SELECT replicator.add_replica('slate', :'dst');
SELECT replicator.wait_for_replica('slate', '60s');
SET client_min_messages = warning;
SELECT * FROM replicator.diff('slate', validate => true);
RESET client_min_messages;

-- a call with an event missing, on the source (and so on the destination)
SELECT slate_call(5, 3, ARRAY[1, 2]);
SELECT replicator.wait_for_replica('slate', '60s');
SET client_min_messages = warning;
SELECT * FROM replicator.diff('slate', validate => true) ORDER BY kind;
RESET client_min_messages;

-- a destination whose call is out of order
\c replicator_regress_slate_dst
UPDATE events SET event = jsonb_set(event, '{testingStats,dbOperationEventNum}', '3') WHERE id = 3;
UPDATE events SET event = jsonb_set(event, '{testingStats,dbOperationEventNum}', '2') WHERE id = 4;
\c replicator_regress_slate
SET client_min_messages = warning;
SELECT id, kind, CASE WHEN kind LIKE 'invalid%' THEN coalesce(source, destination) END AS detail
  FROM replicator.diff('slate', validate => true) ORDER BY kind, id;
RESET client_min_messages;

SELECT replicator.drop_replica('slate');
\c contrib_regression
DROP DATABASE replicator_regress_slate WITH (FORCE);
DROP DATABASE replicator_regress_slate_dst WITH (FORCE);
DROP ROLE replicator_regress_slate_app;
