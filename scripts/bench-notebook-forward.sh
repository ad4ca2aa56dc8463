#!/usr/bin/env bash
# The same forward pass (SmolLM2, all-heads sentence averaging, a real trace cut to TOKENS) timed in
# the Jupyter kernel (notebooks/bench/forward_speed.ipynb, evcxr's build of thoughtscope) and with
# the CLI (`thoughtscope bench forward`), alternately, RUNS times each. Needs the thought-anchors
# website traces beside the repository (the trace) and the notebook tooling (scripts/setup-notebooks.sh).
#
#   bash scripts/bench-notebook-forward.sh [TOKENS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
export TOKENS="${1:-3000}" RUNS="${2:-3}"
cargo build --bin thoughtscope
# .cargo/config.toml builds for the host tuple given explicitly (the notebook kernel shares the build)
bin="${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/debug/thoughtscope"
start=$(date +%s)
"$bin" notebook run notebooks/bench/forward_speed.ipynb --html "${TMPDIR:-/tmp}/forward_speed.html" | tee "${TMPDIR:-/tmp}/forward_speed.log"
echo "notebook run (kernel start, :dep build, $RUNS forwards): $(( $(date +%s) - start )) s"
cli=()
for _ in $(seq "$RUNS"); do
  cli+=("$("$bin" bench forward --tokens "$TOKENS" --no-phases | python3 -c 'import json,sys; print(json.load(sys.stdin)["thoughtscope"][0]["forward_and_averaging_s"])')")
done
echo "CLI_FORWARD_S [${cli[*]}]"
grep -h "NOTEBOOK_FORWARD_S" "${TMPDIR:-/tmp}/forward_speed.log" | sed 's/^ *| *//'
