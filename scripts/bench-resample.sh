#!/usr/bin/env bash
# Decode throughput of `thoughtscope resample` against llama.cpp on the same GGUF, same prompts,
# same K and token budget, run back to back (so a change in the host's load shows on both).
#
#   ours:      `resample --provider local` (one prefill per chunk, K rows decoded per step)
#   llama.cpp: llama-cpp-python's OpenAI server (scripts/install-llama-cpp.sh) with --n_threads 2,
#              driven by `resample --provider openai --concurrency K`. That server has no
#              continuous batching: it serves one completion at a time (the K requests queue) and
#              reuses the KV cache of the longest common prefix of consecutive prompts.
#
# Both rates are new tokens over the chunks' wall time, prefill included, as `resample` prints
# them (the server's side counts `usage.completion_tokens`).
#
#   bash scripts/bench-resample.sh [K] [MAX_TOKENS] [CHUNKS]     defaults: 16 64 5,20
# Environment: BENCH_THREADS (2), BENCH_PROBLEM (rollouts/apple_boxes/rollout_00, own-rollout).
set -euo pipefail
cd "$(dirname "$0")/.."
k="${1:-16}"; max_tokens="${2:-64}"; chunks="${3:-5,20}"
threads="${BENCH_THREADS:-2}"
problem="${BENCH_PROBLEM:-rollouts/apple_boxes/rollout_00}"
gguf=models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
out="$(mktemp -d)"
[ -f "$gguf" ] || { echo "bench-resample: $gguf absent; run scripts/fetch-model.sh" >&2; exit 1; }
.venv/bin/python -c 'import llama_cpp.server.app' 2>/dev/null \
  || { echo "bench-resample: llama-cpp-python absent; run scripts/install-llama-cpp.sh" >&2; exit 1; }
cargo build --quiet --bin thoughtscope
# .cargo/config.toml builds for the host tuple given explicitly (the notebook kernel shares the build)
bin="${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/debug/thoughtscope"

port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/python -m llama_cpp.server --model "$gguf" --host 127.0.0.1 --port "$port" \
  --n_threads "$threads" --n_threads_batch "$threads" --n_ctx 4096 --seed 44 >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf --noproxy '*' "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
  sleep 0.2
done

common=("$problem" --mode own-rollout --chunks "$chunks" --rollouts "$k" --max-tokens "$max_tokens")
echo "== host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== ours: resample --provider local, RAYON_NUM_THREADS=$threads"
RAYON_NUM_THREADS=$threads "$bin" --quiet resample "${common[@]}" --model smollm2-135m --out "$out/local" | tee "$out/local.txt"
echo "== llama.cpp: llama-cpp-python $(.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)') server, --n_threads $threads, $k concurrent requests"
"$bin" --quiet resample "${common[@]}" --provider openai --base-url "http://127.0.0.1:$port/v1" \
  --concurrency "$k" --out "$out/llama" | tee "$out/llama.txt"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
ours=$(grep -o '^[0-9.]* new tokens/s' "$out/local.txt" | cut -d' ' -f1)
theirs=$(grep -o '^[0-9.]* new tokens/s' "$out/llama.txt" | cut -d' ' -f1)
echo "K=$k max_tokens=$max_tokens chunks=$chunks: ours $ours tok/s, llama.cpp $theirs tok/s, ratio $(.venv/bin/python -c "print(f'{$ours/$theirs:.2f}')")"
echo "outputs in $out"
