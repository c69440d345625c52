-- The management API, its errors, and streaming into another database of
-- this server.
CREATE DATABASE replicator_regress_dst;
SELECT format('host=%s port=%s dbname=replicator_regress_dst',
              current_setting('unix_socket_directories'), current_setting('port')) AS dst \gset

SELECT replicator.add_replica('dst1', :'dst');
SELECT name, role, conninfo LIKE '%dbname=''replicator_regress_dst''%' AS conninfo_shown FROM replicator.replica_status;

-- bad input: clear errors, nothing changes
SELECT replicator.add_replica('dst1', :'dst');
SELECT replicator.add_replica('bad name!', :'dst');
SELECT replicator.add_replica(NULL, :'dst');
SELECT replicator.add_replica('x', NULL);
SELECT replicator.add_replica('x', 'host=/tmp port');
SELECT replicator.add_replica('x', 'host=/tmp password=s3cret port=x = 1');
SELECT replicator.add_replica('x', 'nosuchoption=1');
SELECT replicator.add_replica('x', :'dst', role => 'boss');
SELECT replicator.drop_replica('nosuch');
SELECT replicator.pause_replica('nosuch');
SELECT replicator.resume_replica('nosuch');
SELECT replicator.validate('nosuch');
SELECT replicator.wait_for_replica('nosuch', '1s');
SELECT count(*) FROM replicator.replicas;

-- streaming: events arrive exactly, woken at commit
SELECT last_id FROM insert_events_array(ARRAY(SELECT jsonb_build_object('k', k, 'n', 12345678901234567890.123456789) FROM generate_series(1, 500) k));
SELECT insert_events($$($1[1], $2, '{"entityName":"x","big":1e400}')$$);
SELECT replicator.wait_for_replica('dst1', '60s');
SELECT name, state, position, source_max_id, lag_events, lag, events_sent, last_error
  FROM replicator.replica_status;
SELECT check_name, ok FROM replicator.validate('dst1');

-- compare row by row through a second connection
\c replicator_regress_dst
SELECT count(*), max(id), md5(string_agg(id || ' ' || (extract(epoch from ts) * 1000000)::bigint || ' ' || event::text, ',' ORDER BY id)) AS digest FROM events \gset dst_
\c contrib_regression
SELECT count(*) = :dst_count AS same_count, max(id) = :dst_max AS same_max,
       md5(string_agg(id || ' ' || (extract(epoch from ts) * 1000000)::bigint || ' ' || event::text, ',' ORDER BY id)) = :'dst_digest' AS same_rows
  FROM events;

-- pause: nothing moves; resume: it catches up
SELECT replicator.pause_replica('dst1');
SELECT state FROM replicator.replica_status;
SELECT last_id FROM insert_events_array(ARRAY['{"while":"paused"}']::jsonb[]);
SELECT replicator.wait_for_replica('dst1', '2s');
SELECT replicator.resume_replica('dst1');
SELECT replicator.wait_for_replica('dst1', '60s');

-- passwords never show
SELECT replicator.add_replica('secret', 'host=/nonexistent password=s3cret dbname=x', enabled => false);
SELECT name, state, conninfo FROM replicator.replica_status WHERE name = 'secret';
SELECT replicator.mask_conninfo('postgresql://u:s3cret@h:5/db');
SELECT replicator.drop_replica('secret');

-- who may do what
CREATE ROLE replicator_regress_user;
CREATE ROLE replicator_regress_admin IN ROLE replicator_admin;
SET ROLE replicator_regress_user;
SELECT replicator.add_replica('x', :'dst');
SELECT replicator.drop_replica('dst1');
SELECT * FROM replicator.replicas;
SELECT name, conninfo, position >= 0 AS has_position FROM replicator.replica_status;
SET ROLE replicator_regress_admin;
-- a non-superuser conninfo must carry a password
SELECT replicator.add_replica('x', :'dst');
SELECT replicator.add_replica('x', :'dst' || ' password=pw', enabled => false);
SELECT name, conninfo IS NOT NULL AS conninfo_shown FROM replicator.replica_status ORDER BY name;
SELECT replicator.drop_replica('x');
RESET ROLE;
DROP ROLE replicator_regress_user;
DROP ROLE replicator_regress_admin;

-- dropped: the worker stops; the destination keeps its events
SELECT replicator.drop_replica('dst1');
SELECT count(*) FROM replicator.replica_status;
DROP DATABASE replicator_regress_dst WITH (FORCE);
