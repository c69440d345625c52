-- replicator 1.0 -> 1.1: hardening.  The objects after this script are
-- exactly those of a fresh 1.1 install (t/ checks it).

\echo Use "ALTER EXTENSION replicator UPDATE TO '1.1'" to load this file. \quit

-- One history: a replica dropped and added again in one transaction is a
-- new one to its running worker, which starts over with full checks.
ALTER TABLE replicator.replicas
	ADD COLUMN incarnation uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid();
