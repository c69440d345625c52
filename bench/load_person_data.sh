#!/usr/bin/env bash
# Load realistic person events into an event source, several clients at once,
# each call carrying validation data that replicator.diff(..., validate =>
# true) checks.  A progress line is printed every second.
#
#   bench/load_person_data.sh [--clients N] [--events-per-call N] [--total N]
#                             [--host H] [--port P] [--dbname D] [--user U]
#
# Runs as whoever calls it (psql must reach the server); as root, as postgres.
set -euo pipefail
CLIENTS=4 PER_CALL=5 TOTAL=100000 HOST=/tmp PORT=5432 DB=postgres USER_=${PGUSER:-postgres}
while [ $# -gt 0 ]; do
	case $1 in
		--clients) CLIENTS=$2; shift 2 ;;
		--events-per-call) PER_CALL=$2; shift 2 ;;
		--total) TOTAL=$2; shift 2 ;;
		--host) HOST=$2; shift 2 ;;
		--port) PORT=$2; shift 2 ;;
		--dbname) DB=$2; shift 2 ;;
		--user) USER_=$2; shift 2 ;;
		*) echo "usage: $0 [--clients N] [--events-per-call N] [--total N] [--host H] [--port P] [--dbname D] [--user U]" >&2; exit 2 ;;
	esac
done
run() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
q() { run psql -X -q -At -h "$HOST" -p "$PORT" -d "$DB" -U "$USER_" -v ON_ERROR_STOP=1 "$@"; }

# the load tools (replicator_load.load_person_data) live outside the extension
q < "$(dirname "$0")/load_tools.sql" >/dev/null
calls=$(( (TOTAL + CLIENTS * PER_CALL - 1) / (CLIENTS * PER_CALL) ))
run_id="person-$(date +%s)-$$"
start_max=$(q -c "SELECT coalesce(max(id), 0) FROM events")
echo "loading $((calls * CLIENTS * PER_CALL)) events: $CLIENTS clients x $calls calls x $PER_CALL events (program $run_id-<client>)"
pids=()
for c in $(seq 1 "$CLIENTS"); do
	q -c "CALL replicator_load.load_person_data('$run_id-$c', $calls, $PER_CALL)" &
	pids+=($!)
done
t0=$(date +%s.%N)
while kill -0 "${pids[@]}" 2>/dev/null; do
	sleep 1
	n=$(( $(q -c "SELECT coalesce(max(id), 0) FROM events") - start_max ))
	awk -v n="$n" -v t="$t0" -v now="$(date +%s.%N)" -v total="$((calls * CLIENTS * PER_CALL))" \
		'BEGIN { printf "\r%d of %d events, %.0f events/s   ", n, total, n / (now - t) }'
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
n=$(( $(q -c "SELECT coalesce(max(id), 0) FROM events") - start_max ))
awk -v n="$n" -v t="$t0" -v now="$(date +%s.%N)" 'BEGIN { printf "\r%d events in %.1f s, %.0f events/s\n", n, now - t, n / (now - t) }'
exit $status
