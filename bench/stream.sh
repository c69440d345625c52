#!/usr/bin/env bash
# Streaming benchmark, one run on this machine, four local servers:
#   - catch-up of 1,000,000 person events (~540 bytes of JSON each, made by
#     bench/load_person_data.sh) to one destination and to three;
#   - on the same data, the physical limit: a raw binary COPY TO | COPY FROM
#     pipe between the same servers;
#   - built-in logical replication catching up the same inserts from its slot
#     (subscription disabled while loading, then enabled);
#   - commit-to-visible latency p50/p99 at about 500 events/s of small events
#     (bench/load_perf_data.sh), for replicator and for logical replication,
#     each alone on the machine, three rounds each in the order A B B A A B,
#     every round after a checkpoint.
# For each catch-up it also prints how busy the machine's cores were.
# Finally replicator.diff checks each destination against the source.
# Usage: bench/stream.sh [events]   (default 1000000)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

EVENTS=${1:-1000000}
CALL=1000
BASE=/tmp/replicator-bench-stream
SRC=55501 D1=55502 D2=55503 D3=55504
CONF=("shared_buffers = 1GB" "max_wal_size = 8GB" "checkpoint_timeout = 30min")

ensure_packages
build_and_install

cleanup() { for p in $SRC $D1 $D2 $D3; do stop_pg "$BASE/$p"; done; }
trap cleanup EXIT
start_pg "$BASE/$SRC" $SRC "${CONF[@]}" "wal_level = logical" "max_worker_processes = 16"
for p in $D1 $D2 $D3; do start_pg "$BASE/$p" "$p" "${CONF[@]}"; done

