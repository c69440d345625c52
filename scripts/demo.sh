#!/usr/bin/env bash
# The demo command: installs what is missing, builds, installs, then starts a
# source server and two destination servers on this machine, inserts events
# and shows them streaming (replica_status as they catch up), a destination
# crash and its recovery, the copies compared, then a replica topology (a
# slave with the extension, read routing, a switchover), then replication
# rules (any tables, cdc and snapshot, a conflict).  The servers are stopped
# at the end; KEEP=1 leaves them running (ports 5499, 5500, 5501).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BASE=/tmp/replicator-demo
SRC=5499 DST1=5500 DST2=5501

ensure_packages
build_and_install

log "starting a source (port $SRC) and two destinations (ports $DST1, $DST2) in $BASE"
mapfile -t logical < <(logical_settings)
start_pg "$BASE/source" $SRC "${logical[@]}"
start_pg "$BASE/dest1" $DST1
start_pg "$BASE/dest2" $DST2
stop_all() {
	log "stopping the demo servers"
	for s in source dest1 dest2; do stop_pg "$BASE/$s"; done
}
[ "${KEEP:-0}" = 1 ] || trap stop_all EXIT

src() { as_pg psql -X -h /tmp -p $SRC -d postgres --echo-queries "$@"; }
quiet() { as_pg psql -X -q -At -h /tmp -p "$1" -d postgres -c "$2"; }
status() {
	as_pg psql -X -q -h /tmp -p $SRC -d postgres -c \
		"SELECT name, state, position, source_max_id, lag_events, lag, events_sent, last_error FROM replicator.replica_status ORDER BY name"
}

log "the event source"
src -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION replicator;
-- the safe form: one event per array element; returns the ids it assigned
SELECT * FROM insert_events_array(ARRAY[
  '{"entityName": "Person", "entityId": "p1", "operation": "created"}',
  '{"entityName": "Person", "entityId": "p1", "operation": "updated", "propertyName": "name", "value": "Ada"}'
]::jsonb[]);
-- slate's form, as slate's clients send it
SELECT insert_events($$($1[1], $2, '{"entityName": "Person", "entityId": "p2", "operation": "created"}')$$);
SELECT id, ts, event FROM events ORDER BY id;
SQL

log "events are immutable and ids gapless"
src <<'SQL'
UPDATE events SET event = '{}' WHERE id = 1;
BEGIN;
SELECT last_id FROM insert_events_array(ARRAY['{"rolled": "back"}']::jsonb[]);
ROLLBACK;
SELECT last_id FROM insert_events_array(ARRAY['{"after": "rollback"}']::jsonb[]);
SQL

log "two destinations; each worker creates the events table there"
src -v ON_ERROR_STOP=1 <<SQL
SELECT replicator.add_replica('reporting', 'host=/tmp port=$DST1 dbname=postgres');
SELECT replicator.add_replica('failover', 'host=127.0.0.1 port=$DST2 dbname=postgres');
SQL

log "100,000 more events in 100 calls; replica_status while they catch up"
quiet $SRC "SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('entityName', 'Person', 'entityId', 'p' || c, 'operation', 'updated', 'k', k) FROM generate_series(1, 1000) k)) FROM generate_series(1, 100) c" >/dev/null
for _ in 1 2 3; do status; sleep 0.2; done
quiet $SRC "SELECT replicator.wait_for_replica('reporting', '2 min') AND replicator.wait_for_replica('failover', '2 min')" >/dev/null
status

log "the failover destination crashes (immediate stop) while events keep coming"
as_pg pg_ctl -D "$BASE/dest2" -m immediate -w stop >/dev/null
quiet $SRC "SELECT insert_events_array(ARRAY(SELECT jsonb_build_object('during', 'outage', 'k', k) FROM generate_series(1, 5000) k))" >/dev/null
quiet $SRC "SELECT replicator.wait_for_replica('reporting', '1 min')" >/dev/null
status
log "it comes back and catches up by itself"
as_pg pg_ctl -D "$BASE/dest2" -l "$BASE/dest2/server.log" -w start >/dev/null
quiet $SRC "SELECT replicator.wait_for_replica('failover', '2 min')" >/dev/null
status

log "the copies, compared row by row (id, ts to the microsecond, event)"
digest="SELECT count(*) || ' events, digest ' || md5(string_agg(id || ' ' || (extract(epoch FROM ts) * 1000000)::bigint || ' ' || event::text, ',' ORDER BY id)) FROM events"
echo "source:    $(quiet $SRC "$digest")"
echo "reporting: $(quiet $DST1 "$digest")"
echo "failover:  $(quiet $DST2 "$digest")"

log "a replica topology: the source names itself master, a database with the extension becomes its slave"
quiet $DST2 "CREATE DATABASE node_b" >/dev/null
as_pg psql -X -q -h /tmp -p $DST2 -d node_b -c "CREATE EXTENSION replicator"
src -v ON_ERROR_STOP=1 <<SQL
SELECT replicator.add_replica('m', 'host=/tmp port=$SRC dbname=postgres', role => 'master');
SELECT replicator.add_replica('b', 'host=/tmp port=$DST2 dbname=node_b', role => 'slave', lag_tolerance => '5 s');
SELECT replicator.wait_for_replica('b', '2 min');
SQL
# the other workers reconnect too: this database's epoch is new
for _ in $(seq 100); do
	[ "$(quiet $SRC "SELECT count(*) FROM replicator.replica_status WHERE role = 'slave' AND state <> 'streaming'")" = 0 ] && break
	sleep 0.1
