-- Nodes and roles without workers: the node protocol called by hand, as a
-- master's worker calls it, on a second database of this server.
CREATE DATABASE replicator_regress_master;
CREATE DATABASE replicator_regress_node;
CREATE DATABASE replicator_regress_own;
SELECT format('host=%s port=%s dbname=',
              current_setting('unix_socket_directories'), current_setting('port')) AS base \gset
\c replicator_regress_master
CREATE EXTENSION replicator;

-- a standalone source is in no topology
SELECT * FROM replicator.node_state;
SELECT * FROM replicator.promote();
SELECT * FROM replicator.promote('x');

-- the master names itself: epoch 1
SELECT replicator.add_replica('m', :'base' || 'replicator_regress_master', role => 'master');
SELECT replicator.add_replica('m2', :'base' || 'replicator_regress_master', role => 'master');
SELECT name, epoch, master FROM replicator.node_state;
SELECT epoch, master, first_id, how FROM replicator.epochs;
SELECT name, role, state FROM replicator.replica_status;
SELECT replicator.drop_replica('m');
SELECT * FROM replicator.promote();
SELECT * FROM replicator.promote('m');
SELECT * FROM replicator.promote('nosuch');
SELECT * FROM replicator.promote('m', '-1 s');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM replicator.promote('x');
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT * FROM replicator.promote('x');
ROLLBACK;
SELECT first_id FROM insert_events_array(ARRAY['{"on":"master"}']::jsonb[]);

-- an operator a replicator_admin member plants in its own schema never runs
-- as the extension's owner (the catalog is read with a fixed search_path)
CREATE ROLE regress_planter IN ROLE replicator_admin;
CREATE SCHEMA regress_planter AUTHORIZATION regress_planter;
SET ROLE regress_planter;
CREATE FUNCTION regress_planter.m(float8, int) RETURNS float8 LANGUAGE plpgsql
	AS $$BEGIN RAISE EXCEPTION 'planted operator ran as %', current_user; END$$;
CREATE OPERATOR regress_planter.* (LEFTARG = float8, RIGHTARG = int, FUNCTION = regress_planter.m);
SET search_path = regress_planter, public;
SELECT name, epoch FROM replicator.node_position();
SELECT replicator.set_read_routing('least-lag');
SELECT replicator.pause_replica('nosuch');
RESET search_path;
RESET ROLE;

\c replicator_regress_node
CREATE EXTENSION replicator;
SET client_min_messages = warning;
CREATE ROLE regress_node_admin IN ROLE replicator_admin;
SET ROLE regress_node_admin;
SELECT * FROM replicator.attach_to_master('m', 1, 's1', '{}');
RESET ROLE;

-- a master of epoch 1 attaches this database as slave s1, pushing its topology
SELECT jsonb_build_object('master', 'm', 'epoch', 1, 'routing', 'round-robin',
		'nodes', jsonb_build_array(
			jsonb_build_object('name', 'm', 'conninfo', 'host=m password=secret', 'role', 'master', 'enabled', true,
							   'incarnation', gen_random_uuid(), 'created_at', now(), 'created_by', 'alice', 'superuser_set', true),
			jsonb_build_object('name', 's1', 'conninfo', 'host=s1', 'role', 'slave', 'enabled', true, 'lag_tolerance', '5 s',
							   'incarnation', gen_random_uuid(), 'created_at', now(), 'created_by', 'bob', 'superuser_set', false)),
		'epochs', jsonb_build_array(jsonb_build_object('epoch', 1, 'master', 'm', 'first_id', 1, 'how', 'registered', 'started_at', now()))) AS topology \gset
SELECT max_id, diverged FROM replicator.attach_to_master('m', 1, 's1', :'topology');
SELECT name, epoch, master, routing FROM replicator.node_state;
-- pushed rows are not paused; a conninfo set by a non-superuser on the master needs a password here
SELECT name, role, enabled, invalid_reason, lag_tolerance, changed_by FROM replicator.replicas ORDER BY name;
SELECT name, role, state FROM replicator.replica_status ORDER BY name;

