#!/usr/bin/env bash
# Switchover under load, three local servers, each with the extension: A
# master, B and C slaves.  Each round, WRITERS clients call
# insert_events_array (10 small events per call, one psql per call) on
# whatever node is master, asking node() where the master is when a call
# fails; meanwhile promote() hands the master role to the next node
# (a -> b -> c -> a ...).  Per round it prints:
#   - promote(): how long the call took (fence, drain, hand-over);
#   - unavailable: the writer-visible window, from the last call acknowledged
#     by the old master to the first acknowledged by the new one (all
#     writers; "worst writer" is the longest such gap of a single writer);
#   - failed calls and acknowledged calls, and how many acknowledged calls
#     are missing on some node afterwards (must be 0).
# One psql per call costs a few ms, which bounds the resolution of the
# window.  Usage: bench/switchover.sh [rounds] [writers]   (default 5 4)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

ROUNDS=${1:-5}
WRITERS=${2:-4}
BASE=/tmp/replicator-bench-switchover
NAMES=(a b c)
declare -A PORT=([a]=55621 [b]=55622 [c]=55623)

ensure_packages
build_and_install

WRITER_PIDS=()
cleanup() {
	if [ -n "${RUN:-}" ]; then as_pg touch "$RUN/stop" 2>/dev/null || true; fi
	for p in "${WRITER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for n in "${NAMES[@]}"; do stop_pg "$BASE/$n"; done
}
trap cleanup EXIT
for n in "${NAMES[@]}"; do start_pg "$BASE/$n" "${PORT[$n]}" "max_worker_processes = 16"; done

q() { local port=$1; shift; as_pg psql -X -q -At -h /tmp -p "$port" -d postgres -v ON_ERROR_STOP=1 "$@"; }
conn() { echo "host=/tmp port=${PORT[$1]} dbname=postgres"; }
now_ns() { date +%s%N; }

for n in "${NAMES[@]}"; do q "${PORT[$n]}" -c "CREATE EXTENSION replicator"; done
q "${PORT[a]}" -c "SELECT replicator.add_replica('a', '$(conn a)', role => 'master')" \
	-c "SELECT replicator.add_replica('b', '$(conn b)', role => 'slave', lag_tolerance => '5 s')" \
	-c "SELECT replicator.add_replica('c', '$(conn c)', role => 'slave', lag_tolerance => '5 s')"

# until node $1 says "role|master" = $2 (a poll, at most a minute)
wait_role() {
	local _
	for _ in $(seq 600); do
		[ "$(q "${PORT[$1]}" -c "SELECT role || '|' || master FROM replicator.node()" 2>/dev/null || true)" = "$2" ] && return 0
		sleep 0.1
	done
	echo "node $1 is not $2" >&2
	return 1
}
wait_role b 'slave|a'
wait_role c 'slave|a'

# The writer, run as the PostgreSQL user: writer.sh W OUT STOP TARGET name=port...
# Each attempt is a line: "ok|fail node start_ns end_ns [first last]".
WDIR=$(as_pg mktemp -d /tmp/replicator-bench-writers.XXXXXX)
as_pg tee "$WDIR/writer.sh" >/dev/null <<'EOF'
#!/usr/bin/env bash
w=$1 out=$2 stop=$3 target=$4; shift 4
declare -A port
for np in "$@"; do port[${np%%=*}]=${np#*=}; done
p() { psql -X -q -At -h /tmp -p "$1" -d postgres -v ON_ERROR_STOP=1 -c "$2" 2>/dev/null; }
k=0
while [ ! -e "$stop" ]; do
	k=$((k + 1))
	t0=$(date +%s%N)
	if r=$(p "${port[$target]}" "SELECT first_id || ' ' || last_id FROM insert_events_array(ARRAY(SELECT jsonb_build_object('w', $w, 'k', $k, 'j', j) FROM generate_series(1, 10) j))"); then
		echo "ok $target $t0 $(date +%s%N) $w $k $r" >>"$out"
	else
		echo "fail $target $t0 $(date +%s%N) $w $k" >>"$out"
		for n in "$target" "${!port[@]}"; do
			m=$(p "${port[$n]}" "SELECT master FROM replicator.node()") && [ -n "$m" ] && [ -n "${port[$m]:-}" ] && { target=$m; break; }
		done
	fi
done
EOF

# successful calls of every writer on node $2 in round dir $1: the fewest
min_ok() { local m=999999 w c; for w in $(seq "$WRITERS"); do c=$(grep -c "^ok $2 " "$1/w$w" 2>/dev/null || true); [ "${c:-0}" -lt "$m" ] && m=${c:-0}; done; echo "$m"; }
wait_ok() {
	local _
	for _ in $(seq 1200); do [ "$(min_ok "$1" "$2")" -ge "$3" ] && return 0; sleep 0.05; done
	echo "the writers did not reach $3 calls on $2" >&2
	return 1
}
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }

