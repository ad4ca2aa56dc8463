#!/usr/bin/env bash
# Open notebook HTML reports in headless Chromium with every host name unresolvable (so nothing can
# come from the network) and check that each plotly figure rendered; save a screenshot of each.
#
#   scripts/check-notebook-html.sh analysis/reports/*.html
#
# A figure counts as rendered when plotly.js turned its `plotly-graph-div` into a `js-plotly-plot`
# holding a `main-svg`. Exit 1 if a report has no figure or fewer rendered figures than figure
# divs; 2 if Chromium is missing (Debian: apt-get install chromium). Screenshots go next to each
# report as <name>.png (override the folder with SCREENSHOT_DIR). VIRTUAL_TIME_MS (default 60000)
# is Chromium's virtual-time budget for scripts to run before the DOM is dumped.
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 REPORT.html [REPORT.html ...]" >&2
  exit 2
fi
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$CHROMIUM" ]; then
  echo "error: chromium not found (Debian: apt-get install -y chromium; or set CHROMIUM)" >&2
  exit 2
fi
BUDGET="${VIRTUAL_TIME_MS:-60000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

chromium_run() {
  # No sandbox (containers run as root), no GPU, no background traffic, and every host name maps
  # to "not found": a report that needs a CDN fails here.
  timeout 300 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --disable-background-networking --disable-component-update --disable-sync --no-first-run \
    --disable-default-apps --mute-audio --hide-scrollbars \
    --host-resolver-rules="MAP * ~NOTFOUND" \
    --user-data-dir="$work/profile" --virtual-time-budget="$BUDGET" "$@" 2>>"$work/chromium.log"
}

# Occurrences of an extended regex in a file (0 when none; grep's status 1 is not a failure).
count() { { grep -Eo "$1" "$2" || true; } | wc -l; }

status=0
for report in "$@"; do
  if [ ! -f "$report" ]; then
    echo "FAIL $report: no such file"
    status=1
    continue
  fi
  url="file://$(readlink -f "$report")"
  name="$(basename "$report" .html)"
  shot_dir="${SCREENSHOT_DIR:-$(dirname "$report")}"
  mkdir -p "$shot_dir"

  figures=$(count 'class="plotly-graph-div' "$report")
  network=$(count '<script[^>]*[sS][rR][cC]=["'"'"']?(https?:)?//' "$report")
  chromium_run --dump-dom "$url" >"$work/$name.dom" || true
  rendered=$(count 'class="[^"]*js-plotly-plot' "$work/$name.dom")
  svgs=$(count 'class="main-svg"' "$work/$name.dom")
  math=$(count '<mjx-container' "$work/$name.dom")
  # A tall window so the screenshot shows several cells; the full report is the HTML itself.
  chromium_run --window-size=1280,"${SCREENSHOT_HEIGHT:-4000}" --screenshot="$shot_dir/$name.png" "$url" >/dev/null || true

  line="$report: $figures figure divs, $rendered rendered ($svgs main-svg), $math MathJax formulas, $network network <script src>; screenshot $shot_dir/$name.png"
  if [ "$figures" -eq 0 ] || [ "$rendered" -lt "$figures" ] || [ "$network" -ne 0 ]; then
    echo "FAIL $line"
    status=1
  else
    echo "ok   $line"
  fi
done
exit $status
