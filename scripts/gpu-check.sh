#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, as one script for a machine that has one and the CUDA
# toolkit (nvcc): a `--features cuda` build, the tests that have a GPU path, then `bench forward`
# on the GPU for SmolLM2 (its GGUF) and Qwen3-4B (random bf16 weights in its shapes).
#
#   bash scripts/gpu-check.sh                         # on the GPU machine
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_TOKENS=512 GPU_CHECK_LARGE_CONFIG=qwen3-0.6b \
#     bash scripts/gpu-check.sh                       # the same steps on a CPU, to try the script
#
# On the GPU machine a test that prints a hardware SKIP line (no CUDA device seen) fails the
# script: there the GPU path must run. The build is incremental, so after a run cut short by a
# time limit, running the script again goes on where the build stopped. Everything printed is
# also kept in ${OUT:-target/gpu-check}/ (gpu-check.log, tests.log, bench-*.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
device="${GPU_CHECK_DEVICE:-cuda}"
tokens="${GPU_CHECK_TOKENS:-8192}"
large="${GPU_CHECK_LARGE_CONFIG:-qwen3-4b}"
out="${OUT:-target/gpu-check}"
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
features=()
[ "$device" = cpu ] || features=(--features cuda)
failed=()
started=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - started )) s)"; }

step "machine"
nvidia-smi 2>/dev/null || echo "no nvidia-smi"
if command -v nvcc >/dev/null; then nvcc --version | tail -n 2; else echo "no nvcc: candle's CUDA kernels need the CUDA toolkit"; fi
nproc

step "model"
bash scripts/fetch-model.sh || failed+=("model")

step "build (${features[*]:-cpu})"
cargo build "${features[@]}" --bin thoughtscope || { echo "gpu-check: the build failed" >&2; exit 1; }
cargo test "${features[@]}" --test model --no-run || { echo "gpu-check: the test build failed" >&2; exit 1; }
bin="${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/debug/thoughtscope"

step "tests with a GPU path (NaN attention, parity with HF transformers)"
cargo test "${features[@]}" --test model -- nan_attention parity 2>&1 | tee "$out/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("tests")
if [ "$device" != cpu ] && grep -q '^SKIP (hardware)' "$out/tests.log"; then
  echo "gpu-check: a test with a GPU path did not see the GPU:"
  grep '^SKIP (hardware)' "$out/tests.log"
  failed+=("GPU not used")
fi

step "bench forward on $device, $tokens tokens"
# A text long enough: the sample rollouts' chains of thought one after another, twice (about
# 12k SmolLM2 tokens); the bench cuts it at the last sentence within the token count.
trace="$out/long-trace"
mkdir -p "$trace"
python3 - "$trace" <<'EOF'
import json, pathlib, sys
root = pathlib.Path("rollouts/apple_boxes")
dirs = sorted(p for p in root.iterdir() if (p / "base_solution.json").is_file())
first = json.loads((dirs[0] / "base_solution.json").read_text())
text = "\n\n".join(json.loads((d / "base_solution.json").read_text())["full_cot"] for d in dirs)
first["full_cot"] = text + "\n\n" + text
out = pathlib.Path(sys.argv[1])
(out / "base_solution.json").write_text(json.dumps(first))
(out / "problem.json").write_text((dirs[0] / "problem.json").read_text())
EOF
"$bin" bench forward --device "$device" --trace "$trace" --tokens "$tokens" --model smollm2-135m 2>&1 | tee "$out/bench-smollm2.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("bench smollm2")
"$bin" bench forward --device "$device" --trace "$trace" --tokens "$tokens" --config "$large" --random-weights --weights-dtype bf16 2>&1 \
  | tee "$out/bench-$large.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("bench $large")

step "done"
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu-check: failed: ${failed[*]}" >&2
  exit 1
fi
echo "gpu-check: every step passed"
