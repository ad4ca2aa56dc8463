#!/usr/bin/env python3
"""Python reference for the model bench (issue 3): what upstream thought-anchors does for one text.

SmolLM2-135M from its GGUF in HF transformers (eager attention, f32), one forward pass with
`output_attentions=True` over a real trace's full_cot, then every layer x head reduced to the
sentence matrix with upstream's numpy loop (`_compute_averaged_matrix`). Sentences and token
boundaries are derived the upstream way (split_solution_keep_spacing, prefix tokenisation).
With --inputs (written by `thoughtscope bench forward --export-inputs`) it runs on the Rust run's
exact token ids and boundaries, so both sides do the same computation and their checksums agree.
Prints one JSON object: wall times of each phase and the peak RSS of the process, and torch's
matmul rate on the model's linear shapes and a 2048^3 square (the Rust bench's roofline takes
the best GEMM it finds on the host).

Run: .venv/bin/python scripts/bench_forward_reference.py [--tokens 3000] [--out DIR]
Memory: the attention outputs alone are 30 x 9 x T^2 x 4 bytes (9.7 GB at T = 3000).
"""
import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ta_upstream import compute_averaged_matrix, prefix_bounds, sentence_char_ranges, split_solution_keep_spacing

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("THOUGHTSCOPE_MODELS", ROOT / "models"))
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_TRACE = "thought-anchors-traces/deepseek-r1-distill-qwen-14b/correct_base_solution/problem_330"


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def torch_matmul_rates(config, tokens, rounds=5):
    """torch's f32 matmul rate (GFLOP/s) on the decoder's linear shapes at `tokens` rows (x @ W.T,
    as nn.Linear computes it) and on a 2048^3 square, on torch's threads: the same products
    `thoughtscope bench forward` times for its own kernels and OpenBLAS. Median of `rounds`
    interleaved rounds after one warm-up round."""
    d, heads = config.hidden_size, config.num_attention_heads
    hd = getattr(config, "head_dim", None) or d // heads
    q, kv, inter = heads * hd, config.num_key_value_heads * hd, config.intermediate_size
    shapes = [("q", tokens, d, q, 1), ("k,v", tokens, d, kv, 2), ("o", tokens, q, d, 1),
              ("gate,up", tokens, d, inter, 2), ("down", tokens, inter, d, 1)]
    products = [(m, k, n) for _, m, k, n, _ in shapes] + [(2048, 2048, 2048)]
    gen = torch.Generator().manual_seed(0)
    operands = [(torch.rand(m, k, generator=gen) - 0.5, torch.rand(n, k, generator=gen) - 0.5) for m, k, n in products]
    times = [[] for _ in products]
    cpu_times = [[] for _ in products]  # process CPU seconds per thread, as the Rust bench reports
    threads = torch.get_num_threads()
    with torch.no_grad():
        for r in range(rounds + 1):
            for i, (x, w) in enumerate(operands):
                t0, c0 = time.perf_counter(), time.process_time()
                x @ w.T
                if r:
                    times[i].append(time.perf_counter() - t0)
                    cpu_times[i].append((time.process_time() - c0) / threads)
    flop = [2.0 * m * k * n for m, k, n in products]

    def rates(samples):
        med = [float(np.median(t)) for t in samples]
        model_s = sum(med[i] * s[4] for i, s in enumerate(shapes))
        model_flop = sum(flop[i] * s[4] for i, s in enumerate(shapes))
        return [flop[i] / med[i] / 1e9 for i in range(len(shapes))], model_flop / model_s / 1e9, flop[-1] / med[-1] / 1e9

    per_shape, model, square = rates(times)
    per_shape_cpu, model_cpu, square_cpu = rates(cpu_times)
    return {
        "threads": threads,
        "model_shapes": [{"shape": s[0], "m": s[1], "k": s[2], "n": s[3], "per_layer": s[4],
                          "gflop_per_s": per_shape[i], "gflop_per_cpu_s": per_shape_cpu[i]} for i, s in enumerate(shapes)],
        "model_shapes_gflop_per_s": model,
        "square_2048_gflop_per_s": square,
        "model_shapes_gflop_per_cpu_s": model_cpu,
        "square_2048_gflop_per_cpu_s": square_cpu,
    }


