#!/usr/bin/env python3
"""Reference for `thoughtscope::attention::suppression`, written for this project.

HF transformers, eager attention, f32. Suppressing source sentence s = keys [a, b) is done with a
4-D additive attention mask passed to the model, so every layer sees it:
    mask[q, k] = -inf           for a future key (k > q),
                 finfo(f32).min for a visible key in [a, b),
                 0              otherwise.
Added to the scaled scores, `score + finfo.min` rounds to finfo.min, which is what thought-anchors'
hook writes; a query whose every visible key is suppressed then spreads its attention evenly over
them. Each position's logits are compressed as upstream's `compress_logits_top_p` (softmax at
T = 0.6, sort, cumsum, `searchsorted(p) + 1`, at most 100, raw logits kept as f16), and
KL(unsuppressed || suppressed) is taken over the union of kept tokens (missing = -1e9) at
T = 0.6 in float64, negative values clipped to 0.

Writes tests/fixtures/suppression/{smollm2,tiny_qwen3}.json: ids, ranges, per-source per-token KL
(faithful compression) and the full-vocabulary KL (no compression, a smooth function of the logits
used for a tight comparison), and the N x N matrix of mean log(KL + 1e-9), rows = target.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/suppression_reference.py
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/suppression"
GGUF_DIR = REPO / "models/smollm2-135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOP_P, MAX_K, TEMPERATURE, EPS = 0.9999, 100, 0.6, 1e-9

CHUNKS = [
    "Let me find the sum of the first five odd numbers.",
    "The odd numbers are 1, 3, 5, 7 and 9.",
    "Adding them gives 1 + 3 = 4, then 4 + 5 = 9.",
    "Next, 9 + 7 = 16, and 16 + 9 = 25.",
    "Wait, that is a perfect square.",
    "Indeed, the sum of the first n odd numbers is n squared.",
    "So the answer is 25.",
]


def suppression_mask(t, a, b):
    mask = torch.zeros(t, t, dtype=torch.float32)
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    mask[:, a:b] = torch.finfo(torch.float32).min
    mask[future] = float("-inf")
    return mask[None, None]


@torch.no_grad()
def logits_of(model, ids, mask=None):
    input_ids = torch.tensor([ids])
    if mask is None:
        return model(input_ids=input_ids).logits[0].float()
    return model(input_ids=input_ids, attention_mask=mask).logits[0].float()


def compress(row):
    probs = torch.softmax(row / TEMPERATURE, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    cum = torch.cumsum(sorted_probs, dim=0)
    k = min(int(torch.searchsorted(cum, TOP_P, right=False).item()) + 1, MAX_K)
    k = max(1, min(k, row.numel()))
    ids = order[:k].numpy().astype(np.int64)
    return ids, row[order[:k]].numpy().astype(np.float16).astype(np.float64)


def sparse_kl(p, q):
    union = np.union1d(p[0], q[0])

    def spread(c):
        x = np.full(len(union), -1e9)
        x[np.searchsorted(union, c[0])] = c[1]
        x = x / TEMPERATURE
        return x - (x.max() + np.log(np.exp(x - x.max()).sum()))

    lp, lq = spread(p), spread(q)
    prob = np.exp(lp)
    terms = np.where(prob == 0, 0.0, prob * (lp - lq))
    return max(float(terms.sum()), 0.0)


def full_kl(base, supp):
    lp = torch.log_softmax(base.double() / TEMPERATURE, dim=-1)
    lq = torch.log_softmax(supp.double() / TEMPERATURE, dim=-1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp(min=0).tolist()


def reference(model, ids, ranges, name, extra):
    t = len(ids)
    base = logits_of(model, ids)
    base_c = [compress(base[i]) for i in range(t)]
    kl, kl_full = [], []
    for a, b in ranges:
        supp = logits_of(model, ids, suppression_mask(t, a, b))
        kl.append([sparse_kl(base_c[i], compress(supp[i])) for i in range(t)])
        kl_full.append(full_kl(base, supp))
    n = len(ranges)
    matrix = [[None] * n for _ in range(n)]
    for s in range(n):
        logs = [math.log(k + EPS) for k in kl[s]]
        for target, (a, b) in enumerate(ranges):
            a, b = min(a, t), min(b, t)
            matrix[target][s] = float(np.mean(logs[a:b])) if a < b else None
    out = {
        "model": name,
        "ids": ids,
        "ranges": ranges,
        "top_p": TOP_P,
        "max_tokens": MAX_K,
        "temperature": TEMPERATURE,
        "log_epsilon": EPS,
        "kl": kl,
        "kl_full_vocab": kl_full,
        "matrix": matrix,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        **extra,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {path.relative_to(REPO)}: T={t}, N={n}")


def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (GGUF_DIR / GGUF_FILE).is_file():
        sys.exit(f"{GGUF_DIR / GGUF_FILE} missing: run scripts/fetch-model.sh")
    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        GGUF_DIR, gguf_file=GGUF_FILE, attn_implementation="eager", dtype=torch.float32
    ).eval()
    text = "\n".join(CHUNKS)
    ids = tok(text)["input_ids"]
    # Upstream's prefix boundaries: tok_start = len(encode(text[:start])) (0 at char 0),
    # tok_end = len(encode(text[:end])).
    ranges, start = [], 0
    for chunk in CHUNKS:
        end = start + len(chunk)
        a = 0 if start == 0 else len(tok(text[:start])["input_ids"])
        ranges.append([a, len(tok(text[:end])["input_ids"])])
        start = end + 1
    reference(model, ids, ranges, "smollm2", {"chunks": CHUNKS, "gguf": GGUF_FILE})


def tiny_qwen3():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        REPO / "tests/fixtures/tiny-qwen3", attn_implementation="eager", dtype=torch.float32
    ).eval()
    ids = [(i * 37 + 5) % model.config.vocab_size for i in range(40)]
    # Position 0 starts the first range, so the all-suppressed rows are covered too.
    ranges = [[0, 6], [6, 13], [13, 21], [21, 30], [30, 40]]
    reference(model, ids, ranges, "tiny_qwen3", {"head_dim": model.config.head_dim})


if __name__ == "__main__":
    torch.manual_seed(0)
    smollm2()
    tiny_qwen3()
