#!/usr/bin/env python3
"""Batched llama.cpp reference for `scripts/bench-resample.sh`: what `thoughtscope resample
--provider local` does, done with llama.cpp's own batched decoding (llama-cpp-python's low-level
API, the library scripts/install-llama-cpp.sh builds), so the bench compares decoders and not one
batched engine against a server that decodes one request at a time.

For each chunk: the chunk's prompt is tokenised and prefilled once (sequence 0), its KV cache
copied to sequences 1..K-1 (`llama_memory_seq_cp`; in the default unified KV cache this shares the
prompt's cells rather than copying them), then the K continuations decode together: one
`llama_decode` of one token per live sequence per step, a finished sequence dropped from the batch
and its cells freed. Each row samples with its own sampler chain, temperature then top-p then a
draw from its own seeded stream, which is the order `resample` applies them in (HF's warpers;
llama.cpp's command-line tools put top-p before temperature). A row stops at the tokens `resample`
stops at (the vocabulary's EOS, <|im_end|>, <|endoftext|>, ...) or at `--max-tokens`; its stop token
counts as a new token, as in `resample`.

The prompts are read from a `resample` output (`--prompts-from ROOT/<problem>`): in each
`chunk_<i>/solutions.json`, `full_cot` is the prompt followed by `rollout`, so the prompt is
exactly the text `resample` decoded from. Like `prompt_ids` in thoughtscope, a prompt that begins
with the BOS token's text is tokenised without adding special tokens.

Rate: new tokens over each chunk's wall time, tokenising, prefill, decoding, sampling and
detokenising included (model load and context creation are not, as `resample` does not count its
model load), summed over the chunks. Prints one line per chunk and then
"<rate> new tokens/s (...)", the line the bench reads.

Run: .venv/bin/python scripts/llama_batched_reference.py --model GGUF --prompts-from DIR \
       [--rollouts 16] [--max-tokens 64] [--temperature 0.6] [--top-p 0.95] [--seed 44] \
       [--threads 2] [--kv unified|per-sequence] [--flash-attn auto|on|off]
"""
import argparse
import ctypes
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import llama_cpp as llama

# The tokens `thoughtscope resample` stops at besides the vocabulary's EOS (rollout::generate::stop_tokens).
STOP_TEXTS = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>"]
GGML_LOG_LEVEL_ERROR = 4


@llama.llama_log_callback
def _errors_only(level, text, _user_data):
    if level == GGML_LOG_LEVEL_ERROR:
        sys.stderr.write(text.decode("utf-8", "replace"))


def read_prompts(problem_out: Path):
    """(chunk index, prompt) of every chunk_<i>/solutions.json under a resample output folder."""
    prompts = []
    for chunk_dir in problem_out.glob("chunk_*"):
        match = re.fullmatch(r"chunk_(\d+)", chunk_dir.name)
        solutions = chunk_dir / "solutions.json"
        if not match or not solutions.is_file():
            continue
        records = json.loads(solutions.read_text())
        if not records:
            sys.exit(f"{solutions}: no rollouts to take the prompt from")
        full_cot, rollout = records[0].get("full_cot"), records[0].get("rollout")
        if not isinstance(full_cot, str) or not isinstance(rollout, str) or not full_cot.endswith(rollout):
            sys.exit(f"{solutions}: record 0: full_cot does not end with rollout; cannot recover the prompt")
        prompts.append((int(match.group(1)), full_cot[: len(full_cot) - len(rollout)]))
    if not prompts:
        sys.exit(f"{problem_out}: no chunk_<i>/solutions.json (give the folder `resample` wrote for the problem)")
    return sorted(prompts)


def tokenize(vocab, text: str, add_special: bool):
    data = text.encode("utf-8")
    capacity = len(data) + 8
    tokens = (llama.llama_token * capacity)()
    n = llama.llama_tokenize(vocab, data, len(data), tokens, capacity, add_special, True)
    if n < 0:
        sys.exit(f"tokenizing a prompt of {len(data)} bytes needs {-n} tokens, more than {capacity}")
    return list(tokens[:n])