done
src -c "SELECT name, role, state, lag_events, stale, tables FROM replicator.replica_status ORDER BY name" \
	-c "SELECT * FROM replicator.read_replica()"
node_b() { as_pg psql -X -h /tmp -p $DST2 -d node_b --echo-queries "$@"; }
log "on the slave: where the master is, and a write refused"
node_b <<'SQL'
SELECT * FROM replicator.node();
SELECT insert_events_array(ARRAY['{"on": "the slave"}']::jsonb[]);
SQL
log "switchover: b becomes master at epoch 2, the source its slave; nothing acknowledged is lost"
src -v ON_ERROR_STOP=1 -c "SELECT * FROM replicator.promote('b')"
node_b <<'SQL'
SELECT * FROM replicator.node();
SELECT last_id FROM insert_events_array(ARRAY['{"on": "the new master"}']::jsonb[]);
SELECT epoch, master, first_id, how FROM replicator.epochs ORDER BY epoch;
SQL
src <<'SQL'
SELECT * FROM replicator.node();
SELECT insert_events_array(ARRAY['{"on": "the old master"}']::jsonb[]);
SQL
as_pg psql -X -q -At -h /tmp -p $DST2 -d node_b -c "SELECT replicator.wait_for_replica('m', '1 min')" >/dev/null
echo "node_b:    $(as_pg psql -X -q -At -h /tmp -p $DST2 -d node_b -c "$digest")"
echo "source:    $(quiet $SRC "$digest")"

log "replication rules: any tables of a database (shop, on the source's server) to a database registered only as a rule target"
quiet $SRC "CREATE DATABASE shop" >/dev/null
quiet $DST1 "CREATE DATABASE reports" >/dev/null
shop() { as_pg psql -X -h /tmp -p $SRC -d shop --echo-queries "$@"; }
tables="CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer int, total numeric(10,2), placed timestamptz DEFAULT now());"
as_pg psql -X -q -h /tmp -p $DST1 -d reports -c "$tables"
shop -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION replicator;
$tables
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 100) g;
INSERT INTO orders (id, customer, total) SELECT g, 1 + g % 100, g * 1.25 FROM generate_series(1, 5000) g;
SELECT replicator.add_replica('reports', 'host=/tmp port=$DST1 dbname=reports', stream_events => false);
SQL
shop -v ON_ERROR_STOP=1 <<SQL
SELECT replicator.add_rule('shop', 'reports', 'cdc', '{public.customers, public.orders}');
SELECT * FROM replicator.validate_rule('shop');
SELECT replicator.wait_for_rule('shop', '1 min');
UPDATE orders SET total = total * 2 WHERE id <= 100;
DELETE FROM orders WHERE id > 4900;
INSERT INTO customers VALUES (101, 'a new customer');
SELECT replicator.wait_for_rule('shop', '1 min');
SELECT table_name, state, lag_changes, lag, inserted, updated, deleted, conflicts FROM replicator.rule_status;
SQL
shop_digest="SELECT (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM customers c) || ' ' || (SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o)"
echo "shop:    $(as_pg psql -X -q -At -h /tmp -p $SRC -d shop -c "$shop_digest")"
echo "reports: $(as_pg psql -X -q -At -h /tmp -p $DST1 -d reports -c "$shop_digest")"
log "a conflict: the target changed a customer, the source changes it too; source-wins, recorded"
as_pg psql -X -q -h /tmp -p $DST1 -d reports -c "INSERT INTO customers VALUES (102, 'made on the target')"
shop -v ON_ERROR_STOP=1 <<SQL
INSERT INTO customers VALUES (102, 'made on the source');
SELECT replicator.wait_for_rule('shop', '1 min');
SELECT table_name, key, kind, resolution, target_row FROM replicator.conflicts;
SQL
log "a snapshot rule: sync() mirrors (a row lost and one made up on the target), and a second sync moves nothing"
as_pg psql -X -q -h /tmp -p $DST1 -d reports -c "DELETE FROM orders WHERE id = 1; INSERT INTO orders (id) VALUES (999999)"
shop -v ON_ERROR_STOP=1 <<SQL
SELECT replicator.pause_rule('shop');
SELECT replicator.add_rule('nightly', 'reports', 'snapshot', '{public.orders}');
SELECT * FROM replicator.sync('nightly');
SELECT * FROM replicator.sync('nightly');
SQL

log "the workers, as pg_stat_activity shows them"
src -c "SELECT pid, backend_type, application_name FROM pg_stat_activity WHERE backend_type LIKE 'replicator%' ORDER BY 2, 3"
[ "${KEEP:-0}" = 1 ] && log "servers left running: psql -h /tmp -p $SRC postgres (destinations: ports $DST1, $DST2)"
exit 0
