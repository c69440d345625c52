-- The rules API's input checks, on a database of its own with a rule
-- target registered in the same server.  This server has wal_level
-- replica: cdc rules are refused, snapshot rules are not.
CREATE DATABASE replicator_regress_rules;
CREATE DATABASE replicator_regress_rules_dst;
SELECT format('host=%s port=%s dbname=replicator_regress_rules_dst',
              current_setting('unix_socket_directories'), current_setting('port')) AS dst \gset
\c replicator_regress_rules
CREATE EXTENSION replicator;
SHOW wal_level;

CREATE SCHEMA app;
CREATE TABLE app.orders (id int PRIMARY KEY, amount numeric, updated_at timestamptz);
CREATE TABLE customers (id int PRIMARY KEY, name text);
CREATE VIEW customer_names AS SELECT name FROM customers;

-- a database registered only as a rule target: no events stream there
SELECT replicator.add_replica('tgt', :'dst', stream_events => false);
SELECT replicator.add_replica('tgt_master', :'dst', role => 'master', stream_events => false);
SELECT name, role, state, stream_events, enabled
  FROM replicator.replica_status JOIN replicator.replicas USING (name, role, enabled);
SELECT count(*) FROM replicator.worker_stats();

-- bad input: a clear error each, and no rule
SELECT replicator.add_rule('bad name!', 'tgt', 'snapshot', '{customers}');
SELECT replicator.add_rule('', 'tgt', 'snapshot', '{customers}');
SELECT replicator.add_rule(repeat('r', 49), 'tgt', 'snapshot', '{customers}');
SELECT replicator.add_rule(NULL, 'tgt', 'snapshot', '{customers}');
SELECT replicator.add_rule('r', NULL, 'snapshot', '{customers}');
SELECT replicator.add_rule('r', 'tgt', NULL, '{customers}');
SELECT replicator.add_rule('r', 'tgt', 'bidirectional', '{customers}');
SELECT replicator.add_rule('r', 'tgt', 'mirror', '{customers}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{customers}', conflict_resolution => 'newest');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{customers}', conflict_resolution => NULL);
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{app.orders}', timestamp_column => 'updated_at');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{app.orders}', conflict_resolution => 'source-wins',
                           timestamp_column => 'updated_at');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{nosuch}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{app.nosuch}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{orders}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{customer_names}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{events}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{public.id}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{replicator.replicas}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{replicator.rules}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{pg_catalog.pg_class}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{customers, events}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', NULL);
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{}');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{customers, NULL}');
SELECT replicator.add_rule('r', 'nosuch', 'snapshot', '{customers}');
SELECT replicator.add_rule('r', 'tgt', 'cdc', '{customers}');
SELECT replicator.add_rule('r', 'tgt', 'cdc');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{app.orders, customers}',
                           conflict_resolution => 'last-write-wins', timestamp_column => 'updated_at');
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{app.orders}',
                           conflict_resolution => 'last-write-wins', timestamp_column => 'changed_at');
-- '*' with a timestamp_column: every table '*' takes now must have it
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{*}',
                           conflict_resolution => 'last-write-wins', timestamp_column => 'updated_at');
-- last-write-wins without a timestamp_column: the target must record
-- commit timestamps (this server does not), and be reachable to tell
SELECT replicator.add_rule('r', 'tgt', 'snapshot', '{customers}', conflict_resolution => 'last-write-wins');
SELECT replicator.add_replica('gone', 'host=/nonexistent dbname=x', stream_events => false);
\set VERBOSITY terse
SELECT replicator.add_rule('r', 'gone', 'snapshot', '{customers}', conflict_resolution => 'last-write-wins');
\set VERBOSITY default
SELECT replicator.drop_replica('gone');
SELECT count(*) FROM replicator.rules;

-- a valid snapshot rule: tables found on the search_path are stored qualified
SET search_path = app, public;
SELECT replicator.add_rule('orders.snap', 'tgt', 'snapshot', '{orders, customers}');
RESET search_path;
SELECT name, target, mode, tables, conflict_resolution, timestamp_column, paused,
       created_by = current_user AS created_by_me, id > 0 AS has_id
  FROM replicator.rules;
SELECT replicator.add_rule('all-lww', 'tgt', 'snapshot', '{app.orders}',
                           conflict_resolution => 'last-write-wins', timestamp_column => 'updated_at');