def detokenize(vocab, ids):
    if not ids:
        return ""
    tokens = (llama.llama_token * len(ids))(*ids)
    capacity = 16 * len(ids) + 64
    buffer = ctypes.create_string_buffer(capacity)
    n = llama.llama_detokenize(vocab, tokens, len(ids), buffer, capacity, True, False)
    if n < 0:
        sys.exit(f"detokenizing {len(ids)} tokens needs {-n} bytes")
    return buffer.raw[:n].decode("utf-8", "replace")


def token_text(vocab, token: int) -> str:
    buffer = ctypes.create_string_buffer(256)
    n = llama.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
    return buffer.raw[: max(n, 0)].decode("utf-8", "replace")


def stop_tokens(vocab):
    stop = {llama.llama_vocab_eos(vocab)}
    for text in STOP_TEXTS:
        ids = tokenize(vocab, text, False)
        if len(ids) == 1 and llama.llama_vocab_is_control(vocab, ids[0]):
            stop.add(ids[0])
    stop.discard(-1)
    return stop


def rollout_seed(seed: int, chunk: int, rollout: int) -> int:
    """A 32-bit seed per (seed, chunk, rollout): every row its own stream (not resample's values)."""
    digest = hashlib.blake2b(f"{seed}/{chunk}/{rollout}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def make_sampler(temperature: float, top_p: float, seed: int):
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
    if temperature <= 0:
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
        return chain
    llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(temperature))
    llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(top_p, 1))
    llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(seed))
    return chain


def set_token(batch, i: int, token: int, pos: int, seq: int, logits: bool):
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = 1 if logits else 0


def decode(ctx, batch, what: str):
    status = llama.llama_decode(ctx, batch)
    if status != 0:
        sys.exit(f"llama_decode failed ({what}): status {status}")


