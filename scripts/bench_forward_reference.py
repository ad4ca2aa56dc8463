#!/usr/bin/env python3
"""Python reference for the model bench: what upstream thought-anchors does for one text.

SmolLM2-135M from its GGUF in HF transformers (eager attention, f32), one forward pass with
`output_attentions=True` over a real trace's full_cot, then every layer x head reduced to the
sentence matrix with upstream's numpy loop (`_compute_averaged_matrix`). Sentences and token
boundaries are derived the upstream way (split_solution_keep_spacing, prefix tokenisation).
With --inputs (written by `thoughtscope bench forward --export-inputs`) it runs on the Rust run's
exact token ids and boundaries, so both sides do the same computation and their checksums agree.
Prints one JSON object: wall times of each phase and the peak RSS of the process, and torch's
matmul rate on the model's linear shapes and a 2048^3 square (the Rust bench's roofline takes
the best GEMM it finds on the host).

--pipeline blockwise is the same computation done the way a strong PyTorch user would:
the forward through SDPA (no T x T attention kept), and in each layer the attention
probabilities recomputed a block of query rows at a time (all heads at once, softmax in f32) and
reduced to sentences right away with torch segment sums, so only a head x sentence x sentence
matrix per layer is kept. The matrices are upstream's block means, the same as --pipeline eager
gives (to float32 rounding), and the JSON has the same fields plus "pipeline".

Run: .venv/bin/python scripts/bench_forward_reference.py [--tokens 3000] [--pipeline eager|blockwise] [--out DIR]
Memory (eager): the attention outputs alone are 30 x 9 x T^2 x 4 bytes (9.7 GB at T = 3000);
blockwise keeps a few 9 x rows x T score blocks at a time (28 MB each at 256 rows, T = 3000).
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


class BlockwiseSentenceAttention:
    """An attention function for transformers' AttentionInterface: the layer's output through SDPA
    (or, with output="fused", from the same probability blocks), and its attention probabilities
    recomputed `block_rows` query rows at a time and reduced to upstream's sentence matrices
    (compute_averaged_matrix: mean over sentence i's token rows x sentence j's token columns,
    ranges clipped to T-1, causal zeros included, zero where a range is empty).

    The token axis is cut into elementary segments at every clipped sentence bound and every block
    edge, so a block's rows and its keys [0, block end) are whole segments: each block is summed
    over row segments, then key segments (torch.segment_reduce, f32), into a head x segment x
    segment f64 table; at the layer's end a 0/1 sentence-to-segment matrix turns that into block
    sums (no cancellation, overlapping or gapped bounds allowed), divided by the pair's size."""

    name = "thoughtscope_blockwise"

    def __init__(self, n_tokens, bounds, block_rows=256, output="sdpa"):
        self.n_tokens, self.output = n_tokens, output
        t_last = n_tokens - 1
        clipped = [(min(a, t_last), min(b, t_last)) for a, b in bounds]
        block_starts = list(range(0, n_tokens, block_rows))
        cuts = sorted({0, n_tokens, *block_starts, *(x for ab in clipped for x in ab)})
        index = {c: i for i, c in enumerate(cuts)}
        self.segment_lengths = torch.tensor(np.diff(cuts), dtype=torch.long)
        self.n_segments = len(cuts) - 1
        # (first row, end row, first row segment, end row segment) per block
        self.blocks = [(s, min(s + block_rows, n_tokens), index[s], index[min(s + block_rows, n_tokens)])
                       for s in block_starts]
        self.membership = torch.zeros(len(bounds), self.n_segments, dtype=torch.float64)
        for i, (a, b) in enumerate(clipped):
            if a < b:
                self.membership[i, index[a]:index[b]] = 1.0
        sizes = torch.tensor([max(b - a, 0) for a, b in clipped], dtype=torch.float64)
        self.pair_sizes = sizes[:, None] * sizes[None, :]
        self.future = torch.ones(block_rows, block_rows, dtype=torch.bool).triu(1)  # key after query
        self.matrices = {}  # layer -> heads x N x N float32
        self.probabilities_s = 0.0

    def __call__(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        batch, heads, n_tokens, head_dim = query.shape
        if batch != 1 or n_tokens != self.n_tokens or attention_mask is not None:
            raise ValueError(f"{self.name}: expects one unpadded sequence of {self.n_tokens} tokens "
                             f"(got batch {batch}, {n_tokens} tokens, mask {attention_mask is not None})")
        scaling = module.scaling if scaling is None else scaling
        if self.output == "sdpa":
            from transformers.integrations.sdpa_attention import sdpa_attention_forward
            attn_output, _ = sdpa_attention_forward(module, query, key, value, None, dropout=dropout,
                                                    scaling=scaling, **kwargs)
        t0 = time.perf_counter()
        # GQA without repeat_kv: the query heads sharing a key/value head become extra rows of
        # one product (heads = kv_heads x groups, head h reads kv head h // groups, as repeat_kv).
        kv_heads = key.shape[1]
        groups = heads // kv_heads
        q = query[0].view(kv_heads, groups, n_tokens, head_dim)
        k, v = key[0], value[0]
        table = torch.zeros(heads, self.n_segments, self.n_segments, dtype=torch.float64)
        if self.output == "fused":
            fused = torch.empty(heads, n_tokens, head_dim, dtype=query.dtype)
        for start, end, seg_start, seg_end in self.blocks:
            rows = end - start
            # Keys after the block's last row are masked for every row: leave them out.
            scores = torch.matmul(q[:, :, start:end].reshape(kv_heads, groups * rows, head_dim),
                                  k[:, :end].transpose(1, 2)).view(heads, rows, end)
            scores.mul_(scaling)
            scores[:, :, start:].masked_fill_(self.future[:rows, :rows], float("-inf"))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
            del scores
            if self.output == "fused":
                fused[:, start:end] = torch.matmul(probs.view(kv_heads, groups * rows, end),
                                                   v[:, :end]).view(heads, rows, head_dim)
            by_rows = torch.segment_reduce(probs, "sum", axis=1, unsafe=True,
                                           lengths=self.segment_lengths[seg_start:seg_end].expand(heads, -1))
            del probs
            by_both = torch.segment_reduce(by_rows, "sum", axis=2, unsafe=True,
                                           lengths=self.segment_lengths[:seg_end].expand(heads, seg_end - seg_start, -1))
            table[:, seg_start:seg_end, :seg_end] += by_both
        sums = self.membership @ table @ self.membership.T
        means = torch.where(self.pair_sizes > 0, sums / self.pair_sizes.clamp(min=1.0), 0.0)
        self.matrices[module.layer_idx] = means.to(torch.float32)
        if self.output == "fused":
            attn_output = fused.transpose(0, 1).unsqueeze(0).contiguous()  # batch x tokens x heads x head_dim
        self.probabilities_s += time.perf_counter() - t0
        return attn_output, None


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
    parser.add_argument("--pipeline", choices=["eager", "blockwise"], default="eager",
                        help="eager: output_attentions + upstream's numpy loop (upstream's own way); blockwise: "
                             "SDPA forward, probabilities recomputed per block of query rows and reduced in torch")
    parser.add_argument("--block-rows", type=int, default=256, help="blockwise: query rows per block")
    parser.add_argument("--blockwise-output", choices=["sdpa", "fused"], default="sdpa",
                        help="blockwise: the layer output from SDPA (default), or from the recomputed blocks' "
                             "probabilities (one attention computation instead of two)")
    parser.add_argument("--out", help="also write the L x H sentence matrices as upstream's "
                                      "<out>/smollm2-135m/<text_id>/<l>_<h>.npy")
    args = parser.parse_args()
    if args.block_rows < 1:
        parser.error("--block-rows must be at least 1")

    from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    import transformers

    blockwise = args.pipeline == "blockwise"
    attention = None  # the BlockwiseSentenceAttention, made once the tokens are known

    def blockwise_attention(*a, **kw):
        return attention(*a, **kw)

    if blockwise:
        AttentionInterface.register(BlockwiseSentenceAttention.name, blockwise_attention)
        # SDPA's mask rules: none for one unpadded sequence (causal by construction), else a mask we refuse.
        AttentionMaskInterface.register(BlockwiseSentenceAttention.name, sdpa_mask)

    t0 = time.perf_counter()
    model_dir = MODELS / "smollm2-135m"
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file=GGUF_FILE, dtype=torch.float32,
        attn_implementation=BlockwiseSentenceAttention.name if blockwise else "eager").eval()
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
    n_tokens = int(inputs["input_ids"].shape[1])
    if blockwise:
        attention = BlockwiseSentenceAttention(n_tokens, bounds, args.block_rows, args.blockwise_output)
        t0 = time.perf_counter()
        with torch.no_grad():
            model(**inputs, return_dict=True, use_cache=False, output_hidden_states=False)
        forward_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        matrices = {(layer, head): m[head].numpy()
                    for layer, m in sorted(attention.matrices.items()) for head in range(m.shape[0])}
        averaging_s = time.perf_counter() - t0
    else:
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
    if blockwise:
        what = (f"HF transformers f32 forward, attention output from {'SDPA' if args.blockwise_output == 'sdpa' else 'the recomputed blocks'}"
                f"; attention probabilities recomputed per {args.block_rows} query rows and reduced to sentence means in torch")
    else:
        what = "HF transformers eager f32 forward with output_attentions + upstream numpy sentence averaging"
    report = {
        "what": what,
        "pipeline": args.pipeline,
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
    }
    if blockwise:
        report["blockwise"] = {"block_rows": args.block_rows, "output": args.blockwise_output,
                               "probabilities_and_reduction_s": round(attention.probabilities_s, 2)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