SELECT name, mode, tables, conflict_resolution, timestamp_column FROM replicator.rules ORDER BY name;
-- the same name again
SELECT replicator.add_rule('orders.snap', 'tgt', 'snapshot', '{customers}');
SELECT name, tables FROM replicator.rules ORDER BY name;
SELECT rule, mode, table_name, state, target, rule_tables FROM replicator.rule_status ORDER BY rule;
-- the target of a rule is not dropped from under it
SELECT replicator.drop_replica('tgt');
SELECT name FROM replicator.replicas;
-- a paused target pauses its rules
SELECT replicator.pause_replica('tgt');
SELECT rule, state FROM replicator.rule_status ORDER BY rule;
SELECT replicator.resume_replica('tgt');
SELECT rule, state FROM replicator.rule_status ORDER BY rule;

-- pause, resume, drop: unknown rules
SELECT replicator.pause_rule('nosuch');
SELECT replicator.resume_rule('nosuch');
SELECT replicator.drop_rule('nosuch');
SELECT replicator.pause_rule(NULL);
SELECT replicator.resume_rule(NULL);
SELECT replicator.drop_rule(NULL);
SELECT replicator.wait_for_rule('nosuch');
SELECT name, paused FROM replicator.rules ORDER BY name;
-- and known ones
SELECT replicator.pause_rule('orders.snap');
SELECT name, paused FROM replicator.rules ORDER BY name;
SELECT rule, state FROM replicator.rule_status ORDER BY rule;
SELECT replicator.pause_rule('orders.snap');
SELECT replicator.resume_rule('orders.snap');
SELECT name, paused FROM replicator.rules ORDER BY name;
SELECT replicator.resume_rule('orders.snap');
SELECT replicator.drop_rule('all-lww');
SELECT name FROM replicator.rules ORDER BY name;
SELECT replicator.drop_rule('all-lww');
-- a snapshot rule has nothing to wait for
SELECT replicator.wait_for_rule('orders.snap', '1s');
SELECT count(*) FROM replicator.rule_worker_stats();

-- who may do what
CREATE ROLE replicator_regress_rules_user;
CREATE ROLE replicator_regress_rules_admin IN ROLE replicator_admin;
GRANT USAGE ON SCHEMA app TO replicator_regress_rules_admin;
GRANT SELECT ON app.orders TO replicator_regress_rules_admin;
SET ROLE replicator_regress_rules_user;
SELECT replicator.add_rule('by-user', 'tgt', 'snapshot', '{customers}');
SELECT replicator.drop_rule('orders.snap');
SELECT replicator.pause_rule('orders.snap');
SELECT * FROM replicator.rules;
SELECT * FROM replicator.rule_status;
SELECT * FROM replicator.conflicts;
SELECT * FROM replicator.rule_errors;
RESET ROLE;
-- EXECUTE alone is not enough: the function checks again
GRANT EXECUTE ON FUNCTION replicator.add_rule(text, text, text, text[], text, text) TO replicator_regress_rules_user;
SET ROLE replicator_regress_rules_user;
SELECT replicator.add_rule('by-user', 'tgt', 'snapshot', '{customers}');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION replicator.add_rule(text, text, text, text[], text, text) FROM replicator_regress_rules_user;
SELECT name, paused FROM replicator.rules ORDER BY name;
SET ROLE replicator_regress_rules_admin;
-- a table the admin cannot read is in no rule of theirs
-- '*' reaches tables an admin may not read: superusers only
SELECT replicator.add_rule('by-admin-star', 'tgt', 'snapshot', '{*}');
SELECT replicator.add_rule('by-admin', 'tgt', 'snapshot', '{customers}');
SELECT replicator.add_rule('by-admin', 'tgt', 'snapshot', '{app.orders}');
-- created_by: the role that added the rule, not the session's user
RESET ROLE;
SELECT name, created_by FROM replicator.rules ORDER BY name;
SET ROLE replicator_regress_rules_admin;
SELECT rule, mode, table_name, state, target FROM replicator.rule_status ORDER BY rule;
SELECT count(*) FROM replicator.conflicts;
SELECT count(*) FROM replicator.rule_errors;
UPDATE replicator.rules SET paused = true;
DELETE FROM replicator.rules;
INSERT INTO replicator.rules (name, target, mode, tables, conflict_resolution)
  VALUES ('forged', 'tgt', 'snapshot', '{customers}', 'source-wins');
SELECT * FROM replicator.rules;
SELECT replicator.pause_rule('by-admin');
SELECT replicator.drop_rule('by-admin');
RESET ROLE;
SELECT name, paused FROM replicator.rules ORDER BY name;

\c contrib_regression
DROP DATABASE replicator_regress_rules WITH (FORCE);
DROP DATABASE replicator_regress_rules_dst WITH (FORCE);
DROP ROLE replicator_regress_rules_user;
DROP ROLE replicator_regress_rules_admin;
