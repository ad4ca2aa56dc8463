#!/usr/bin/env bash
# The trace explorer's pages in headless Chromium: file size, first contentful paint, script
# start-up, then the heatmap, and the latency of 30 sentence clicks and 30 heatmap-cell clicks
# (click to the next painted frame), each page measured RUNS times by
# scripts/explorer_browser_test.py --measure (which also checks the page against its JSON).
#
#   1. a synthetic 300-sentence, 16k-token trace with every part filled (`thoughtscope bench
#      explorer`: SmolLM2's 30 x 9 heads, receiver-head average + 4 heads, suppression,
#      step_importance.json, 9 resampling fields, 5 alternatives per chunk, token view of 4 heads
#      x 16 tokens), and the same without the token view;
#   2. the sample rollout rollouts/apple_boxes/rollout_04 with its token view (one forward pass of
#      SmolLM2-135M; skipped without the model, scripts/fetch-model.sh);
#   3. one published thought-anchors trace as it is (no attention), when the thought-anchors
#      website traces are beside the repository (THOUGHTSCOPE_TRACES, as scripts/setup.sh).
#
#   bash scripts/bench-explorer.sh [RUNS]          default 3; pages kept in BENCH_OUT (default: a temporary folder)
# Needs chromium and chromium-driver (scripts/install-chromium.sh) and selenium (scripts/python-env.sh analysis).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
cargo build --quiet --bin thoughtscope
# .cargo/config.toml builds for the host tuple given explicitly
bin="${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/debug/thoughtscope"
python=.venv/bin/python
[ -x "$python" ] || python=python3
out="${BENCH_OUT:-$(mktemp -d)}"
mkdir -p "$out"
traces="${THOUGHTSCOPE_TRACES:-../shared/data/thought-anchors-traces}"

echo "== $(date -u +%F), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $("${CHROMIUM:-chromium}" --version 2>/dev/null || echo 'chromium ?')"
"$bin" bench explorer --sentences 300 --tokens 16000 --out "$out/synthetic_300.html"
"$bin" bench explorer --sentences 300 --tokens 16000 --token-heads 0 --out "$out/synthetic_300_no_tokens.html"
pages=("$out/synthetic_300.html" "$out/synthetic_300_no_tokens.html")
if "$bin" --quiet explore rollouts/apple_boxes/rollout_04 --model smollm2-135m --token-view --out "$out/rollout_04.html"; then
  pages+=("$out/rollout_04.html")
else
  echo "skipped: rollout_04 with its token view (SmolLM2 absent? scripts/fetch-model.sh)"
fi
published="$traces/deepseek-r1-distill-llama-8b/incorrect_base_solution/problem_4164"
if [ -d "$published" ]; then
  "$bin" --quiet explore "$published" --out "$out/published_4164.html" >/dev/null
  pages+=("$out/published_4164.html")
fi

for page in "${pages[@]}"; do
  for run in $(seq "$runs"); do
    echo "== $(basename "$page"), run $run"
    "$python" scripts/explorer_browser_test.py "$page" --measure
  done
done
echo "== pages in $out"