q() { local port=$1 db=$2; shift 2; as_pg psql -X -q -At -h /tmp -p "$port" -d "$db" -v ON_ERROR_STOP=1 "$@"; }
maxid() { q $SRC postgres -c "SELECT max(id) FROM events"; }
now() { date +%s.%N; }
# CPU seconds the whole machine spent busy so far (all servers and clients)
busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }
# share of the machine's cores busy between two busy() readings over seconds
used() { awk -v a="$1" -v b="$2" -v s="$3" -v n="$(nproc)" 'BEGIN { printf "%.0f%%", 100 * (b - a) / (s * n) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
conn() { echo "host=/tmp port=$1 dbname=$2"; }

SLATE_TABLE="CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, event jsonb NOT NULL);
CREATE INDEX ON events (ts);
CREATE INDEX ON events ((event #>> '{entityName}'));
CREATE INDEX ON events ((event #>> '{operation}'));
CREATE INDEX ON events ((event #>> '{propertyName}'));
CREATE INDEX ON events ((event #>> '{entityId}'));
CREATE INDEX ON events ((event #>> '{metadata,command}'));"

q $SRC postgres -c "CREATE EXTENSION replicator" -c "CREATE PUBLICATION bench FOR TABLE events"
for db in one three lr raw; do q $D1 postgres -c "CREATE DATABASE $db"; done
for p in $D2 $D3; do q "$p" postgres -c "CREATE DATABASE three"; done
q $D1 lr -c "$SLATE_TABLE" -c "CREATE SUBSCRIPTION bench CONNECTION '$(conn $SRC postgres)' PUBLICATION bench WITH (copy_data = false)" -c "ALTER SUBSCRIPTION bench DISABLE"
q $D1 raw -c "$SLATE_TABLE"

log "loading $EVENTS person events in calls of $CALL (bench/load_person_data.sh)"
t0=$(now)
"$REPO/bench/load_person_data.sh" --clients 1 --events-per-call $CALL --total "$EVENTS" --host /tmp --port $SRC
load_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
size=$(q $SRC postgres -c "SELECT pg_size_pretty(sum(pg_column_size(event))) FROM events")
echo "loaded in ${load_s}s ($size of JSON)"
q $SRC postgres -c "CHECKPOINT"

log "replicator: catch-up to one destination"
c0=$(busy)
t0=$(now)
q $SRC postgres -c "SELECT replicator.add_replica('one', '$(conn $D1 one)')"
[ "$(q $SRC postgres -c "SELECT replicator.wait_for_replica('one', '30 min')")" = t ]
one_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
one_cpu=$(used "$c0" "$(busy)" "$one_s")
q $SRC postgres -c "SELECT replicator.pause_replica('one')"

log "raw COPY pipe (binary) between the same servers"
c0=$(busy)
t0=$(now)
as_pg psql -X -h /tmp -p $SRC -d postgres -c "COPY (SELECT id, ts, event FROM events ORDER BY id) TO STDOUT (FORMAT binary)" |
	as_pg psql -X -q -h /tmp -p $D1 -d raw -c "COPY events FROM STDIN (FORMAT binary)"
raw_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
raw_cpu=$(used "$c0" "$(busy)" "$raw_s")

log "built-in logical replication: catch-up from its slot"
c0=$(busy)
t0=$(now)
q $D1 lr -c "ALTER SUBSCRIPTION bench ENABLE"
until [ "$(q $D1 lr -c "SELECT coalesce(max(id), 0) FROM events")" -ge "$EVENTS" ]; do sleep 0.05; done
lr_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
lr_cpu=$(used "$c0" "$(busy)" "$lr_s")

log "replicator: catch-up to three destinations (three servers)"
c0=$(busy)
t0=$(now)
q $SRC postgres -c "SELECT replicator.add_replica('three_1', '$(conn $D1 three)')" \
	-c "SELECT replicator.add_replica('three_2', '$(conn $D2 three)')" \
	-c "SELECT replicator.add_replica('three_3', '$(conn $D3 three)')"
for r in three_1 three_2 three_3; do
	[ "$(q $SRC postgres -c "SELECT replicator.wait_for_replica('$r', '30 min')")" = t ]
done
three_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
three_cpu=$(used "$c0" "$(busy)" "$three_s")
for r in three_1 three_2 three_3; do q $SRC postgres -c "SELECT replicator.pause_replica('$r')"; done

log "commit-to-visible latency at ~500 events/s: replicator and logical replication, each alone, three rounds each in the order A B B A A B"
q $SRC postgres -c "SELECT replicator.resume_replica('one')"
[ "$(q $SRC postgres -c "SELECT replicator.wait_for_replica('one', '30 min')")" = t ]
until [ "$(q $D1 lr -c "SELECT coalesce(max(id), 0) FROM events")" -ge "$(maxid)" ]; do sleep 0.05; done
for db in one lr; do
	q $D1 $db -c "CREATE TABLE arrivals (id bigint, at timestamptz)" \
		-c "CREATE FUNCTION arrived() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN INSERT INTO public.arrivals VALUES (NEW.id, clock_timestamp()); RETURN NULL; END \$\$" \
		-c "CREATE TRIGGER arrived AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION arrived()" \
		-c "ALTER TABLE events ENABLE ALWAYS TRIGGER arrived"
done
# The catch-ups above leave work behind (autovacuum of a million new rows,
# dirty buffers): do it now, so that neither system's rounds pay for it.
q $SRC postgres -c "VACUUM (ANALYZE) events"
for db in one lr three raw; do q $D1 $db -c "VACUUM (ANALYZE) events"; done
for p in $D2 $D3; do q "$p" three -c "VACUUM (ANALYZE) events"; done
# D1 holds four copies of the table, more than its shared_buffers: each
# round starts from the same footing, its destination's indexes loaded into
# shared buffers, after a checkpoint everywhere.
for db in one lr; do q $D1 $db -c "CREATE EXTENSION pg_prewarm"; done
quiesce() {
	q $D1 "$1" -c "SELECT sum(pg_prewarm(indexrelid)) FROM pg_index WHERE indrelid = 'events'::regclass" >/dev/null
	for p in $SRC $D1 $D2 $D3; do q "$p" postgres -c "CHECKPOINT"; done
}
perf_load() { "$REPO/bench/load_perf_data.sh" --rate 500 --seconds 15 --clients 2 --host /tmp --port $SRC >/dev/null; }
lr_max() { q $D1 lr -c "SELECT coalesce(max(id), 0) FROM events"; }
# CPU seconds (user + system) the processes with these pids have used so far
pcpu() { for p in "$@"; do cat "/proc/$p/stat"; done | awk -v hz="$(getconf CLK_TCK)" '{ s += $14 + $15 } END { printf "%.2f", s / hz }'; }
pids() { q "$1" postgres -c "$2" | tr '\n' ' '; }
# CPU of each side during the measured rounds, and their events
ours_src_cpu=0 ours_dst_cpu=0 ours_n=0 lr_src_cpu=0 lr_dst_cpu=0 lr_n=0
add() { awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN { printf "%.2f", a + c - b }'; }
# p50 and p99 in ms of the events that arrived in db, of the ids in where
lat() {
	q $D1 "$1" -c "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 2) || ' ' ||
	                    round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::numeric, 2)
	               FROM (SELECT extract(epoch FROM a.at - e.ts) * 1000 AS ms
	                     FROM arrivals a JOIN events e USING (id) WHERE $2) s"
}
# Each system is measured alone: the other is stopped meanwhile and catches
# up afterwards, outside the measured ids.  A B B A A B cancels any drift
# of the machine over the rounds.
q $SRC postgres -c "SELECT replicator.pause_replica('one')" >/dev/null
q $D1 lr -c "ALTER SUBSCRIPTION bench DISABLE"
ours_ids=false lr_ids=false
ours_round() {
	q $SRC postgres -c "SELECT replicator.resume_replica('one')" >/dev/null
	[ "$(q $SRC postgres -c "SELECT replicator.wait_for_replica('one', '5 min')")" = t ]
	quiesce one
	local from to src dst s0 d0
	src=$(pids $SRC "SELECT pid FROM pg_stat_activity WHERE backend_type = 'replicator streaming'")
	dst=$(pids $D1 "SELECT pid FROM pg_stat_activity WHERE application_name = 'replicator:postgres:one'")
	s0=$(pcpu $src) d0=$(pcpu $dst)
	from=$(maxid)
	perf_load
	[ "$(q $SRC postgres -c "SELECT replicator.wait_for_replica('one', '5 min')")" = t ]
	to=$(maxid)
	ours_src_cpu=$(add "$ours_src_cpu" "$s0" "$(pcpu $src)")
	ours_dst_cpu=$(add "$ours_dst_cpu" "$d0" "$(pcpu $dst)")
	ours_n=$((ours_n + to - from))
	ours_ids="$ours_ids OR id > $from AND id <= $to"
	echo "round $1, replicator:          p50 p99 ms $(lat one "id > $from AND id <= $to")"
	q $SRC postgres -c "SELECT replicator.pause_replica('one')" >/dev/null
}
lr_round() {
	q $D1 lr -c "ALTER SUBSCRIPTION bench ENABLE"
	until [ "$(lr_max)" -ge "$(maxid)" ]; do sleep 0.05; done
	quiesce lr
	local from to src dst s0 d0
	src=$(pids $SRC "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender'")
	dst=$(pids $D1 "SELECT pid FROM pg_stat_activity WHERE backend_type = 'logical replication worker'")
	s0=$(pcpu $src) d0=$(pcpu $dst)
	from=$(maxid)
	perf_load
	to=$(maxid)
	until [ "$(lr_max)" -ge "$to" ]; do sleep 0.05; done
	lr_src_cpu=$(add "$lr_src_cpu" "$s0" "$(pcpu $src)")
	lr_dst_cpu=$(add "$lr_dst_cpu" "$d0" "$(pcpu $dst)")
	lr_n=$((lr_n + to - from))
	lr_ids="$lr_ids OR id > $from AND id <= $to"
	echo "round $1, logical replication: p50 p99 ms $(lat lr "id > $from AND id <= $to")"
	q $D1 lr -c "ALTER SUBSCRIPTION bench DISABLE"
}
ours_round 1; lr_round 2; lr_round 3; ours_round 4; ours_round 5; lr_round 6
# ts is taken just before the inserting transaction commits: the latency
# includes that commit's flush, the same for both.
read -r ours_p50 ours_p99 <<<"$(lat one "$ours_ids")"
read -r lr_p50 lr_p99 <<<"$(lat lr "$lr_ids")"

log "replicator.diff: every destination equals the source"
for r in one three_1 three_2 three_3; do
	q $SRC postgres -c "SELECT replicator.resume_replica('$r')" >/dev/null
	[ "$(q $SRC postgres -c "SELECT replicator.wait_for_replica('$r', '30 min')")" = t ]
	echo "$r: $(q $SRC postgres -c "SELECT count(*) FROM replicator.diff('$r', validate => true)" 2>/dev/null) differences"
done

rate() { awk -v n="$EVENTS" -v s="$1" 'BEGIN { printf "%.0f", n / s }'; }
echo
echo "== $EVENTS events, $size of JSON; load took ${load_s}s"
printf '%-46s %9s %12s %10s\n' "" seconds events/s "CPU busy"
printf '%-46s %9s %12s %10s\n' "replicator catch-up, 1 destination" "$one_s" "$(rate "$one_s")" "$one_cpu"
printf '%-46s %9s %12s %10s\n' "replicator catch-up, 3 destinations" "$three_s" "$(rate "$three_s")" "$three_cpu"
printf '%-46s %9s %12s %10s\n' "raw binary COPY | COPY pipe" "$raw_s" "$(rate "$raw_s")" "$raw_cpu"
printf '%-46s %9s %12s %10s\n' "logical replication catch-up" "$lr_s" "$(rate "$lr_s")" "$lr_cpu"
echo "(CPU busy: share of the machine's $(nproc) cores in use during the run, all servers and clients)"
echo
echo "replicator / raw COPY pipe (speed):        $(ratio "$raw_s" "$one_s")   (goal >= 0.8)"
echo "replicator / logical replication (speed):  $(ratio "$lr_s" "$one_s")   (goal >= 2)"
echo "3 destinations / 1 destination (time):     $(ratio "$three_s" "$one_s")   (goal <= 1.5)"
echo
printf '%-46s %9s %9s\n' "commit-to-visible latency at ~500 events/s" "p50 ms" "p99 ms"
printf '%-46s %9s %9s\n' "replicator" "$ours_p50" "$ours_p99"
printf '%-46s %9s %9s\n' "logical replication" "$lr_p50" "$lr_p99"
echo
us() { awk -v c="$1" -v n="$2" 'BEGIN { printf "%.0f", 1e6 * c / n }'; }
printf '%-46s %9s %9s\n' "CPU per live event, microseconds" "source" "dest."
printf '%-46s %9s %9s\n' "replicator (worker; its destination sessions)" "$(us "$ours_src_cpu" "$ours_n")" "$(us "$ours_dst_cpu" "$ours_n")"
printf '%-46s %9s %9s\n' "logical replication (walsender; apply worker)" "$(us "$lr_src_cpu" "$lr_n")" "$(us "$lr_dst_cpu" "$lr_n")"
echo "(the destination side includes the bench's arrival trigger, the same for both)"
