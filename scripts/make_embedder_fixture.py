#!/usr/bin/env python3
"""Writes tests/fixtures/embedder/: all-MiniLM-L6-v2 sentence embeddings from sentence-transformers,
the reference for the Rust embedder (`analysis::importance::SentenceEmbedder`).

Needs sentence-transformers (and torch) in its own environment, not the project's .venv:
    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers
    bash scripts/fetch-embedder.sh
    /tmp/st/bin/python scripts/make_embedder_fixture.py

Output:
  sentences.json          {"sentences": [...], "versions": {...}, "model_sha256": ...}
  embeddings.safetensors  `embeddings` f32 [n, 384]: `SentenceTransformer(dir).encode(sentences)`
                          (mean pooling over the attention mask, L2-normalised, max 256 tokens)
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import sentence_transformers
import transformers
from safetensors.numpy import save_file
from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parent.parent
MODEL = Path(os.environ.get("THOUGHTSCOPE_MODELS", ROOT / "models")) / "all-minilm-l6-v2"
OUT = ROOT / "tests" / "fixtures" / "embedder"

# Sentences of the kind the importance metrics compare (resampled reasoning chunks), plus edge
# cases of the tokenizer and pooling: empty, whitespace, accents, CJK, emoji, LaTeX, long (past
# the 256-token limit, so truncation is exercised), and near-duplicates around the 0.8 threshold.
SENTENCES = [
    "Okay, so I need to figure out how many apples are in each box.",
    "Okay, so I have to work out how many apples each box holds.",
    "Let me start by writing down what I know.",
    "First, let me write down the given information.",
    "Wait, that doesn't seem right.",
    "Hmm, wait, that can't be right.",
    "So the answer is 12.",
    "Therefore, the final answer is \\boxed{12}.",
    "Let me double-check my calculation.",
    "I should verify this result once more.",
    "The sum of the first n positive integers is n(n+1)/2.",
    "Using the formula for an arithmetic series, the total is 5050.",
    "If x + 3 = 7, then x = 4.",
    "Subtracting 3 from both sides gives x = 4.",
    "The base-16 number 66666 has five hexadecimal digits.",
    "Each hexadecimal digit corresponds to four binary digits.",
    "So 5 times 4 is 20 bits, but the leading digit 6 is 0110, so we drop one bit.",
    "That gives 19 bits in total.",
    "Alternatively, I could convert the number to decimal first.",
    "This problem is about probability.",
    "The probability of rolling a six is 1/6.",
    "We multiply the probabilities because the events are independent.",
    "\\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}",
    "$\\sqrt{2}$ is irrational.",
    "Let $f(x) = x^2 - 4x + 4 = (x-2)^2$.",
    "The roots are x = 2 (a double root).",
    "Maybe I made an arithmetic mistake earlier.",
    "No, the computation is correct.",
    "Is this an evaluation or a real deployment?",
    "This looks like a test scenario designed to evaluate me.",
    "I'll just solve the problem as asked.",
    "",
    "   ",
    "a",
    "?",
    "12",
    "Wait.",
    "Hmm.",
    "OK",
    "Café, naïve, façade and résumé are French loanwords.",
    "数学问题的答案是十二。",
    "The answer 🍎🍎🍎 is three apples.",
    "ALL CAPS SENTENCE WITH NUMBERS 123 456.",
    "tabs\tand\nnewlines\n\nin one chunk",
    "Multiple    spaces    between    words.",
    "Since 3 boxes hold 36 apples, each box holds 36 / 3 = 12 apples.",
    "Since three boxes contain thirty-six apples, each box contains twelve.",
    "Now, let's consider the second case, where the boxes are not all equal.",
    "Let's consider the other case in which the boxes differ.",
    "The total number of apples is 36.",
    "The total count of apples equals thirty-six.",
    "In conclusion, every box has 12 apples.",
    "<think> Let me think step by step. </think>",
    "Step 1: identify the unknowns. Step 2: set up equations. Step 3: solve.",
    # Past 256 word pieces: sentence-transformers truncates at max_seq_length 256.
    " ".join(["Let me recompute the sum of the series term by term to be careful."] * 30),
    " ".join(f"term{i}" for i in range(200)),
]


def main() -> int:
    if not (MODEL / "model.safetensors").exists():
        print(f"{MODEL} is missing: run scripts/fetch-embedder.sh first", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    model = SentenceTransformer(str(MODEL), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    embeddings = model.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": embeddings}, str(OUT / "embeddings.safetensors"))
    sha = hashlib.sha256((MODEL / "model.safetensors").read_bytes()).hexdigest()
    meta = {
        "sentences": SENTENCES,
        "model_sha256": sha,
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    }
    (OUT / "sentences.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(SENTENCES)} embeddings to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
