#!/usr/bin/env bash
# Side-by-side forward bench: `thoughtscope bench forward` against the Python reference
# (HF transformers eager + upstream numpy averaging) on the same token ids, interleaved so that
# a change in the host's load shows up on both sides. Each side also times the f32 GEMM on the
# model's linear shapes (ours, OpenBLAS, torch's matmul) for the roofline. Each set also runs
# the reference's blockwise pipeline (SDPA forward, attention probabilities recomputed per
# block of query rows and reduced in torch; the strongest plain-PyTorch way) into
# python-blockwise-N.json; the Rust report's ratios are against the eager reference, and the last
# lines (stderr) give the blockwise run's time and peak RSS with their ratios to ours. Prints the
# final report (ratios included); every run's JSON stays in $BENCH_OUT (default: a fresh
# temporary directory).
# Needs the Python env: bash scripts/python-env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tokens="${1:-3000}"
out="${BENCH_OUT:-$(mktemp -d)}"
mkdir -p "$out"
[ -x .venv/bin/python ] || { echo "bench-forward: no .venv/bin/python; run: bash scripts/python-env.sh" >&2; exit 1; }
# The reference BLAS: with Debian's OpenBLAS installed, every run also times its GEMM on the
# model's shapes (loaded at run time) and the roofline is the best rate found.
bash scripts/install-openblas.sh >&2
cargo build --quiet --bin thoughtscope
# .cargo/config.toml builds for the host tuple given explicitly (the notebook kernel shares the build)
bin="${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/debug/thoughtscope"
python_reference() {
  OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_forward_reference.py --tokens "$tokens" \
    --inputs "$out/inputs.json" > "$out/python-$1.json" 2> "$out/python-$1.log"
  OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_forward_reference.py --pipeline blockwise --tokens "$tokens" \
    --inputs "$out/inputs.json" > "$out/python-blockwise-$1.json" 2> "$out/python-blockwise-$1.log"
}
$bin bench forward --tokens "$tokens" --repeat 3 --export-inputs "$out/inputs.json" > "$out/ours-1.json"
python_reference 1
$bin bench forward --tokens "$tokens" --repeat 3 > "$out/ours-2.json"
python_reference 2
$bin bench forward --tokens "$tokens" --repeat 3 --reference "$out/python-2.json" | tee "$out/report.json"
# The Rust report takes one reference (the eager one); the blockwise figures go beside it.
.venv/bin/python - "$out/report.json" "$out/python-blockwise-2.json" "$out/python-2.json" <<'PY' >&2
import json, sys
report, blockwise, eager = (json.load(open(path)) for path in sys.argv[1:])
sums = blockwise["sum_of_all_sentence_matrices"], eager["sum_of_all_sentence_matrices"]
print(f"bench-forward: python blockwise ({blockwise['tokens']} tokens): forward_plus_averaging_s "
      f"{blockwise['forward_plus_averaging_s']}, peak_rss_gb {blockwise['peak_rss_gb']} "
      f"(eager: {eager['forward_plus_averaging_s']} s, {eager['peak_rss_gb']} GB; sums' rel diff "
      f"{abs(sums[0] - sums[1]) / abs(sums[1]):.1e})")
for ours in report["thoughtscope"]:
    print(f"bench-forward: ours ({ours['tokens']} tokens) vs blockwise: speedup "
          f"{blockwise['forward_plus_averaging_s'] / ours['forward_and_averaging_s']:.2f}, python peak RSS over ours "
          f"{blockwise['peak_rss_gb'] * 1024 / ours['peak_rss_mib']:.2f}")
    # The ceiling of that speedup on this host: no pipeline whose f32 GEMMs run at the best rate
    # measured here finishes the forward's FLOPs faster than the roofline.
    if ours.get("roofline_s"):
        split = ours.get("roofline_split") or {}
        print(f"bench-forward: blockwise over the roofline ({ours['roofline_s']:.2f} s): "
              f"{blockwise['forward_plus_averaging_s'] / ours['roofline_s']:.2f}, the most speedup over it any f32 "
              f"pipeline at the best measured GEMM rate can show; ours: GEMM phases at "
              f"{split.get('gemm_over_roofline', float('nan')):.2f}x the roofline, "
              f"{split.get('outside_gemm_s', float('nan')):.2f} s outside them")
PY
echo "bench-forward: runs in $out" >&2
