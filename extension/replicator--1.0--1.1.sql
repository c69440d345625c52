-- replicator 1.0 -> 1.1: hardening.  The objects after this script are
-- exactly those of a fresh 1.1 install (t/ checks it).

\echo Use "ALTER EXTENSION replicator UPDATE TO '1.1'" to load this file. \quit
