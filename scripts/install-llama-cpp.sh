#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible server from the PyPI package llama-cpp-python (pinned), into .venv:
# the real server the `resample --provider openai` test and scripts/bench-resample.sh start on
# loopback. Idempotent: skips the install when the pinned version imports with its server extra,
# and says so.
#
# PyPI has only the sdist for Linux, so pip builds llama.cpp with CMake and gcc (CMake comes from
# PyPI inside pip's build environment when the system has none). GGML_NATIVE=OFF: a portable
# build (no -march=native), so a .venv copied to another x86-64 machine still runs; no tests or
# examples. pip keeps the built wheel in its cache, so a later fresh .venv installs it at once. About 37
# minutes on two cores shared with other jobs (measured: 2204 s at load average 16).
set -euo pipefail
cd "$(dirname "$0")/.."

PIN="0.3.36"
PY=.venv/bin/python
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
if [ "$have" = "$PIN" ] && "$PY" -c 'import llama_cpp, llama_cpp.server.app' 2>/dev/null; then
  echo "skipped: llama-cpp-python==$PIN with its server already installed"
  exit 0
fi
echo "to install: llama-cpp-python[server]==$PIN (installed: ${have:-none}); builds llama.cpp from source"
if ! command -v gcc >/dev/null || ! command -v g++ >/dev/null; then
  echo "installing gcc/g++ (Debian)"
  apt-get update -qq && apt-get install -y -qq build-essential
fi
start=$(date +%s)
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  "$PY" -m pip install --disable-pip-version-check "llama-cpp-python[server]==$PIN"
"$PY" -c 'import llama_cpp, llama_cpp.server.app; print("llama-cpp-python", llama_cpp.__version__, "ready")'
echo "built in $(( $(date +%s) - start )) s"
