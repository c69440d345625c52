#!/usr/bin/env bash
# What read_replica() costs per call, for each routing strategy, with three
# streaming slaves (three databases of one plain PostgreSQL server):
#   - inside the server: a PL/pgSQL loop of N calls, in microseconds per
#     call, beside the same loop over pg_options_to_table() (a C function
#     that also materializes one row of two text columns: the floor of a
#     set-returning call), and with min_event_id given;
#   - from clients: pgbench transactions/s of "SELECT * FROM
#     replicator.read_replica()" with 1 and 4 clients, beside "SELECT 1".
# The goal is under 20 us per call.
# Usage: bench/read_replica.sh [calls per loop] [seconds per pgbench run]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

CALLS=${1:-200000}
SECONDS_PER_RUN=${2:-5}
BASE=/tmp/replicator-bench-read
SRC=55681 DST=55682

ensure_packages
build_and_install

cleanup() { for p in $SRC $DST; do stop_pg "$BASE/$p"; done; as_root rm -rf "${scripts:-}"; }
trap cleanup EXIT
start_pg "$BASE/$SRC" $SRC "max_worker_processes = 16"
start_pg "$BASE/$DST" $DST

q() { local port=$1 db=$2; shift 2; as_pg psql -X -q -At -h /tmp -p "$port" -d "$db" -v ON_ERROR_STOP=1 "$@"; }
# poll a query on the source until it returns t (at most a minute)
until_true() {
	for _ in $(seq 600); do
		[ "$(q $SRC postgres -c "$1")" = t ] && return 0
		sleep 0.1
	done
	echo "timed out waiting for: $1" >&2
	exit 1
}

q $SRC postgres -c "CREATE EXTENSION replicator"
q $SRC postgres -c "SELECT replicator.add_replica('m', 'host=/tmp port=$SRC dbname=postgres', role => 'master')" >/dev/null
# the node's row, unless add_replica(role => 'master') made it already
q $SRC postgres -c "INSERT INTO replicator.node_state (name, epoch, master) VALUES ('m', 1, 'm') ON CONFLICT DO NOTHING" \
	-c "SELECT replicator.rescan()" >/dev/null
for d in 1 2 3; do
	q $DST postgres -c "CREATE DATABASE s$d"
	q $SRC postgres -c "SELECT replicator.add_replica('s$d', 'host=/tmp port=$DST dbname=s$d', lag_tolerance => '10 s')" >/dev/null
done
q $SRC postgres -c "SELECT insert_events_array(ARRAY['{\"n\": 1}']::jsonb[])" >/dev/null
until_true "SELECT count(*) = 3 FROM replicator.replica_status WHERE state = 'streaming' AND lag_events = 0"
MAX_ID=$(q $SRC postgres -c "SELECT max(id) FROM events")

q $SRC postgres <<'SQL'
CREATE FUNCTION bench_read(n int, min bigint) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
	FOR i IN 1..n LOOP
		PERFORM * FROM replicator.read_replica(min);
	END LOOP;
	RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
END $$;
CREATE FUNCTION bench_floor(n int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
	FOR i IN 1..n LOOP
		PERFORM * FROM pg_catalog.pg_options_to_table(ARRAY['a=b']);
	END LOOP;
	RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
END $$;
SQL

scripts=$(as_pg mktemp -d /tmp/replicator-bench-scripts.XXXXXX)
echo "SELECT * FROM replicator.read_replica();" | as_pg tee "$scripts/read.sql" >/dev/null
echo "SELECT 1;" | as_pg tee "$scripts/one.sql" >/dev/null
tps() {
	as_pg pgbench -h /tmp -p $SRC -n -M prepared -c "$2" -j "$2" -T "$SECONDS_PER_RUN" \
		-f "$scripts/$1.sql" postgres 2>&1 | sed -nE 's/^tps = ([0-9.]+) .*/\1/p' | cut -d. -f1
}

# 30 calls in one query, in order: what the strategy in effect looks like
SAMPLE="(SELECT r.name, lag(r.name) OVER (ORDER BY g) AS prev FROM generate_series(1, 30) g,
	LATERAL replicator.read_replica(CASE WHEN g > 0 THEN NULL::bigint END) r) c"
declare -A LOOKS=(
	[least-lag]="bool_and(name = 's1')"
	[round-robin]="count(DISTINCT name) = 3 AND NOT bool_or(name = prev)"
	[random]="bool_or(name = prev)")

log "read_replica(): $CALLS calls per loop, pgbench runs of $SECONDS_PER_RUN s, 3 slaves, $(nproc) cores"
printf '\n%-12s %14s %18s %14s %12s %12s\n' strategy "us/call" "us/call (min_id)" "floor us/call" "tps 1 client" "tps 4 clients"
for s in least-lag round-robin random; do
	q $SRC postgres -c "SELECT replicator.set_read_routing('$s')" >/dev/null
	until_true "SELECT ${LOOKS[$s]} FROM $SAMPLE"
	ours=$(q $SRC postgres -c "SELECT round(bench_read($CALLS, NULL)::numeric, 2)")
	with_min=$(q $SRC postgres -c "SELECT round(bench_read($CALLS, $MAX_ID)::numeric, 2)")
	floor=$(q $SRC postgres -c "SELECT round(bench_floor($CALLS)::numeric, 2)")
	printf '%-12s %14s %18s %14s %12s %12s\n' "$s" "$ours" "$with_min" "$floor" "$(tps read 1)" "$(tps read 4)"
done
printf '%-12s %14s %18s %14s %12s %12s\n' "SELECT 1" "" "" "" "$(tps one 1)" "$(tps one 4)"

# with no slave qualifying: the master's row
q $SRC postgres -c "SELECT replicator.set_read_routing('least-lag')" >/dev/null
fallback=$(q $SRC postgres -c "SELECT round(bench_read($CALLS, $MAX_ID + 1)::numeric, 2)")
printf '\nno slave at min_event_id (the master is returned): %s us/call\n' "$fallback"