def resample_chunk(ctx, vocab, stop, prompt_ids, chunk, args, batch):
    """Decode K continuations of one prompt; returns the new token count."""
    memory = llama.llama_get_memory(ctx)
    llama.llama_memory_clear(memory, True)
    k, n_prompt = args.rollouts, len(prompt_ids)
    # Prefill once, in pieces of the context's batch size, logits for the last token only.
    for start in range(0, n_prompt, args.n_batch):
        piece = prompt_ids[start : start + args.n_batch]
        for j, token in enumerate(piece):
            set_token(batch, j, token, start + j, 0, start + j == n_prompt - 1)
        batch.n_tokens = len(piece)
        decode(ctx, batch, "prefill")
    for row in range(1, k):
        llama.llama_memory_seq_cp(memory, 0, row, -1, -1)

    samplers = [make_sampler(args.temperature, args.top_p, rollout_seed(args.seed, chunk, r)) for r in range(k)]
    ids = [[] for _ in range(k)]
    budget = min(args.max_tokens, args.n_ctx_seq - n_prompt)
    # Each row draws its first token from the prompt's last logits (batch index of that token).
    first = (n_prompt - 1) % args.n_batch
    live = []
    for r in range(k):
        token = llama.llama_sampler_sample(samplers[r], ctx, first)
        ids[r].append(token)
        if token not in stop and len(ids[r]) < budget:
            live.append(r)
        else:
            llama.llama_memory_seq_rm(memory, r, -1, -1)
    while live:
        for j, r in enumerate(live):
            set_token(batch, j, ids[r][-1], n_prompt + len(ids[r]) - 1, r, True)
        batch.n_tokens = len(live)
        decode(ctx, batch, "decode step")
        still = []
        for j, r in enumerate(live):
            token = llama.llama_sampler_sample(samplers[r], ctx, j)
            ids[r].append(token)
            if token not in stop and len(ids[r]) < budget:
                still.append(r)
            else:
                llama.llama_memory_seq_rm(memory, r, -1, -1)
        live = still
    for r in range(k):
        text_ids = ids[r][:-1] if ids[r][-1] in stop else ids[r]
        detokenize(vocab, text_ids)  # the text, as resample makes it (its cost counts)
        llama.llama_sampler_free(samplers[r])
    return sum(len(row) for row in ids)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--prompts-from", required=True, type=Path, help="a resample output folder ROOT/<problem>")
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=44)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--kv",
        choices=["unified", "per-sequence"],
        default="unified",
        help="unified: one KV buffer, the prompt's cells shared by the K sequences (what llama.cpp's "
        "batched example does); per-sequence: a stream per sequence, the prompt's cells copied",
    )
    parser.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    parser.add_argument(
        "--extra-buffers",
        action="store_true",
        help="let llama.cpp repack the weights into its extra buffer types (AMX on CPUs that have it; "
        "llama-cpp-python 0.3.36's AMX matmul segfaults on this Q4_1 GGUF as soon as a batch has "
        "more than a few tokens)",
    )
    args = parser.parse_args()
    if args.rollouts < 1 or args.max_tokens < 1:
        sys.exit("--rollouts and --max-tokens must be at least 1")

    llama.llama_log_set(_errors_only, ctypes.c_void_p())
    llama.llama_backend_init()
    model_params = llama.llama_model_default_params()
    model_params.use_extra_bufts = args.extra_buffers
    model = llama.llama_model_load_from_file(str(args.model).encode(), model_params)
    if not model:
        sys.exit(f"{args.model}: llama.cpp could not load it")
    vocab = llama.llama_model_get_vocab(model)
    stop = stop_tokens(vocab)
    bos = llama.llama_vocab_bos(vocab)
    bos_text = token_text(vocab, bos) if bos >= 0 else ""

    chunks = []
    for chunk, prompt in read_prompts(args.prompts_from):
        add_special = not (bos_text and prompt.startswith(bos_text))
        chunks.append((chunk, tokenize(vocab, prompt, add_special)))
    longest = max(len(ids) for _, ids in chunks)
    n_ctx_train = llama.llama_model_n_ctx_train(model)
    args.n_ctx_seq = min(longest + args.max_tokens, n_ctx_train)
    if longest >= args.n_ctx_seq:
        sys.exit(f"a prompt has {longest} tokens, the model's context is {n_ctx_train}: no room for a continuation")

    params = llama.llama_context_default_params()
    unified = args.kv == "unified"
    # Unified: the prompt's cells once plus every row's new tokens; per sequence: a whole context each.
    params.n_ctx = longest + args.rollouts * args.max_tokens if unified else args.rollouts * args.n_ctx_seq
    params.n_ctx = (params.n_ctx + 255) // 256 * 256
    params.n_seq_max = args.rollouts
    params.kv_unified = unified
    params.n_threads = args.threads
    params.n_threads_batch = args.threads
    params.flash_attn_type = {
        "auto": llama.LLAMA_FLASH_ATTN_TYPE_AUTO,
        "on": llama.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        "off": llama.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }[args.flash_attn]
    params.no_perf = True
    ctx = llama.llama_init_from_model(model, params)
    if not ctx:
        sys.exit(f"llama.cpp could not create a context of {params.n_ctx} tokens for {args.rollouts} sequences")
    args.n_batch = llama.llama_n_batch(ctx)
    batch = llama.llama_batch_init(max(args.n_batch, args.rollouts), 0, 1)

    total_tokens, total_seconds = 0, 0.0
    for chunk, prompt_ids in chunks:
        started = time.perf_counter()
        new_tokens = resample_chunk(ctx, vocab, stop, prompt_ids, chunk, args, batch)
        seconds = time.perf_counter() - started
        total_tokens += new_tokens
        total_seconds += seconds
        print(f"chunk_{chunk}\tprompt {len(prompt_ids)} tokens\t{new_tokens} new tokens in {seconds:.1f} s", flush=True)
    llama.llama_batch_free(batch)
    llama.llama_free(ctx)
    llama.llama_model_free(model)
    print(
        f"{total_tokens / total_seconds:.1f} new tokens/s (llama.cpp {llama.__version__} batched: "
        f"{args.rollouts} sequences per decode step, {args.threads} threads, KV {args.kv}, "
        f"flash attention {args.flash_attn})"
    )


if __name__ == "__main__":
    main()
