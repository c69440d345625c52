#!/usr/bin/env bash
# cdc rule benchmark, one run on this machine, two local servers: a source
# (wal_level = logical) and a target with two databases, "cdc" fed by a cdc
# rule and "lr" fed by a built-in logical replication subscription of the
# same tables.  It prints figures, no pass/fail:
#   1. the cost on the source: pgbench TPC-B-like throughput on the captured
#      tables with neither running, with the rule running, and (for
#      reference) with logical replication running, all at wal_level =
#      logical, the runs interleaved (neither, rule, logical replication,
#      neither, ...); medians and their ratios;
#   2. catch-up, twice: with the rule paused and the subscription disabled,
#      a backlog of row changes (first pgbench transactions, then a batch
#      job of 1000-row UPDATE transactions), then the rule resumed and timed
#      until a row committed after the backlog is visible on the target,
#      then the subscription enabled and timed the same way (polled by one
#      session on the target, every 5 ms); row changes per second of each;
#   3. commit-to-visible latency p50/p99 of single-row inserts, one every
#      LAT_INTERVAL_MS: the source row carries clock_timestamp() taken just
#      before its commit, the target table has an extra column DEFAULT
#      clock_timestamp() that the apply fills (neither writes columns the
#      source lacks); each system measured alone, rounds A B B A.
# Knobs (environment): SCALE (10), CLIENTS (4), RUN_SECONDS (30) and PAIRS (3,
# rounds of three runs) of the throughput runs; BACKLOG_TX (15000 pgbench transactions, 4 row
# changes each) and BATCH_ROWS (440000 updated rows, 1000 per transaction)
# of the backlogs; LAT_N (500 inserts per system) and LAT_INTERVAL_MS (10).
# The defaults take about 13 minutes in all.
# Usage: bench/rules.sh
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-4}
SECONDS_RUN=${RUN_SECONDS:-30}
PAIRS=${PAIRS:-3}
BACKLOG_TX=${BACKLOG_TX:-15000}
BATCH_ROWS=${BATCH_ROWS:-440000}
LAT_N=${LAT_N:-500}
LAT_INTERVAL_MS=${LAT_INTERVAL_MS:-10}
BASE=/tmp/replicator-bench-rules
SRC=55711 TGT=55712
CONF=("shared_buffers = 1GB" "max_wal_size = 8GB" "checkpoint_timeout = 30min")
SRC_CONF=("wal_level = logical" "max_replication_slots = 10" "max_wal_senders = 10" "max_worker_processes = 16")
# Servers that restrict output plugins must allow the extension's own.
if "$PG_BINDIR/postgres" --describe-config 2>/dev/null | grep -c '^output_plugin_libraries' >/dev/null; then
	SRC_CONF+=("output_plugin_libraries = 'pgoutput, test_decoding, replicator'")
fi
TABLES="public.pgbench_accounts,public.pgbench_branches,public.pgbench_tellers,public.pgbench_history,public.lat"

ensure_packages
build_and_install

cleanup() { for p in $SRC $TGT; do stop_pg "$BASE/$p"; done; }
trap cleanup EXIT
start_pg "$BASE/$SRC" $SRC "${CONF[@]}" "${SRC_CONF[@]}"
start_pg "$BASE/$TGT" $TGT "${CONF[@]}" "max_worker_processes = 16"

