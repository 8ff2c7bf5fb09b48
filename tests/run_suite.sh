#!/usr/bin/env bash
# `make test`: the unit and integration tests as two pytest sessions at once. The integration
# session's CPU is idle while it waits on Ray, S3 and Serve (start-ups, polls, a stopped server in
# the fault tests); the unit session fills those gaps instead of running before it. The
# integration output streams; the unit output follows it. Either session failing fails the run,
# and so does a session that collected no tests (pytest's exit code 5).
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
start=$(date +%s)
"$PY" -m pytest "${COMMON[@]}" "$@" tests/unit tests/chart >"$unit_log" 2>&1 &
unit_pid=$!
integration_log=$(mktemp -t doctune-integration-XXXXXX.log)
"$PY" -m pytest "${COMMON[@]}" "$@" tests/integration 2>&1 | tee "$integration_log"
integration_rc=${PIPESTATUS[0]}
wait $unit_pid
unit_rc=$?
echo; echo "==================== unit tests (ran beside the integration tests) ===================="
cat "$unit_log"
# CI keeps only the head and tail of a long log: both sessions' one-line summaries of what failed, last
for log in "$integration_log" "$unit_log"; do
  echo; echo "---- $(basename "$log" | cut -d- -f2) session: what failed ----"
  sed -n '/short test summary info/,$p' "$log" | grep -E "^(FAILED|ERROR)" | cut -c1-400 || true
done
rm -f "$unit_log" "$integration_log"
echo "unit: exit $unit_rc; integration: exit $integration_rc; $(( $(date +%s) - start )) s in all"
for rc in $unit_rc $integration_rc; do
  [ $rc -eq 5 ] && { echo "pytest collected no tests: failing"; exit 1; }
  [ $rc -ne 0 ] && exit $rc
done
exit 0
