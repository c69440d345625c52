#!/usr/bin/env bash
# Events/s through insert_events for 1, 4 and 16 clients and 1, 100 and 1000
# events per call, beside plain INSERTs into an identical table whose ids come
# from a sequence (the ceiling: no id lock, no guard, no notify trigger).
# Also 1000 events per call with the notify trigger disabled, to show what
# per-row notification costs.  Usage: bench/insert_events.sh [seconds per run]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

SECONDS_PER_RUN=${1:-5}
DIR=/tmp/replicator-bench-insert
PORT=55432

ensure_packages
build_and_install
start_pg "$DIR" "$PORT" "shared_buffers = 1GB" "max_wal_size = 8GB" "checkpoint_timeout = 30min"
trap 'stop_pg "$DIR"' EXIT

psql_b() { as_pg psql -X -q -h /tmp -p "$PORT" -d postgres -v ON_ERROR_STOP=1 "$@"; }

# A realistic event of about 500 bytes, the same expression for both sides.
EVENT="jsonb_build_object('entityName', 'Person', 'entityId', md5(random()::text), 'operation', 'updated', 'propertyName', 'address', 'value', jsonb_build_object('street', repeat('s', 40), 'city', 'Springfield', 'zip', '12345', 'phone', '+1 555 0100', 'email', md5(random()::text) || '@example.com'), 'metadata', jsonb_build_object('command', 'ChangeAddress', 'initiator', md5(random()::text), 'note', repeat('n', 180)), 'k', k)"

scripts=$(as_pg mktemp -d /tmp/replicator-bench-scripts.XXXXXX)
echo "SELECT insert_events_array(ARRAY(SELECT $EVENT FROM generate_series(1, :n) k));" | as_pg tee "$scripts/replicator.sql" >/dev/null
echo "INSERT INTO baseline (ts, event) SELECT now(), $EVENT FROM generate_series(1, :n) k;" | as_pg tee "$scripts/baseline.sql" >/dev/null

reset_tables() {
	psql_b <<'SQL'
DROP EXTENSION IF EXISTS replicator;
CREATE EXTENSION replicator;
DROP TABLE IF EXISTS baseline;
DROP SEQUENCE IF EXISTS baseline_id;
CREATE SEQUENCE baseline_id;
CREATE TABLE baseline (LIKE events INCLUDING INDEXES);
ALTER TABLE baseline ALTER id SET DEFAULT nextval('baseline_id');
CHECKPOINT;
SQL
}

# events/s for one pgbench run
run() {
	local script=$1 clients=$2 n=$3
	local tps
	tps=$(as_pg pgbench -h /tmp -p "$PORT" -n -c "$clients" -j "$((clients < 2 ? clients : 2))" \
		-T "$SECONDS_PER_RUN" -D n="$n" -f "$scripts/$script.sql" postgres 2>&1 |
		sed -nE 's/^tps = ([0-9.]+) .*/\1/p')
	awk -v t="$tps" -v n="$n" 'BEGIN { printf "%.0f", t * n }'
}

printf '\n%-8s %-12s %16s %16s %7s\n' clients events/call "replicator ev/s" "baseline ev/s" ratio
for n in 1 100 1000; do
	for c in 1 4 16; do
		reset_tables
		ours=$(run replicator "$c" "$n")
		base=$(run baseline "$c" "$n")
		printf '%-8s %-12s %16s %16s %7s\n' "$c" "$n" "$ours" "$base" \
			"$(awk -v a="$ours" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
	done
done

reset_tables
psql_b -c 'ALTER TABLE events DISABLE TRIGGER notify_insert'
quiet=$(run replicator 1 1000)
reset_tables
loud=$(run replicator 1 1000)
printf '\nper-row notify at 1000 events/call, 1 client: %s ev/s with, %s ev/s without (%s)\n' \
	"$loud" "$quiet" "$(awk -v a="$loud" -v b="$quiet" 'BEGIN { printf "%.2f", a / b }')"
as_root rm -rf "$scripts"
