-- The catalog replicator.replicas changes only through the API: members of
-- replicator_admin have no privileges on the table itself, the API works
-- for them, and it records who added a replica (changed_by), from which
-- the password rule is decided when connecting.
CREATE ROLE replicator_regress_admin2 IN ROLE replicator_admin;
CREATE ROLE replicator_regress_nobody;
SELECT replicator.add_replica('by_super', 'host=/nonexistent dbname=x', enabled => false);

SET ROLE replicator_regress_admin2;
-- the table, directly: refused
SELECT name FROM replicator.replicas;
INSERT INTO replicator.replicas (name, conninfo) VALUES ('direct', 'host=/nonexistent dbname=x');
UPDATE replicator.replicas SET conninfo = 'host=/nonexistent dbname=y';
DELETE FROM replicator.replicas;
-- the API: works
SELECT replicator.add_replica('by_admin', 'host=/nonexistent dbname=x password=pw', enabled => false);
SELECT replicator.pause_replica('by_admin');
SELECT replicator.resume_replica('by_admin');
SELECT replicator.pause_replica('by_admin');
SELECT replicator.wait_for_replica('by_admin', '0s');
SELECT check_name, ok FROM replicator.validate('by_admin');
-- who added them, and what admins read instead of the table
SELECT name, state, conninfo, enabled, destination,
       created_by = current_user AS created_by_me, changed_by = current_user AS changed_by_me,
       changed_by = created_by AS same
  FROM replicator.replica_status ORDER BY name;

-- the caller's search_path does not choose the operators of the API's
-- statements, which run as the extension's owner
RESET ROLE;
CREATE SCHEMA replicator_regress_evil AUTHORIZATION replicator_regress_admin2;
SET ROLE replicator_regress_admin2;
CREATE TABLE replicator_regress_evil.calls (superuser boolean);
CREATE FUNCTION replicator_regress_evil.eq(text, text) RETURNS boolean LANGUAGE sql AS $$
	INSERT INTO replicator_regress_evil.calls
		VALUES (pg_catalog.current_setting('is_superuser') OPERATOR(pg_catalog.=) 'on');
	SELECT $1 OPERATOR(pg_catalog.=) $2
$$;
CREATE OPERATOR replicator_regress_evil.= (LEFTARG = text, RIGHTARG = text,
										   FUNCTION = replicator_regress_evil.eq);
SET search_path = replicator_regress_evil, pg_catalog, public;
SELECT replicator.resume_replica('by_admin');
SELECT replicator.pause_replica('by_admin');
SELECT replicator.wait_for_replica('by_admin', '0s');
SELECT replicator.drop_replica('by_admin');
RESET search_path;
SELECT count(*) AS evil_calls FROM replicator_regress_evil.calls;
RESET ROLE;
DROP SCHEMA replicator_regress_evil CASCADE;

-- a role that is no admin: no table, no API, the view without conninfo
SET ROLE replicator_regress_nobody;
SELECT name FROM replicator.replicas;
SELECT replicator.drop_replica('by_super');
SELECT name, conninfo, (SELECT rolsuper FROM pg_roles WHERE rolname = changed_by) AS changed_by_superuser
  FROM replicator.replica_status;
RESET ROLE;

-- a superuser still reads the table, which has no require_password
SELECT name, changed_by = current_user AS changed_by_me FROM replicator.replicas;
SELECT attname FROM pg_attribute
 WHERE attrelid = 'replicator.replicas'::regclass AND attname = 'require_password';
SELECT grantee, privilege_type FROM information_schema.role_table_grants
 WHERE table_schema = 'replicator' AND table_name = 'replicas' AND grantee <> current_user;
SELECT replicator.drop_replica('by_super');
DROP ROLE replicator_regress_admin2;
DROP ROLE replicator_regress_nobody;
