#!/usr/bin/env bash
# Run every fuzz target of tests/fuzz/readers.rs for a time budget: each target keeps
# starting fresh proptest runners (new random seeds) until SECONDS_PER_TARGET have passed, one
# target after the other, and prints one results line:
#
#   fuzz <target>: executions N, crashes C, wall S s, slowest case M ms (<outcome> n, ...)
#
# crashes counts panics, aborts and damaged cache data served (0 expected). A failing case is
# shrunk and saved under target/fuzz-failures/; an abort leaves <target>-last-input.bin there.
# Not part of CI (which runs the same targets with PROPTEST_CASES, default 64, in `cargo test`).
#
# Usage: scripts/fuzz.sh [seconds-per-target (default 600)] [test-name filter, e.g. fuzz_gguf]
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
filter=${2:-fuzz_}
log=target/fuzz.log
mkdir -p target

cargo test --test fuzz --no-run --quiet || exit 1
echo "fuzzing each target for ${seconds} s (log: $log)"
RUST_BACKTRACE=0 THOUGHTSCOPE_FUZZ_SECONDS=$seconds PROPTEST_CASES=${PROPTEST_CASES:-256} \
  cargo test --quiet --test fuzz -- --test-threads=1 "$filter" >"$log" 2>&1
status=$?

echo
grep -o 'fuzz [a-z-]*: executions.*' "$log" || true
if [ "$status" -ne 0 ]; then
  grep -E "^(thread '.*' .*panicked|fuzz [a-z-]*: )" "$log" | grep -v ': executions' | head -20
  last=$(ls target/fuzz-failures/*-last-input.bin 2>/dev/null)
  [ -n "$last" ] && echo "input of an aborted case: $last"
  echo "fuzzing found a failure (exit $status); see $log" >&2
  exit "$status"
fi
