#!/usr/bin/env bash
# Execute the notebooks headlessly (test-mode sizes, the embedded defaults) into
# analysis/reports/<name>.html, then check the reports in headless Chromium.
#
#   bash scripts/run-notebooks.sh [notebooks/x.ipynb ...]      # default: every notebooks/*.ipynb
#
# Set-up (scripts/setup-notebooks.sh) runs first and skips what is installed. The first run builds
# thoughtscope and its dependencies inside the kernel (the `:dep` cell; minutes, see
# notebooks/README.md); later runs reuse that build from EVCXR_TMPDIR. Every notebook is run even
# if one fails; the exit status is non-zero if any failed or a report did not render.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then
  notebooks=("$@")
else
  notebooks=(notebooks/*.ipynb)
fi

bash scripts/setup-notebooks.sh
cargo build --bin thoughtscope
# .cargo/config.toml builds for the host tuple given explicitly (the notebook kernel shares the build)
bin="${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/debug/thoughtscope"

failed=()
reports=()
for nb in "${notebooks[@]}"; do
  name="$(basename "$nb" .ipynb)"
  start=$(date +%s)
  echo "== notebook $nb"
  if "$bin" notebook run "$nb"; then
    echo "== $nb: ok in $(( $(date +%s) - start )) s"
    reports+=("analysis/reports/$name.html")
  else
    echo "== $nb: FAILED after $(( $(date +%s) - start )) s"
    failed+=("$nb")
  fi
done

if [ ${#reports[@]} -gt 0 ]; then
  if command -v chromium >/dev/null 2>&1 || [ -n "${CHROMIUM:-}" ]; then
    bash scripts/check-notebook-html.sh "${reports[@]}" || failed+=("report check")
  else
    echo "skipped: report check (chromium absent; scripts/setup-notebooks.sh installs it)"
  fi
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
