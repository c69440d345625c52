#!/usr/bin/env bash
# What "durable before sent" costs on the live path: the streaming worker
# flushes the source's WAL up to the commit LSN of a batch's asynchronously
# committed events before it sends the batch (worker/stream.c).  The same
# load, small events (10 per call, 2 pgbench clients, unpaced), runs twice
# against one source and one destination: with the inserting sessions at
# synchronous_commit = on (nothing for the worker to flush), then = off.
# For each round it prints, without asserting anything:
#   - events/s inserted;
#   - how far the destination was behind during the load (lag_events sampled
#     every 0.5 s) and when it stopped, and how long after the last event's
#     commit the destination held everything (replicator.wait_for_replica);
#   - WAL flushes: pg_stat_wal.wal_sync of the whole source (all backends and
#     the WAL writer; the worker's own count reaches pg_stat_wal only when it
#     exits), and the worker's own fdatasync/fsync calls counted with
#     perf stat on its pid (where perf can trace syscalls);
#   - commit-to-visible latency p50/p99 at a paced ~200 events/s, one event
#     per call (bench/load_perf_data.sh), per setting.
# Usage: bench/durable.sh [seconds of load per round]   (default 15)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

SECS=${1:-15}
LAT_SECS=10 LAT_RATE=200
BASE=/tmp/replicator-bench-durable
SRC=55601 DST=55602
CONF=("shared_buffers = 256MB" "max_wal_size = 4GB" "checkpoint_timeout = 30min")

ensure_packages
build_and_install

scripts=$(as_pg mktemp -d /tmp/replicator-bench-durable-scripts.XXXXXX)
perf_pid= lag_pid=
cleanup() {
	[ -n "$perf_pid" ] && kill "$perf_pid" 2>/dev/null || true
	[ -n "$lag_pid" ] && kill "$lag_pid" 2>/dev/null || true
	for p in $SRC $DST; do stop_pg "$BASE/$p"; done
	as_root rm -rf "$scripts"
}
trap cleanup EXIT
start_pg "$BASE/$SRC" $SRC "${CONF[@]}"
start_pg "$BASE/$DST" $DST "${CONF[@]}"