def fit_to_tokens(tok, text, n_tokens):
    """Repeat the text (joined by a blank line) until it has at least n_tokens, then cut it at the
    start of token n_tokens, so the model input is about n_tokens long."""
    full = text
    while len(tok(full)["input_ids"]) < n_tokens:
        full = full + "\n\n" + text
    offsets = tok(full, return_offsets_mapping=True)["offset_mapping"]
    return full if len(offsets) <= n_tokens else full[: offsets[n_tokens][0]]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default=str(ROOT.parent / "shared/data" / DEFAULT_TRACE),
                        help="problem directory holding base_solution.json")
    parser.add_argument("--tokens", type=int, default=3000,
                        help="truncate (or repeat) full_cot to about this many tokens; 0 = as is")
    parser.add_argument("--inputs", help="JSON written by `thoughtscope bench forward --export-inputs`: use the "
                                         "text of the entry with target_tokens == --tokens (same input as the Rust run)")
    parser.add_argument("--own-tokens", action="store_true",
                        help="with --inputs, tokenise the text with HF's tokenizer instead of using the exported ids")
    parser.add_argument("--out", help="also write the L x H sentence matrices as upstream's "
                                      "<out>/smollm2-135m/<text_id>/<l>_<h>.npy")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers

    t0 = time.perf_counter()
    model_dir = MODELS / "smollm2-135m"
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=GGUF_FILE, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0

    entry = None
    if args.inputs:
        entries = json.loads(Path(args.inputs).read_text())
        entry = next(e for e in entries if e["target_tokens"] == args.tokens)
        text = entry["text"]
    else:
        text = json.loads((Path(args.trace) / "base_solution.json").read_text())["full_cot"]
        if args.tokens:
            text = fit_to_tokens(tok, text, args.tokens)

    t0 = time.perf_counter()
    sentences, _ = split_solution_keep_spacing(text)
    bounds = prefix_bounds(lambda s: tok.encode(s), text, sentence_char_ranges(text, sentences))
    boundaries_s = time.perf_counter() - t0

    inputs = tok(text, return_tensors="pt")
    same_tokens = bool(entry and "input_ids" in entry and not args.own_tokens)
    if same_tokens:
        # The Rust run's token ids and boundaries: HF's GGUF tokenizer omits SmolLM2's digit
        # split, so its own ids differ on some texts; these make both runs the same computation.
        ids = torch.tensor([entry["input_ids"]], dtype=torch.long)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        bounds = [tuple(b) for b in entry["token_bounds"]]
    # Before the forward pass, whose 10 GB of attention would otherwise crowd these products.
    torch_matmul = torch_matmul_rates(model.config, int(inputs["input_ids"].shape[1]))
    rss_before_forward = peak_rss_gb()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, return_dict=True, use_cache=False, output_hidden_states=False)
    attentions = [a.detach().cpu() for a in out.attentions]
    forward_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    matrices = {}
    for layer, attn in enumerate(attentions):
        for head in range(attn.shape[1]):
            a = attn[0, head].numpy().astype(np.float32)  # upstream's per-head copy
            matrices[(layer, head)] = compute_averaged_matrix(a, bounds)
    averaging_s = time.perf_counter() - t0

    if args.out:
        text_id = hashlib.sha256((text + "|||" + "|||".join(sentences)).encode()).hexdigest()[:16]
        out_dir = Path(args.out) / "smollm2-135m" / text_id
        out_dir.mkdir(parents=True, exist_ok=True)
        for (layer, head), m in matrices.items():
            np.save(out_dir / f"{layer}_{head}.npy", m)

    checksum = float(sum(float(m.astype(np.float64).sum()) for m in matrices.values()))
    print(json.dumps({
        "what": "HF transformers eager f32 forward with output_attentions + upstream numpy sentence averaging",
        "model": GGUF_FILE,
        "input": args.inputs or str(args.trace),
        "token_ids_from": "thoughtscope export" if same_tokens else "HF tokenizer",
        "n_tokens": int(inputs["input_ids"].shape[1]),
        "tokens": int(inputs["input_ids"].shape[1]),
        "n_sentences": len(sentences),
        "layers_x_heads": len(matrices),
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "boundaries_s": round(boundaries_s, 2),
        "forward_s": round(forward_s, 2),
        "averaging_s": round(averaging_s, 2),
        "forward_plus_averaging_s": round(forward_s + averaging_s, 2),
        "peak_rss_gb_before_forward": round(rss_before_forward, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "sum_of_all_sentence_matrices": checksum,
        "torch_matmul": torch_matmul,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
    }, indent=1))


if __name__ == "__main__":
    main()
