#!/usr/bin/env bash
# Insert small events (about 230 bytes) at a set rate, one per call, for
# latency measurements; pgbench paces the calls and prints progress.
#
#   bench/load_perf_data.sh [--rate EVENTS_PER_S] [--seconds S] [--clients N]
#                           [--host H] [--port P] [--dbname D] [--user U]
set -euo pipefail
RATE=500 SECS=20 CLIENTS=2 HOST=/tmp PORT=5432 DB=postgres USER_=${PGUSER:-postgres}
while [ $# -gt 0 ]; do
	case $1 in
		--rate) RATE=$2; shift 2 ;;
		--seconds) SECS=$2; shift 2 ;;
		--clients) CLIENTS=$2; shift 2 ;;
		--host) HOST=$2; shift 2 ;;
		--port) PORT=$2; shift 2 ;;
		--dbname) DB=$2; shift 2 ;;
		--user) USER_=$2; shift 2 ;;
		*) echo "usage: $0 [--rate N] [--seconds S] [--clients N] [--host H] [--port P] [--dbname D] [--user U]" >&2; exit 2 ;;
	esac
done
run() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# the load tools (replicator_load.perf_event) live outside the extension
run psql -X -q -h "$HOST" -p "$PORT" -d "$DB" -U "$USER_" -v ON_ERROR_STOP=1 < "$(dirname "$0")/load_tools.sql" >/dev/null
script=$(run mktemp /tmp/replicator-perf.XXXXXX)
trap 'rm -f "$script"' EXIT
echo "SELECT insert_events_array(ARRAY[replicator_load.perf_event()]);" | run tee "$script" >/dev/null
run pgbench -n -h "$HOST" -p "$PORT" -U "$USER_" -c "$CLIENTS" -j "$CLIENTS" -R "$RATE" -T "$SECS" -P 5 -f "$script" "$DB"