declare -a PROMOTE_MS WINDOW_MS
master=a
printf '\n%-6s %-8s %6s %12s %15s %13s %7s %6s %5s\n' round switch epoch "promote() ms" "unavailable ms" "worst writer" failed acked lost
for r in $(seq "$ROUNDS"); do
	cand=${NAMES[$(((r) % 3))]}
	[ "$cand" = "$master" ] && cand=${NAMES[$(((r + 1) % 3))]}
	RUN=$WDIR/round$r
	as_pg mkdir "$RUN"
	WRITER_PIDS=()
	for w in $(seq "$WRITERS"); do
		as_pg bash "$WDIR/writer.sh" "$w" "$RUN/w$w" "$RUN/stop" "$master" a="${PORT[a]}" b="${PORT[b]}" c="${PORT[c]}" &
		WRITER_PIDS+=($!)
	done
	wait_ok "$RUN" "$master" 20
	t0=$(now_ns)
	res=$(q "${PORT[$master]}" -c "SELECT master || ' ' || epoch || ' ' || last_event_id FROM replicator.promote('$cand')")
	t1=$(now_ns)
	read -r new epoch last_event <<<"$res"
	[ "$new" = "$cand" ] || { echo "promote returned $res" >&2; exit 1; }
	wait_ok "$RUN" "$cand" 20
	as_pg touch "$RUN/stop"
	wait "${WRITER_PIDS[@]}"
	WRITER_PIDS=()
	cat "$RUN"/w* >"$RUN/all"

	# the window: last ack by the old master to first ack by the new one
	# and every call acknowledged on the side of the epoch boundary it belongs to
	read -r window worst failed acked misplaced < <(awk -v old="$master" -v new="$cand" -v le="$last_event" '
		$1 == "ok" && $2 == old && $8 > le { misplaced++ }
		$1 == "ok" && $2 == new && $7 <= le { misplaced++ }
		$1 == "ok" && $2 == old { if ($4 > last) last = $4; if ($4 > wl[$5]) wl[$5] = $4 }
		$1 == "ok" && $2 == new { if (first == "" || $4 < first) first = $4; if (!($5 in wf) || $4 < wf[$5]) wf[$5] = $4 }
		$1 == "ok" { acked++ } $1 == "fail" { failed++ }
		END {
			for (w in wf) if (wf[w] - wl[w] > worst) worst = wf[w] - wl[w]
			printf "%.1f %.1f %d %d %d\n", (first - last) / 1e6, worst / 1e6, failed, acked, misplaced
		}' "$RUN/all")

	# every acknowledged call on every node, once the new master streamed it
	for n in "${NAMES[@]}"; do
		[ "$n" = "$cand" ] && continue
		wait_role "$n" "slave|$cand"
		[ "$(q "${PORT[$cand]}" -c "SELECT replicator.wait_for_replica('$n', '5 min')")" = t ]
	done
	awk '$1 == "ok" { print $5 "," $6 "," $7 "," $8 }' "$RUN/all" | as_pg tee "$RUN/acked.csv" >/dev/null
	lost=0
	for n in "${NAMES[@]}"; do
		l=$(q "${PORT[$n]}" -c "CREATE TEMP TABLE acked (w int, k int, first_id bigint, last_id bigint)" \
			-c "\\copy acked FROM '$RUN/acked.csv' (FORMAT csv)" \
			-c "SELECT count(*) FROM acked a WHERE a.last_id - a.first_id <> 9 OR (SELECT count(*) FROM events e
			     WHERE e.id BETWEEN a.first_id AND a.last_id AND e.event->>'w' = a.w::text AND e.event->>'k' = a.k::text) <> 10")
		lost=$((lost + l))
	done
	printf '%-6s %-8s %6s %12s %15s %13s %7s %6s %5s\n' "$r" "$master->$cand" "$epoch" "$(ms "$t0" "$t1")" "$window" "$worst" "$failed" "$acked" "$lost"
	PROMOTE_MS+=("$(ms "$t0" "$t1")")
	WINDOW_MS+=("$window")
	[ "$lost" -eq 0 ] || { echo "acknowledged calls are missing" >&2; exit 1; }
	[ "$misplaced" -eq 0 ] || { echo "$misplaced calls acknowledged on the wrong side of event $last_event" >&2; exit 1; }
	master=$cand
done

stats() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "min %.1f  median %.1f  max %.1f", v[1], v[int((NR + 1) / 2)], v[NR] }'; }
echo
echo "== $ROUNDS switchovers, $WRITERS writers (10 events per call, one psql per call)"
echo "promote() ms:        $(stats "${PROMOTE_MS[@]}")"
echo "unavailable ms:      $(stats "${WINDOW_MS[@]}")"
echo "events on each node: $(q "${PORT[$master]}" -c "SELECT count(*) FROM events"), all equal: $(
	for n in "${NAMES[@]}"; do q "${PORT[$n]}" -c "SELECT count(*) || ':' || coalesce(max(id), 0) FROM events"; done | sort -u | wc -l | sed 's/^1$/yes/;s/^[0-9]*$/NO/')"
as_root rm -rf "$WDIR"
