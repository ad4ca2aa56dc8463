#!/usr/bin/env bash
# The fault test at full size: `va` and `attn` killed with SIGKILL at 20 random moments
# (10 each) and run again; the outputs must equal an uninterrupted run's byte for byte (the run's
# provenance aside: see tests/runs/fault_kill.rs). `.ci/run` runs the same test with 4 trials.
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-20}"
bash scripts/fetch-model.sh >/dev/null
THOUGHTSCOPE_FAULT_TRIALS="$trials" cargo test --quiet --test runs fault_kill -- --nocapture
echo "fault-test: $trials killed runs, outputs equal to the uninterrupted run"
