#!/usr/bin/env bash
# The test command: installs what is missing, builds, installs, and runs every
# test (pg_regress on a temporary instance, then the TAP suites), as the
# PostgreSQL user.  Exit status is non-zero if any test fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_packages
# warnings are errors here, not in a user's build
build_and_install WERROR=1

dir=$(work_copy)
log "running tests in $dir"
status=0
# PROVE_TESTS="t/002_streaming.pl" runs some TAP suites only.
as_pg make -C "$dir" -s PG_CONFIG="$PG_BINDIR/pg_config" installcheck \
	PROVE_FLAGS="${PROVE_FLAGS:---timer}" ${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"} 2>&1 | tee "$dir/test-output.log" || status=$?

if [ $status -ne 0 ]; then
	[ -f "$dir/regression.diffs" ] && { log "regression.diffs"; cat "$dir/regression.diffs"; }
	for f in "$dir"/tmp_check/log/regress_log_*; do
		[ -f "$f" ] && { log "$f (last 60 lines)"; tail -n 60 "$f"; }
	done
fi

# One closing line over both runners: pg_regress tests and TAP assertions.
out="$dir/test-output.log"
r_ok=$(grep -cE '^(ok|test) .* \.\.\. ok ' "$out" || true)
r_failed=$(grep -cE '^(not ok|test) .* \.\.\. FAILED' "$out" || true)
t_total=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$out" | tail -n 1)
t_failed=$(sed -nE 's/.*Failed ([0-9]+)\/[0-9]+ subtests.*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
t_total=${t_total:-0}; t_failed=${t_failed:-0}
# a suite that died counts as a failure even when its finished tests passed
t_failed=$((t_failed + $(grep -cE '^t/.*(Dubious|Failed)|Bail out!' "$out" || true)))
echo
[ $status -ne 0 ] && echo "full output: $out"
echo "tests: $((r_ok + t_total - t_failed)) passed, $((r_failed + t_failed)) failed"
[ $status -eq 0 ] && rm -rf "$dir"
exit $status