q() { local port=$1 db=$2; shift 2; as_pg psql -X -q -At -h /tmp -p "$port" -d "$db" -v ON_ERROR_STOP=1 "$@"; }
s() { q $SRC bench "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.1f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
conn() { echo "host=/tmp port=$1 dbname=$2"; }
checkpoint() { q $SRC postgres -c "CHECKPOINT"; q $TGT postgres -c "CHECKPOINT"; }
wait_rule() {
	[ "$(s -c "SELECT replicator.wait_for_rule('r', '10 min')")" = t ] || {
		echo "the rule did not catch up in 10 minutes:" >&2
		s -c "SELECT table_name, state, lag_changes, lag, applied_lsn, last_error FROM replicator.rule_status" >&2
		exit 1
	}
}

log "pgbench -i -s $SCALE; pgbench_history gets a primary key; the latency table lat"
q $SRC postgres -c "CREATE DATABASE bench"
as_pg pgbench -q -i -s "$SCALE" -h /tmp -p $SRC bench >/dev/null 2>&1
s -c "ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY" \
	-c "CREATE TABLE lat (id bigserial PRIMARY KEY, committed timestamptz NOT NULL DEFAULT clock_timestamp())" \
	-c "CREATE EXTENSION replicator"
# Both target databases get the same tables, lat with one more column that
# the apply leaves to its default: when the row became visible there.
for db in cdc lr; do
	q $TGT postgres -c "CREATE DATABASE $db"
	as_pg pg_dump -s -h /tmp -p $SRC -t 'public.pgbench_*' -t public.lat bench | q $TGT $db >/dev/null
	q $TGT $db -c "ALTER TABLE lat ADD COLUMN arrived timestamptz DEFAULT clock_timestamp()"
done

log "the cdc rule: initial copy"
t0=$(now)
s -c "SELECT replicator.add_replica('tgt', '$(conn $TGT cdc)', stream_events => false)" \
	-c "SELECT replicator.add_rule('r', 'tgt', 'cdc', tables => '{$TABLES}')"
wait_rule
echo "initial copy of scale $SCALE: $(since "$t0") s"
log "built-in logical replication of the same tables into lr: initial sync"
s -c "CREATE PUBLICATION bench FOR TABLE ${TABLES//,/, }"
q $TGT lr -c "CREATE SUBSCRIPTION bench CONNECTION '$(conn $SRC bench)' PUBLICATION bench"
# slot caught up with the source's WAL position $1
lr_at() { [ "$(s -c "SELECT confirmed_flush_lsn >= '$1' FROM pg_replication_slots WHERE slot_name = 'bench'")" = t ]; }
lr_wait() { until lr_at "$1"; do sleep 0.02; done; }
until [ "$(q $TGT lr -c "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")" = 0 ]; do sleep 0.2; done
lr_wait "$(s -c "SELECT pg_current_wal_lsn()")"
# the subscription's walsender gone, or there
lr_stopped() { until [ "$(s -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench' AND active")" = 0 ]; do sleep 0.05; done; }
lr_started() { until [ "$(s -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench' AND active")" = 1 ]; do sleep 0.05; done; }

# Fresh copies would otherwise be vacuumed by autovacuum during a measured run.
s -c "VACUUM ANALYZE"
q $TGT cdc -c "VACUUM ANALYZE"
q $TGT lr -c "VACUUM ANALYZE"

# 1. Throughput on the captured tables: with neither running, with the
# rule running, with logical replication running (for reference: what
# PostgreSQL's own replication costs on the same machine).  Each run starts
# caught up, after a vacuum of the small tables and a checkpoint; -n:
# pgbench would otherwise truncate pgbench_history.
log "pgbench: $CLIENTS clients, ${SECONDS_RUN} s, -M prepared, $PAIRS x (neither, rule running, logical replication running)"
bench_run() {
	s -c "VACUUM pgbench_branches" -c "VACUUM pgbench_tellers"
	checkpoint
	as_pg pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_RUN" -h /tmp -p $SRC bench 2>/dev/null |
		awk '/^tps = / { printf "%.1f", $3 }'
}
TPS_WITHOUT=() TPS_WITH=() TPS_LR=()
q $TGT lr -c "ALTER SUBSCRIPTION bench DISABLE"
lr_stopped
for i in $(seq "$PAIRS"); do
	s -c "SELECT replicator.pause_rule('r')" >/dev/null
	tps=$(bench_run)
	TPS_WITHOUT+=("$tps")
	echo "run $((3 * i - 2)), neither running:  $tps tps"
	s -c "SELECT replicator.resume_rule('r')" >/dev/null
	wait_rule
	tps=$(bench_run)
	TPS_WITH+=("$tps")
	behind=$(s -c "SELECT max(lag_changes) || ' changes, ' || pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), min(applied_lsn))) FROM replicator.rule_status")
	t0=$(now)
	wait_rule
	echo "run $((3 * i - 1)), rule running: $tps tps (at its end the rule was $behind of WAL behind, caught up $(since "$t0") s later)"
	s -c "SELECT replicator.pause_rule('r')" >/dev/null
	q $TGT lr -c "ALTER SUBSCRIPTION bench ENABLE"
	lr_started
	lr_wait "$(s -c "SELECT pg_current_wal_lsn()")"
	tps=$(bench_run)
	TPS_LR+=("$tps")
	lr_wait "$(s -c "SELECT pg_current_wal_lsn()")"
	echo "run $((3 * i)), logical replication running: $tps tps"
	q $TGT lr -c "ALTER SUBSCRIPTION bench DISABLE"
	lr_stopped
done
tps_without=$(median "${TPS_WITHOUT[@]}")
tps_with=$(median "${TPS_WITH[@]}")
tps_lr=$(median "${TPS_LR[@]}")
# the rule missed the last run: both start the backlogs caught up
s -c "SELECT replicator.resume_rule('r')" >/dev/null
wait_rule

# 2. Catch-up of one backlog, the rule and then logical replication.
# until row $2 of lat is visible in target database $1 (one session polling)
visible() {
	q $TGT "$1" -c "DO \$\$ BEGIN
		WHILE NOT EXISTS (SELECT FROM lat WHERE id = $2) LOOP PERFORM pg_sleep(0.005); END LOOP; END \$\$"
}
# catch_up NAME ROWS COMMAND...: with the rule paused and the subscription
# disabled, COMMAND makes ROWS row changes; then each system catches up alone
declare -A CATCHUP_S CATCHUP_ROWS
catch_up() {
	local name=$1 rows=$2 end_lsn wal t0; shift 2
	s -c "SELECT replicator.pause_rule('r')" >/dev/null
	q $TGT lr -c "ALTER SUBSCRIPTION bench DISABLE"
	lr_stopped
	"$@"
	# the mark: a row of lat committed after the backlog; each target
	# applies in commit order, so once it is visible there, all is
	mark=$(s -c "INSERT INTO lat DEFAULT VALUES RETURNING id")
	end_lsn=$(s -c "SELECT pg_current_wal_lsn()")
	wal=$(s -c "SELECT pg_size_pretty(pg_wal_lsn_diff('$end_lsn', min(confirmed_flush_lsn))) FROM pg_replication_slots")
	checkpoint
	t0=$(now)
	s -c "SELECT replicator.resume_rule('r')" >/dev/null
	visible cdc "$mark"
	CATCHUP_S[$name,rule]=$(since "$t0")
	wait_rule
	checkpoint
	t0=$(now)
	q $TGT lr -c "ALTER SUBSCRIPTION bench ENABLE"
	visible lr "$mark"
	CATCHUP_S[$name,lr]=$(since "$t0")
	lr_wait "$end_lsn"
	CATCHUP_ROWS[$name]=$rows
	echo "$name: $rows row changes, $wal of WAL: cdc rule ${CATCHUP_S[$name,rule]} s, logical replication ${CATCHUP_S[$name,lr]} s"
}
# pgbench transactions: 3 updates and an insert, each of another table
backlog_tx() { as_pg pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -t $((BACKLOG_TX / CLIENTS)) -h /tmp -p $SRC bench >/dev/null 2>&1; }
# a batch job: pgbench_accounts updated 1000 rows per transaction
backlog_batch() {
	s -c "DO \$\$ BEGIN
		FOR i IN 0 .. $BATCH_ROWS - 1 BY 1000 LOOP
			UPDATE pgbench_accounts SET abalance = abalance + 1
			WHERE aid > i % ($SCALE * 100000) AND aid <= i % ($SCALE * 100000) + least(1000, $BATCH_ROWS - i);
			COMMIT;
		END LOOP; END \$\$"
}
log "catch-up: one backlog of pgbench transactions, one of a batch job; the rule first, then logical replication"
catch_up pgbench $((BACKLOG_TX / CLIENTS * CLIENTS * 4)) backlog_tx
catch_up batch "$BATCH_ROWS" backlog_batch

# 3. Latency, each system alone, rounds A B B A.
log "commit-to-visible latency: $LAT_N single-row inserts per system, one every $LAT_INTERVAL_MS ms, rounds A B B A"
maxid() { q "$1" "$2" -c "SELECT coalesce(max(id), 0) FROM lat"; }
inserts() {
	s -c "DO \$\$ BEGIN FOR i IN 1 .. $1 LOOP
		INSERT INTO lat DEFAULT VALUES; COMMIT; PERFORM pg_sleep($LAT_INTERVAL_MS / 1000.0);
	END LOOP; END \$\$"
}
# p50 p99 ms of the rows of lat in db with ids in where: committed came
# from the source, arrived was filled on the target
lat() {
	q $TGT "$1" -c "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 2) || ' ' ||
	                       round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::numeric, 2)
	                FROM (SELECT extract(epoch FROM arrived - committed) * 1000 AS ms FROM lat WHERE $2) x"
}
rule_ids=false lr_ids=false
s -c "SELECT replicator.pause_rule('r')" >/dev/null
q $TGT lr -c "ALTER SUBSCRIPTION bench DISABLE"
rule_round() {
	s -c "SELECT replicator.resume_rule('r')" >/dev/null
	wait_rule
	checkpoint
	local from to
	from=$(maxid $SRC bench)
	inserts $((LAT_N / 2))
	wait_rule
	to=$(maxid $SRC bench)
	rule_ids="$rule_ids OR id > $from AND id <= $to"
	echo "round $1, cdc rule:            p50 p99 ms $(lat cdc "id > $from AND id <= $to")"
	s -c "SELECT replicator.pause_rule('r')" >/dev/null
}
lr_round() {
	q $TGT lr -c "ALTER SUBSCRIPTION bench ENABLE"
	lr_started
	lr_wait "$(s -c "SELECT pg_current_wal_lsn()")"
	checkpoint
	local from to
	from=$(maxid $SRC bench)
	inserts $((LAT_N - LAT_N / 2))
	to=$(maxid $SRC bench)
	until [ "$(maxid $TGT lr)" -ge "$to" ]; do sleep 0.05; done
	lr_ids="$lr_ids OR id > $from AND id <= $to"
	echo "round $1, logical replication: p50 p99 ms $(lat lr "id > $from AND id <= $to")"
	q $TGT lr -c "ALTER SUBSCRIPTION bench DISABLE"
	lr_stopped
}
rule_round 1; lr_round 2; lr_round 3; rule_round 4
read -r rule_p50 rule_p99 <<<"$(lat cdc "$rule_ids")"
read -r lr_p50 lr_p99 <<<"$(lat lr "$lr_ids")"

log "both targets against the source"
s -c "SELECT replicator.resume_rule('r')" >/dev/null
q $TGT lr -c "ALTER SUBSCRIPTION bench ENABLE"
wait_rule
lr_wait "$(s -c "SELECT pg_current_wal_lsn()")"
fingerprint() {
	q "$1" "$2" -c "SELECT (SELECT count(*) || '/' || sum(abalance) FROM pgbench_accounts) || ' ' ||
	                       (SELECT sum(bbalance) FROM pgbench_branches) || ' ' || (SELECT sum(tbalance) FROM pgbench_tellers) || ' ' ||
	                       (SELECT count(*) || '/' || sum(delta) FROM pgbench_history) || ' ' || (SELECT count(*) FROM lat)"
}
src_fp=$(fingerprint $SRC bench)
for db in cdc lr; do
	fp=$(fingerprint $TGT $db)
	echo "$db: $fp $([ "$fp" = "$src_fp" ] && echo "(equal to the source)" || echo "(source: $src_fp)")"
done

echo
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
sum() { awk -v a="$1" -v b="$2" 'BEGIN { print a + b }'; }
echo "== $(nproc) cores; pgbench scale $SCALE, $CLIENTS clients, -M prepared, ${SECONDS_RUN} s per run, $PAIRS runs each, interleaved"
printf '%-46s %s\n' "tps, neither running (median)" "$tps_without   (runs: ${TPS_WITHOUT[*]})"
printf '%-46s %s\n' "tps, rule running (median)" "$tps_with   (runs: ${TPS_WITH[*]})"
printf '%-46s %s\n' "tps, logical replication running (median)" "$tps_lr   (runs: ${TPS_LR[*]})"
echo "rule running / neither:                        $(ratio "$tps_with" "$tps_without")   (goal >= 0.95)"
echo "logical replication running / neither:         $(ratio "$tps_lr" "$tps_without")"
echo
echo "== catch-up, row changes per second"
printf '%-46s %12s %12s %12s\n' "" "cdc rule" "logical rep." "ratio"
for b in pgbench batch; do
	n=${CATCHUP_ROWS[$b]}
	printf '%-46s %12s %12s %12s\n' "$b ($n row changes)" "$(rate "$n" "${CATCHUP_S[$b,rule]}")" "$(rate "$n" "${CATCHUP_S[$b,lr]}")" \
		"$(ratio "${CATCHUP_S[$b,lr]}" "${CATCHUP_S[$b,rule]}")"
done
n=$(sum "${CATCHUP_ROWS[pgbench]}" "${CATCHUP_ROWS[batch]}")
rs=$(sum "${CATCHUP_S[pgbench,rule]}" "${CATCHUP_S[batch,rule]}")
ls=$(sum "${CATCHUP_S[pgbench,lr]}" "${CATCHUP_S[batch,lr]}")
printf '%-46s %12s %12s %12s   (goal >= 1.5)\n' "both ($n row changes)" "$(rate "$n" "$rs")" "$(rate "$n" "$ls")" "$(ratio "$ls" "$rs")"
echo
printf '%-46s %9s %9s\n' "commit-to-visible, 1 insert / ${LAT_INTERVAL_MS} ms" "p50 ms" "p99 ms"
printf '%-46s %9s %9s\n' "cdc rule" "$rule_p50" "$rule_p99"
printf '%-46s %9s %9s\n' "logical replication" "$lr_p50" "$lr_p99"
