#!/usr/bin/env bash
# The Python reference environments in .venv. Idempotent: creates .venv if missing, installs each
# pinned package only when the installed version differs, and says what it skipped.
#
#   bash scripts/python-env.sh analysis   numpy, scipy, pandas (+ selenium): the numpy/pandas references that the
#                                         tests run (scripts/test.sh installs this; about a minute)
#   bash scripts/python-env.sh [full]     the above plus HF transformers (eager, f32) and torch, for
#                                         scripts/make_fixtures.py and scripts/bench_forward_reference.py;
#                                         the fixtures they make are committed, so tests never need it
#
# Packages come from PyPI only. PyPI's Linux torch wheel is the CUDA build and pulls the CUDA
# runtime wheels (a few GB) as dependencies; torch imports fail without them, so they are installed
# even though everything here runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
SET="${1:-full}"
ANALYSIS_PINS=(
  "numpy==2.4.6"
  "scipy==1.17.1"
  "pandas==3.1.1"
  "selenium==4.51.0"  # drives Chromium in scripts/explorer_browser_test.py
)
PINS=(
  "${ANALYSIS_PINS[@]}"
  "torch==2.15.0"
  "transformers==5.23.0"
  "tokenizers==0.23.3"
  "gguf==0.19.0"
  "accelerate==1.15.0"
  "safetensors==0.8.0"
  "peft==0.21.2"  # builds the tiny CODI checkpoint exactly as CODI wraps its base model
)

case "$SET" in
  analysis) PINS=("${ANALYSIS_PINS[@]}") ;;
  full) ;;
  *) echo "usage: $0 [analysis|full]" >&2; exit 2 ;;
esac

if [ -x "$VENV/bin/python" ]; then
  echo "skipped: $VENV exists ($("$VENV/bin/python" --version))"
else
  echo "creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

installed_version() {
  "$PY" - "$1" <<'EOF'
import sys, importlib.metadata as md
try:
    print(md.version(sys.argv[1]))
except md.PackageNotFoundError:
    print("")
EOF
}

missing=()
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"
  want="${pin##*==}"
  have="$(installed_version "$name")"
  if [ "$have" = "$want" ]; then
    echo "skipped: $name==$want already installed"
  else
    echo "to install: $pin (installed: ${have:-none})"
    missing+=("$pin")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  # All pins in one resolve so pip keeps them mutually consistent.
  "$PY" -m pip install --disable-pip-version-check "${PINS[@]}"
fi

"$PY" - "${PINS[@]}" <<'EOF'
import sys, importlib.metadata as md
names = [pin.split("==")[0] for pin in sys.argv[1:]]
print("python env ready: " + ", ".join(f"{n} {md.version(n)}" for n in names))
EOF