-- this session is the master's stream: it may insert
INSERT INTO events VALUES (1, now(), '{"from":"m"}');
-- another session may not, nor may insert_events
\c replicator_regress_node
SELECT insert_events_array(ARRAY['{"on":"slave"}']::jsonb[]);
SELECT insert_events($$($1[1], $2, '{"on":"slave"}')$$);
INSERT INTO events VALUES (2, now(), '{"from":"me"}');
-- the topology is the master's to change
SELECT replicator.add_replica('s2', 'host=s2');
SELECT replicator.pause_replica('m');
SELECT replicator.set_read_routing('random');
SELECT * FROM replicator.promote('m');

-- a master of an older epoch is refused; one of the same epoch under
-- another name too
SELECT * FROM replicator.attach_to_master('old', 0, 's1', '{}');
SELECT * FROM replicator.attach_to_master('other', 1, 's1', '{}');

-- a stream attached at epoch 1 stops writing once the node moves on
SELECT max_id FROM replicator.attach_to_master('m', 1, 's1', :'topology');
SELECT * FROM replicator.take_over(2, 'm', 5);
SELECT * FROM replicator.take_over(3, 'm', 1);
SELECT * FROM replicator.take_over(2, 'm', 1);
INSERT INTO events VALUES (2, now(), '{"from":"m, stale"}');
\c replicator_regress_node
SELECT name, epoch, master FROM replicator.node_state;
SELECT epoch, master, first_id, how, detail FROM replicator.epochs ORDER BY epoch;
SELECT name, role FROM replicator.replicas ORDER BY name;
-- the new master writes, after the events it took over
SELECT first_id FROM insert_events_array(ARRAY['{"on":"new master"}']::jsonb[]);

-- demoted by a master of epoch 3 whose history parted after event 1: the
-- events from id 2 on are set aside, never dropped
SELECT max_id, diverged FROM replicator.attach_to_master('t', 3, 's1',
	jsonb_build_object('master', 't', 'epoch', 3, 'routing', 'least-lag', 'nodes', '[]'::jsonb,
		'epochs', (SELECT jsonb_agg(to_jsonb(e)) FROM replicator.epochs e WHERE epoch = 1)
			|| jsonb_build_object('epoch', 3, 'master', 't', 'first_id', 2, 'how', 'failover', 'started_at', now())));
SELECT id, event, epoch FROM replicator.diverged_events;
-- a master of another topology (another first epoch) is refused
SELECT * FROM replicator.attach_to_master('x', 9, 's1',
	'{"nodes": [], "epochs": [{"epoch": 1, "master": "x", "first_id": 1, "started_at": "2026-01-01"}]}');
SELECT id, event FROM events ORDER BY id;
SELECT name, epoch, master FROM replicator.node_state;
SELECT insert_events_array(ARRAY['{"on":"demoted"}']::jsonb[]);

-- the stream of t writes events 2 to 4; then a master of epoch 4 whose
-- history parted from this node's at an earlier epoch (epoch 3 was v's from
-- id 3 there, t's from id 2 here) demotes it: the events from id 2 on are
-- set aside
INSERT INTO events SELECT g, now(), jsonb_build_object('from', 't', 'k', g) FROM generate_series(2, 4) g;
SELECT max_id, diverged FROM replicator.attach_to_master('u', 4, 's1',
	jsonb_build_object('master', 'u', 'epoch', 4, 'routing', 'least-lag', 'nodes', '[]'::jsonb,
		'epochs', (SELECT jsonb_agg(to_jsonb(e)) FROM replicator.epochs e WHERE epoch = 1)
			|| jsonb_build_object('epoch', 3, 'master', 'v', 'first_id', 3, 'how', 'failover', 'started_at', now())
			|| jsonb_build_object('epoch', 4, 'master', 'u', 'first_id', 5, 'how', 'failover', 'started_at', now())));
SELECT id, event->>'from' AS from_master, epoch FROM replicator.diverged_events WHERE event ? 'k' ORDER BY id;
SELECT max(id) FROM events;

-- a database with events of its own never becomes a slave
\c replicator_regress_own
CREATE EXTENSION replicator;
SELECT first_id FROM insert_events_array(ARRAY['{"own":1}']::jsonb[]);
SELECT * FROM replicator.attach_to_master('m', 1, 's9', '{"epochs": [], "nodes": []}');
SELECT count(*) FROM replicator.node_state;

\c contrib_regression
DROP DATABASE replicator_regress_master WITH (FORCE);
DROP DATABASE replicator_regress_node WITH (FORCE);
DROP DATABASE replicator_regress_own WITH (FORCE);
DROP ROLE regress_node_admin;
DROP ROLE regress_planter;
