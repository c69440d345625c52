-- validate_rule(): a rule's schema compatibility report, against a target
-- database of this server.  Snapshot rules only: wal_level is not logical
-- here, so the cdc-only findings are left to the TAP tests.
CREATE DATABASE replicator_regress_rule_src;
CREATE DATABASE replicator_regress_rule_tgt;
SELECT format('host=%s port=%s dbname=replicator_regress_rule_tgt',
              current_setting('unix_socket_directories'), current_setting('port')) AS tgt \gset

-- the target's tables, each unlike the source's in its own way
\c replicator_regress_rule_tgt
CREATE SCHEMA app;
CREATE TABLE app.fits (id int8 PRIMARY KEY, name varchar(50), qty int4);
CREATE TABLE app.narrow (id int8 PRIMARY KEY, name varchar(5), n int4);
CREATE TABLE app.same (id int8 PRIMARY KEY, a text, b numeric(10,2), c timestamptz);
CREATE TABLE app.nokey (a int, b text);
CREATE TABLE app.cols (id int PRIMARY KEY, extra text NOT NULL, dflt text NOT NULL DEFAULT 'x',
                       code int CONSTRAINT cols_code_key UNIQUE, note text NOT NULL DEFAULT '');
CREATE TABLE app."We""ird" ("Key" text PRIMARY KEY, v int4);
CREATE TABLE app.types (id int PRIMARY KEY, t int, j int, ts timestamp, n numeric(4,1),
                        g int GENERATED ALWAYS AS (id * 2) STORED, g2 int, v text NOT NULL);
CREATE TABLE app.stamped (id int PRIMARY KEY);

\c replicator_regress_rule_src
SET client_min_messages = warning;
CREATE EXTENSION replicator;
RESET client_min_messages;
SELECT replicator.add_replica('tgt', :'tgt', stream_events => false);
CREATE SCHEMA app;
-- narrower on the target, and every row fits: warnings
CREATE TABLE app.fits (id int8 PRIMARY KEY, name varchar(200), qty int8);
INSERT INTO app.fits SELECT i, repeat('x', i), i FROM generate_series(1, 50) i;
-- narrower on the target, and some rows do not fit: errors naming them
CREATE TABLE app.narrow (id int8 PRIMARY KEY, name varchar(200), n int8);
INSERT INTO app.narrow SELECT i, repeat('y', i % 9), CASE WHEN i IN (4, 12) THEN 3000000000 ELSE i END
  FROM generate_series(1, 20) i;
-- the same on both sides: nothing to say
CREATE TABLE app.same (id int8 PRIMARY KEY, a text, b numeric(10,2), c timestamptz);
INSERT INTO app.same VALUES (1, 'a', 1.5, now());
CREATE TABLE app.nokey (a int, b text);
CREATE TABLE app.cols (id int PRIMARY KEY, only_here text, code int, note text);
INSERT INTO app.cols VALUES (1, 'x', 1, NULL), (2, 'y', 2, 'z');
-- names that need quotes, on both sides; a text key
CREATE TABLE app."We""ird" ("Key" text PRIMARY KEY, v int8);
INSERT INTO app."We""ird" VALUES ('a b', 3000000000), ('c', 1);
CREATE TABLE app.absent (id int PRIMARY KEY);
CREATE TABLE app.types (id int PRIMARY KEY, t text, j jsonb, ts timestamptz, n numeric(10,3), g int,
                        g2 int GENERATED ALWAYS AS (id + 1) STORED, v text NOT NULL);
INSERT INTO app.types VALUES (1, 'a', '{}', now(), 123.4, 1, DEFAULT, 'v'), (2, 'b', '{}', now(), 1.25, 2, DEFAULT, 'v');
CREATE TABLE app.gone (id int PRIMARY KEY);

SELECT replicator.add_rule('r1', 'tgt', 'snapshot',
  ARRAY['app.fits', 'app.narrow', 'app.same', 'app.nokey', 'app.cols', 'app.absent', 'app.types',
        'app.gone', 'app."We""ird"']);
DROP TABLE app.gone;
SELECT table_name, column_name, severity, issue FROM replicator.validate_rule('r1');

-- the details say which rows do not fit, and what to do
SELECT table_name, column_name, severity, detail FROM replicator.validate_rule('r1')
 WHERE table_name IN ('app.fits', 'app.narrow') OR column_name = 'n' ORDER BY 1 COLLATE "C", 2 COLLATE "C", 4 COLLATE "C";
SELECT table_name, detail FROM replicator.validate_rule('r1')
 WHERE column_name IS NULL OR column_name IN ('extra', 'only_here', 'code', 'note', 'v') ORDER BY 1 COLLATE "C", 2 COLLATE "C";

-- fixed on the source: the errors go, or turn into warnings
UPDATE app.narrow SET name = left(name, 5), n = 4 WHERE length(name) > 5 OR n > 2147483647;
SELECT column_name, severity, issue FROM replicator.validate_rule('r1') WHERE table_name = 'app.narrow';

-- a rule with nothing to report returns no rows
SELECT replicator.add_rule('clean', 'tgt', 'snapshot', '{app.same}');
SELECT * FROM replicator.validate_rule('clean');

-- last-write-wins needs its timestamp column on both sides
CREATE TABLE app.stamped (id int PRIMARY KEY, changed_at timestamptz);
SELECT replicator.add_rule('lww', 'tgt', 'snapshot', '{app.stamped}',
  conflict_resolution => 'last-write-wins', timestamp_column => 'changed_at');
SELECT table_name, column_name, severity, issue FROM replicator.validate_rule('lww');

-- errors: no such rule, an unreachable target (its password never shows),
-- a caller who is no admin
SELECT * FROM replicator.validate_rule('nosuch');
SELECT replicator.add_replica('down', 'host=/nonexistent port=1 password=s3cret dbname=x', stream_events => false);
SELECT replicator.add_rule('r_down', 'down', 'snapshot', '{app.same}');
SELECT * FROM replicator.validate_rule('r_down');
CREATE ROLE replicator_regress_rule_user;
SET ROLE replicator_regress_rule_user;
SELECT * FROM replicator.validate_rule('r1');
RESET ROLE;
DROP ROLE replicator_regress_rule_user;
-- an admin needs no privilege on the tables (only to see their schema):
-- the report reads them as the extension's owner
CREATE ROLE replicator_regress_rule_admin IN ROLE replicator_admin;
GRANT USAGE ON SCHEMA app TO replicator_regress_rule_admin;
SET ROLE replicator_regress_rule_admin;
SELECT * FROM app.narrow;
SELECT severity, count(*) FROM replicator.validate_rule('r1') GROUP BY 1 ORDER BY 1;
RESET ROLE;
REVOKE USAGE ON SCHEMA app FROM replicator_regress_rule_admin;
DROP ROLE replicator_regress_rule_admin;

\c contrib_regression
DROP DATABASE replicator_regress_rule_src WITH (FORCE);
DROP DATABASE replicator_regress_rule_tgt WITH (FORCE);
