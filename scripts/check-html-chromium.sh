#!/usr/bin/env bash
# Open an HTML file (figure, report or exported notebook) in headless Chromium with no network,
# check that its plotly figures rendered, and save a screenshot.
#
#   scripts/check-html-chromium.sh FILE.html OUT.png [--expect N] [--size WxH]
#
# A figure counts as rendered when its div got plotly.js's `js-plotly-plot` class and its
# `<svg class="main-svg">` children; counts come from Chromium's --dump-dom minus what the page
# source already contains (plotly.js itself is inlined there). Expected figures: `--expect N`, or
# the number of `<div … class="plotly-graph-div…">` in the file. Also reports any reference the
# page would fetch from the network (it should have none).
# Exit: 0 all rendered, 1 some did not (or none at all, unless `--expect 0` says the page has
# none, as the report index), 2 usage error or no Chromium.
set -euo pipefail

usage() { echo "usage: $0 FILE.html OUT.png [--expect N] [--size WxH]" >&2; exit 2; }
[ $# -ge 2 ] || usage
html=$1; png=$2; shift 2
# A page with no figure fails unless `--expect 0` was given: a report whose figures never made
# it into the file must not pass for one that has none.
expect=""; size="1280,1800"; least=1
while [ $# -gt 0 ]; do
  case $1 in
    --expect) expect=${2:?}; [ "$expect" = 0 ] && least=0; shift 2 ;;
    --size) size=${2/x/,}; shift 2 ;;
    *) usage ;;
  esac
done
[ -f "$html" ] || { echo "no such file: $html" >&2; exit 2; }

chromium=${CHROMIUM:-}
if [ -z "$chromium" ]; then
  chromium=$(command -v chromium || command -v chromium-browser || true)
fi
if [ -z "$chromium" ]; then
  echo "skipped: Chromium not found (apt-get install chromium, or set CHROMIUM)" >&2
  exit 2
fi

html_abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
mkdir -p "$(dirname "$png")"
png_abs=$(cd "$(dirname "$png")" && pwd)/$(basename "$png")
url="file://$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$html_abs" 2>/dev/null || echo "$html_abs")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking
       --disable-component-update --disable-sync --disable-extensions --no-first-run
       --no-default-browser-check --mute-audio --hide-scrollbars --virtual-time-budget=30000)

timeout 180 "$chromium" "${flags[@]}" --user-data-dir="$work/profile-dom" --dump-dom "$url" \
  >"$work/dom.html" 2>"$work/dom.log" || { echo "Chromium failed (--dump-dom):"; tail -5 "$work/dom.log"; exit 1; }
timeout 180 "$chromium" "${flags[@]}" --user-data-dir="$work/profile-shot" --window-size="$size" \
  --screenshot="$png_abs" "$url" >"$work/shot.log" 2>&1 || { echo "Chromium failed (--screenshot):"; tail -5 "$work/shot.log"; exit 1; }

count() { { grep -oE "$1" "$2" || true; } | wc -l | tr -d ' '; }
plots_pattern='class="[^"]*js-plotly-plot[^"]*"'
svg_pattern='class="main-svg"'
rendered=$(( $(count "$plots_pattern" "$work/dom.html") - $(count "$plots_pattern" "$html") ))
svgs=$(( $(count "$svg_pattern" "$work/dom.html") - $(count "$svg_pattern" "$html") ))
if [ -z "$expect" ]; then
  expect=$(count '<div [^>]*class="plotly-graph-div' "$html")
fi
network=$(count '<(script|link|img|iframe)[^>]*(src|href) *= *"?(https?:)?//' "$html")

echo "$html: $rendered plot(s) rendered of $expect expected, $svgs main-svg element(s), $network network reference(s)"
echo "screenshot: $png_abs ($(wc -c <"$png_abs" | tr -d ' ') bytes, window $size)"
if [ "$network" -gt 0 ]; then
  echo "warning: the page references the network:"
  grep -oE '<(script|link|img|iframe)[^>]*(src|href) *= *"?(https?:)?//[^" >]*' "$html" | head -5
fi
if [ "$rendered" -lt "$least" ] || [ "$rendered" -lt "$expect" ] || [ "$svgs" -lt "$rendered" ]; then
  echo "FAILED: not every figure rendered"
  exit 1
fi
echo "ok"
