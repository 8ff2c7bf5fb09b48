#!/usr/bin/env bash
# `make test`: the unit tests, then the integration tests, as two pytest sessions one after the
# other, both always run. (They ran at once until 2026-12: on 2 cores the unit session's CPU
# stretched every Ray worker start of the integration session's jobs; measured here, the
# integration session took 833 s alone on 2026-12-01 and 1,759 s beside the unit session on 2026-11-30; the unit session takes 458 s
# alone.) Both outputs stream; a summary of what failed in each comes last. Either session
# failing fails the run, and so does a session that collected no tests (pytest's exit code 5).
# The unit session runs on every core (pytest-xdist, at most 4 processes): its tests are independent (each
# has its own database, bucket and home; each process its own S3 server), and half its time was waits on
# subprocesses, servers and the browser: 298 s on 2 processes against 458 s on one (2026-12-01, 2 cores).
# The integration session stays one process: its tests share one stack, and its 2 cores are its jobs'.
# With arguments naming test paths, one session runs just those.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON=(-p no:cacheprovider -ra --tb=short --durations=25)

for arg in "$@"; do
  case "$arg" in
    tests/*) "$PY" -m pytest "${COMMON[@]}" "$@"; rc=$?
             [ $rc -eq 5 ] && { echo "pytest collected no tests: failing"; exit 1; }; exit $rc ;;
  esac
done

unit_log=$(mktemp -t doctune-unit-XXXXXX.log)
integration_log=$(mktemp -t doctune-integration-XXXXXX.log)
start=$(date +%s)
echo "==================== unit tests ===================="
"$PY" -m pytest "${COMMON[@]}" --numprocesses=auto --maxprocesses=4 "$@" tests/unit tests/chart 2>&1 | tee "$unit_log"
unit_rc=${PIPESTATUS[0]}
unit_s=$(( $(date +%s) - start ))
echo; echo "==================== integration tests ===================="
"$PY" -m pytest "${COMMON[@]}" "$@" tests/integration 2>&1 | tee "$integration_log"
integration_rc=${PIPESTATUS[0]}
# CI keeps only the head and tail of a long log: both sessions' one-line summaries of what failed, last
for log in "$unit_log" "$integration_log"; do
  echo; echo "---- $(basename "$log" | cut -d- -f2) session: what failed ----"
  sed -n '/short test summary info/,$p' "$log" | grep -E "^(FAILED|ERROR)" | cut -c1-400 || true
done
rm -f "$unit_log" "$integration_log"
echo "unit: exit $unit_rc in ${unit_s} s; integration: exit $integration_rc; $(( $(date +%s) - start )) s in all"
for rc in $unit_rc $integration_rc; do
  [ $rc -eq 5 ] && { echo "pytest collected no tests: failing"; exit 1; }
  [ $rc -ne 0 ] && exit $rc
done
exit 0
