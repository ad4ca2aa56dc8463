#!/usr/bin/env bash
# Decode throughput of `thoughtscope resample` against llama.cpp on the same GGUF, same prompts,
# same K, token budget and thread count, run back to back (so a change in the host's load shows
# on all three):
#
#   ours:              `resample --provider local`: one prefill per chunk, then K rows per decode
#                      step (`--batch`, default 16: K = 16 decodes as one group)
#   llama.cpp batched: scripts/llama_batched_reference.py, llama-cpp-python's low-level API: one
#                      prefill per chunk, its KV cache shared by K sequences, one llama_decode of
#                      K tokens per step; the prompts are the ones `resample` just decoded from
#   llama.cpp server:  llama-cpp-python's OpenAI server (scripts/llama_server.py), driven by
#                      `resample --provider openai --concurrency K`. That server has no continuous
#                      batching: it serves one completion at a time (the K requests queue) and
#                      reuses the KV cache of the longest common prefix of consecutive prompts.
#
# Rates are new tokens over the chunks' wall time, prefill included, as `resample` prints them
# (the server's side counts `usage.completion_tokens`); "per CPU-s" divides the same tokens by
# the process's CPU time (model load included for ours and the batched script), which the host's
# load moves much less than wall time.
#
# llama.cpp (this build) runs its threads with OpenMP, whose threads spin at every barrier before
# they sleep; on a host shared with other jobs a spinning thread waits for a descheduled partner,
# and llama.cpp's throughput collapses (measured: 2 threads 4× slower than 1). The bench therefore
# runs llama.cpp with OMP_WAIT_POLICY=passive (BENCH_OMP_WAIT_POLICY; "default" leaves OpenMP's
# default). Its weights stay out of the AMX buffers, whose matmul segfaults on this GGUF (see
# scripts/llama_server.py).
#
#   bash scripts/bench-resample.sh [K] [MAX_TOKENS] [CHUNKS]     defaults: 16 64 5,20
# Environment: BENCH_THREADS (2), BENCH_PROBLEM (rollouts/apple_boxes/rollout_00, own-rollout),
# BENCH_OMP_WAIT_POLICY (passive), THOUGHTSCOPE_BIN (a built thoughtscope binary; default: build
# this checkout and run target/<host-tuple>/debug/thoughtscope).
set -euo pipefail
cd "$(dirname "$0")/.."
k="${1:-16}"; max_tokens="${2:-64}"; chunks="${3:-5,20}"
threads="${BENCH_THREADS:-2}"
problem="${BENCH_PROBLEM:-rollouts/apple_boxes/rollout_00}"
wait_policy="${BENCH_OMP_WAIT_POLICY:-passive}"
gguf=models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
py=.venv/bin/python
out="$(mktemp -d)"
[ -f "$gguf" ] || { echo "bench-resample: $gguf absent; run scripts/fetch-model.sh" >&2; exit 1; }
"$py" -c 'import llama_cpp.server.app' 2>/dev/null \
  || { echo "bench-resample: llama-cpp-python absent; run scripts/install-llama-cpp.sh" >&2; exit 1; }
if [ -n "${THOUGHTSCOPE_BIN:-}" ]; then
  bin="$THOUGHTSCOPE_BIN"
else
  cargo build --quiet --bin thoughtscope
  # .cargo/config.toml builds for the host tuple given explicitly (the notebook kernel shares the build)
  bin="${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/debug/thoughtscope"
fi
llama_env=()
[ "$wait_policy" = default ] || llama_env=(OMP_WAIT_POLICY="$wait_policy")

# CPU seconds (user + system) of a process and its waited-for children, from /proc.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat"
}
# Run a command, its stdout to FILE and the terminal, its CPU seconds to FILE.cpu.
timed() {
  local file="$1"; shift
  local before after
  before=$(cpu_seconds $$)
  "$@" >"$file"
  after=$(cpu_seconds $$)
  cat "$file"
  echo "$before $after" | awk '{ printf "%.1f\n", $2 - $1 }' >"$file.cpu"
}
rate() { grep -o '^[0-9.]* new tokens/s' "$1" | cut -d' ' -f1; }
new_tokens() { grep -o '[0-9]* new tokens in' "$1" | awk '{ s += $1 } END { print s }'; }

common=("$problem" --mode own-rollout --chunks "$chunks" --rollouts "$k" --max-tokens "$max_tokens")
echo "== host: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== K=$k max_tokens=$max_tokens chunks=$chunks threads=$threads; llama.cpp: llama-cpp-python $("$py" -c 'import llama_cpp; print(llama_cpp.__version__)'), ${llama_env[*]:-the OpenMP default wait policy}"

echo "== ours: resample --provider local, RAYON_NUM_THREADS=$threads"
timed "$out/local.txt" env RAYON_NUM_THREADS="$threads" "$bin" --quiet resample "${common[@]}" --model smollm2-135m --out "$out/local"

echo "== llama.cpp batched: scripts/llama_batched_reference.py, $k sequences per llama_decode"
timed "$out/batched.txt" env "${llama_env[@]}" "$py" scripts/llama_batched_reference.py --model "$gguf" \
  --prompts-from "$out/local/$(basename "$problem")" --rollouts "$k" --max-tokens "$max_tokens" --threads "$threads"

echo "== llama.cpp server: scripts/llama_server.py, --n_threads $threads, $k concurrent requests"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env "${llama_env[@]}" "$py" scripts/llama_server.py --model "$gguf" --host 127.0.0.1 --port "$port" \
  --n_threads "$threads" --n_threads_batch "$threads" --n_ctx 4096 --seed 44 >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf --noproxy '*' "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
  sleep 0.2
done
server_before=$(cpu_seconds $server)
"$bin" --quiet resample "${common[@]}" --provider openai --base-url "http://127.0.0.1:$port/v1" \
  --concurrency "$k" --out "$out/server" | tee "$out/server.txt"
echo "$server_before $(cpu_seconds $server)" | awk '{ printf "%.1f\n", $2 - $1 }' >"$out/server.txt.cpu"
kill -0 $server 2>/dev/null || { tail -n 20 "$out/server.log" >&2; echo "bench-resample: the server died" >&2; exit 1; }
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

printf '%-20s %10s %10s %10s %12s %10s\n' engine "new tokens" tokens/s "CPU s" "tokens/CPU-s" "ours ÷"
ours=$(rate "$out/local.txt")
for engine in local:ours "batched:llama.cpp batched" "server:llama.cpp server"; do
  file="$out/${engine%%:*}.txt"
  name="${engine#*:}"
  "$py" - "$name" "$(new_tokens "$file")" "$(rate "$file")" "$(cat "$file.cpu")" "$ours" <<'EOF'
import sys
name, tokens, rate, cpu, ours = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print(f"{name:<20} {tokens:>10} {rate:>10.1f} {cpu:>10.1f} {tokens / cpu:>12.1f} {ours / rate:>10.2f}")
EOF
done
echo "outputs in $out"