q() { local port=$1 db=$2; shift 2; as_pg psql -X -q -At -h /tmp -p "$port" -d "$db" -v ON_ERROR_STOP=1 "$@"; }
maxid() { q $SRC postgres -c "SELECT coalesce(max(id), 0) FROM events"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
wal_sync() { q $SRC postgres -c "SELECT wal_sync FROM pg_stat_wal"; }
worker_pid() { q $SRC postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'replicator streaming'"; }

q $SRC postgres -c "CREATE EXTENSION replicator"
q $DST postgres -c "CREATE DATABASE d"
q $SRC postgres -c "SELECT replicator.add_replica('d', 'host=/tmp port=$DST dbname=d')" >/dev/null
[ "$(q $SRC postgres -c "SELECT replicator.wait_for_replica('d', '1 min')")" = t ]
# arrival times on the destination, for the latency rounds
q $DST d -c "CREATE TABLE arrivals (id bigint, at timestamptz)" \
	-c "CREATE FUNCTION arrived() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN INSERT INTO public.arrivals VALUES (NEW.id, clock_timestamp()); RETURN NULL; END \$\$" \
	-c "CREATE TRIGGER arrived AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION arrived()" \
	-c "ALTER TABLE events ENABLE ALWAYS TRIGGER arrived"

# 10 small events (~40 bytes of JSON each) per call
events=$(for k in $(seq 1 10); do printf "'{\"k\": %d, \"op\": \"tick\", \"v\": \"small\"}'," "$k"; done)
echo "SELECT insert_events_array(ARRAY[${events%,}]::jsonb[]);" | as_pg tee "$scripts/ten.sql" >/dev/null

# Can perf count the worker's syscalls here?  Else its flushes print as n/a.
perf_ok=false
if command -v perf >/dev/null && perf stat -e syscalls:sys_enter_fdatasync -p $$ true >/dev/null 2>&1; then
	perf_ok=true
fi

# p50 and p99 in ms of the events with ids in (from, to]
lat() {
	q $DST d -c "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 1) || ' ' ||
	                    round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::numeric, 1)
	               FROM (SELECT extract(epoch FROM a.at - e.ts) * 1000 AS ms
	                     FROM arrivals a JOIN events e USING (id) WHERE id > $1 AND id <= $2) s"
}

declare -A R
round() {
	local sc=$1 opts="-c synchronous_commit=$1" from to w0 w1 wpid lag catch flushes
	log "synchronous_commit = $sc: ${SECS}s of 2 clients, 10 events per call"
	[ "$(q $SRC postgres -c "SELECT replicator.wait_for_replica('d', '1 min')")" = t ]
	q $SRC postgres -c "CHECKPOINT"
	q $DST postgres -c "CHECKPOINT"
	wpid=$(worker_pid)
	flushes=n/a
	if $perf_ok; then
		perf stat -x, -o "$scripts/perf.$sc" -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync -p "$wpid" &
		perf_pid=$!
	fi
	from=$(maxid)
	w0=$(wal_sync)
	# the destination's lag every half second while the load runs
	(while :; do q $SRC postgres -c "SELECT lag_events FROM replicator.replica_status WHERE name = 'd'"; sleep 0.5; done) >"$scripts/lag.$sc" 2>/dev/null &
	lag_pid=$!
	as_pg env PGOPTIONS="$opts" pgbench -n -h /tmp -p $SRC -c 2 -j 2 -T "$SECS" -f "$scripts/ten.sql" postgres >/dev/null
	kill "$lag_pid"; wait "$lag_pid" 2>/dev/null || true; lag_pid=
	# one session: the lag when the load stopped, then how long after the
	# last event's ts (taken just before its commit) the destination held all
	read -r lag catch < <(q $SRC postgres -F ' ' \
		-c "SELECT lag_events FROM replicator.replica_status WHERE name = 'd'" \
		-c "SELECT replicator.wait_for_replica('d', '5 min')" \
		-c "SELECT round(extract(epoch FROM clock_timestamp() - (SELECT ts FROM events ORDER BY id DESC LIMIT 1)) * 1000)" | tr '\n' ' ' | awk '{ print $1, ($2 == "t" ? $3 : "timeout") }')
	to=$(maxid)
	if $perf_ok; then
		kill -INT "$perf_pid"
		wait "$perf_pid" || true
		perf_pid=
		flushes=$(awk -F, '/sys_enter_f/ { s += $1 } END { print s + 0 }' "$scripts/perf.$sc")
	fi
	# the pgbench sessions have exited: their WAL stats are in pg_stat_wal
	w1=$(wal_sync)
	R[$sc.rate]=$(awk -v n="$((to - from))" -v s="$SECS" 'BEGIN { printf "%.0f", n / s }')
	R[$sc.lag]=$lag
	R[$sc.maxlag]=$(sort -n "$scripts/lag.$sc" | tail -1)
	R[$sc.catch]=$catch
	R[$sc.walsync]=$((w1 - w0))
	R[$sc.worker]=$flushes
	R[$sc.events]=$((to - from))

	log "synchronous_commit = $sc: commit-to-visible latency at ~$LAT_RATE events/s, ${LAT_SECS}s"
	from=$(maxid)
	PGOPTIONS="$opts" "$REPO/bench/load_perf_data.sh" --rate $LAT_RATE --seconds $LAT_SECS --clients 2 --host /tmp --port $SRC >/dev/null 2>&1
	[ "$(q $SRC postgres -c "SELECT replicator.wait_for_replica('d', '1 min')")" = t ]
	to=$(maxid)
	R[$sc.lat]=$(lat "$from" "$to")
}
round on
round off

echo
echo "== live path, one destination; load: ${SECS}s, pgbench -c 2, 10 small events per call"
printf '%-24s %10s %10s\n' "synchronous_commit" on off
printf '%-24s %10s %10s\n' "events inserted" "${R[on.events]}" "${R[off.events]}"
printf '%-24s %10s %10s\n' "events/s inserted" "${R[on.rate]}" "${R[off.rate]}"
printf '%-24s %10s %10s\n' "max lag_events (0.5s)" "${R[on.maxlag]}" "${R[off.maxlag]}"
printf '%-24s %10s %10s\n' "lag_events at stop" "${R[on.lag]}" "${R[off.lag]}"
printf '%-24s %10s %10s\n' "caught up after, ms" "${R[on.catch]}" "${R[off.catch]}"
printf '%-24s %10s %10s\n' "source wal_sync" "${R[on.walsync]}" "${R[off.walsync]}"
printf '%-24s %10s %10s\n' "worker fdatasync+fsync" "${R[on.worker]}" "${R[off.worker]}"
read -r on50 on99 <<<"${R[on.lat]}"
read -r off50 off99 <<<"${R[off.lat]}"
printf '%-24s %10s %10s\n' "latency p50 ms (paced)" "$on50" "$off50"
printf '%-24s %10s %10s\n' "latency p99 ms (paced)" "$on99" "$off99"
echo "(max lag_events: largest of replica_status.lag_events sampled every 0.5s during the load;"
echo " caught up after: from the last event's ts (just before its commit) to wait_for_replica's return,"
echo "  an upper bound: it includes pgbench's exit and a psql start, and wait_for_replica polls every 10 ms;"
echo " source wal_sync: pg_stat_wal of the whole source during the load and catch-up, without the worker's own;"
echo " worker fdatasync+fsync: its syscalls over the same span, by perf stat -p;"
echo " latency: bench/load_perf_data.sh at ~$LAT_RATE events/s, one event per call, ts to arrival on the destination)"
