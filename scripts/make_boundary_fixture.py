#!/usr/bin/env python3
"""Write tests/fixtures/analysis/boundaries_smollm2.json: sentence token boundaries computed with
HF transformers the upstream way (`attn_funcs.py` `get_sentence_token_boundaries`: prefix tokenisation,
`len(tokenizer.encode(text[:c]))`), plus the corrected boundaries from the full tokenisation's
offsets (a token belongs to the sentence holding its first non-space character), for one real
trace (qwen-14b correct problem_2238) and the SmolLM2 tokenizer loaded from its GGUF.

    bash scripts/fetch-model.sh && .venv/bin/python scripts/make_boundary_fixture.py

Note: transformers converts the GGUF tokenizer with a plain ByteLevel pre-tokenizer (no Digits
split), unlike SmolLM2's own tokenizer.json; the Rust test rebuilds that variant to compare.
Sentences come from `thoughtscope segment` (verified separately against upstream's splitter).
"""
import json
import subprocess
from pathlib import Path

from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "../shared/data/thought-anchors-traces/deepseek-r1-distill-qwen-14b/correct_base_solution/problem_2238"
OUT = ROOT / "tests" / "fixtures" / "analysis" / "boundaries_smollm2.json"


def main():
    host = subprocess.run(["rustc", "--print", "host-tuple"], check=True, capture_output=True, text=True).stdout.strip()
    cli = ROOT / "target" / host / "debug" / "thoughtscope"  # .cargo/config.toml: build.target
    seg = json.loads(subprocess.run([str(cli), "segment", str(TRACE), "--json"],
                                    check=True, capture_output=True, text=True).stdout)
    text = json.loads((TRACE / "base_solution.json").read_text())["full_cot"]
    tok = AutoTokenizer.from_pretrained(str(ROOT / "models/smollm2-135m"), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")

    prefix = []
    for start, end in seg["ranges"]:
        tok_start = 0 if start == 0 else len(tok.encode(text[:start]))
        prefix.append([tok_start, len(tok.encode(text[:end]))])

    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    anchors = []
    for s, e in enc["offset_mapping"]:
        anchors.append(next((c for c in range(s, e) if not text[c].isspace()), s))
    offsets = []
    for start, end in seg["ranges"]:
        inside = [i for i, a in enumerate(anchors) if start <= a < end]
        if inside:
            offsets.append([inside[0], inside[-1] + 1])
        else:
            before = sum(1 for a in anchors if a < start)
            offsets.append([before, before])

    OUT.write_text(json.dumps({
        "trace": "deepseek-r1-distill-qwen-14b/correct_base_solution/problem_2238",
        "tokenizer": "SmolLM2-135M-Instruct.Q4_1.gguf via transformers (ByteLevel pre-tokenizer, no BOS)",
        "text_id": seg["text_id"],
        "n_tokens": len(tok.encode(text)),
        "prefix": prefix,
        "offsets": offsets,
    }))
    shifted = sum(1 for k in range(1, len(prefix)) if prefix[k][0] != offsets[k][0])
    print(f"wrote {OUT}: {len(prefix)} sentences, {shifted} of {len(prefix) - 1} boundaries shifted")


if __name__ == "__main__":
    main()
