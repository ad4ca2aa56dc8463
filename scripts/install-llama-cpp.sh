#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible server from the PyPI package llama-cpp-python (pinned), into .venv:
# the real server the `resample --provider openai` test and scripts/bench-resample.sh start on
# loopback. Idempotent: skips the install when the pinned version imports with its server extra,
# and says so.
#
# PyPI has only the sdist for Linux, so pip builds llama.cpp with CMake and gcc (CMake comes from
# PyPI inside pip's build environment when the system has none). The build flags:
#   GGML_NATIVE=ON     -march=native: the kernels this CPU has (AVX-512 where present), as a user
#                      building llama.cpp for their machine gets; bench-resample compares against
#                      it, so a portable AVX2-only build would flatter thoughtscope. On a CPU with
#                      AMX it also builds llama.cpp's AMX matmul, which segfaults on the SmolLM2
#                      Q4_1 GGUF in this version: scripts/llama_server.py (the test's and the
#                      bench's server) and scripts/llama_batched_reference.py load without it.
#   LLAVA_BUILD=OFF    no multimodal library (mtmd); the server imports it only for image models.
#   no tests or examples.
# The wheel is kept in $THOUGHTSCOPE_CACHE/wheels under a name that holds the version and a hash of
# the flags, so a fresh .venv installs it at once, and a change of flags builds again (pip's own
# wheel cache would hand back a wheel built with other flags).
set -euo pipefail
cd "$(dirname "$0")/.."

PIN="0.3.36"
FLAGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}"
PY=.venv/bin/python
CACHE="${THOUGHTSCOPE_CACHE:-$HOME/.cache/thoughtscope}"
if [ ! -x "$PY" ]; then
  echo "creating .venv"
  python3 -m venv .venv
fi

have="$("$PY" - <<'PYEOF'
import importlib.metadata as md
try:
    print(md.version("llama_cpp_python"))
except md.PackageNotFoundError:
    print("")
PYEOF
)"
# Which flags the installed build had (written below after an install).
marker=.venv/llama-cpp-python.flags
if [ "$have" = "$PIN" ] && [ "$(cat "$marker" 2>/dev/null)" = "$FLAGS" ] \
  && "$PY" -c 'import llama_cpp, llama_cpp.server.app' 2>/dev/null; then
  echo "skipped: llama-cpp-python==$PIN with its server already installed (built with: $FLAGS)"
  exit 0
fi

flags_hash="$(printf '%s' "$FLAGS" | sha256sum | cut -c1-12)"
wheel_dir="$CACHE/wheels/llama-cpp-python-$PIN-$flags_hash"
wheel="$(ls "$wheel_dir"/llama_cpp_python-"$PIN"-*.whl 2>/dev/null | head -n 1 || true)"
if [ -n "$wheel" ]; then
  echo "reusing $wheel (built earlier with: $FLAGS)"
else
  echo "building llama-cpp-python==$PIN from source with: $FLAGS"
  if ! command -v gcc >/dev/null || ! command -v g++ >/dev/null; then
    echo "installing gcc/g++ (Debian)"
    apt-get update -qq && apt-get install -y -qq build-essential
  fi
  start=$(date +%s)
  tmp="$wheel_dir.partial"
  rm -rf "$tmp"
  CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$PY" -m pip wheel --no-deps --no-cache-dir --disable-pip-version-check -w "$tmp" "llama-cpp-python==$PIN"
  rm -rf "$wheel_dir"
  mv "$tmp" "$wheel_dir"
  wheel="$(ls "$wheel_dir"/llama_cpp_python-"$PIN"-*.whl | head -n 1)"
  echo "built $wheel in $(( $(date +%s) - start )) s"
fi
"$PY" -m pip install --disable-pip-version-check --force-reinstall --no-deps "$wheel"
# The server's own dependencies (fastapi, uvicorn, ...) from the package's `server` extra.
"$PY" -m pip install --disable-pip-version-check "$wheel[server]"
printf '%s' "$FLAGS" > "$marker"
"$PY" -c 'import llama_cpp, llama_cpp.server.app; print("llama-cpp-python", llama_cpp.__version__, "ready:", llama_cpp.llama_print_system_info().decode().strip())'
