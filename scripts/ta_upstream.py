"""Upstream thought-anchors sentence handling, re-expressed in Python for reference numbers
(thought-anchors `utils.py`, `attn_funcs.py`). Used by make_fixtures.py and
bench_forward_reference.py. Written from the spec's description; quirks are kept on purpose:
the dropped last chunk, the `last + k` stop in get_chunk_ranges, prefix
tokenisation of boundaries and the T-1 clipping of _compute_averaged_matrix."""
import re

import numpy as np


def split_solution_keep_spacing(text):
    """Sentences as exact substrings of `text`, each with its trailing whitespace (split_solution_keep_spacing).
    Returns (sentences, number of chunks located by the fallback search)."""
    ranges, fallbacks = chunk_ranges(text, split_into_chunks(text))
    return [text[a:b] for a, b in ranges], fallbacks


def split_into_chunks(text):
    """Upstream split_solution_into_chunks (utils.py at HEAD)."""
    if "<think>" in text:
        text = text.split("<think>")[1].strip()
    if "</think>" in text:
        text = text.split("</think>")[0].strip()
    chunks, cur = [], ""
    for i, ch in enumerate(text):
        cur += ch
        paragraph = text[i:i + 2] == "\n\n" or text[i:i + 4] == "\r\n\r\n"
        sentence = i < len(text) - 1 and ch in ".?!" and text[i + 1] in " \n"
        if (paragraph or sentence) and cur.strip():
            chunks.append(cur.strip())
            cur = ""
    # the remainder after the last boundary is dropped (upstream HEAD quirk)
    i = 0
    while i < len(chunks):
        if len(chunks[i]) >= 10:
            i += 1
            continue
        if i == len(chunks) - 1:
            if i > 0:
                chunks[i - 1] += " " + chunks[i]
                chunks.pop(i)
        else:
            chunks[i + 1] = chunks[i] + " " + chunks[i + 1]
            chunks.pop(i)
        if i == 0 and len(chunks) == 1:
            break
    return chunks


def chunk_ranges(text, chunks):
    """Upstream get_chunk_ranges (utils.py; incl. the `last + k` stop quirk)."""
    ranges, pos, fallbacks = [], 0, 0
    for chunk in chunks:
        start = text.find(chunk, pos)
        if start == -1:
            fallbacks += 1
            start = fallback_find(text, chunk, pos)
            if start == -1:
                continue
        content = re.sub(r"\s+", "", chunk)
        window = re.sub(r"\s+", "", text[start:start + len(chunk) + 50])
        matched = 0
        while matched < min(len(content), len(window)) and content[matched] == window[matched]:
            matched += 1
        last, seen = start, 0
        for k in range(len(text) - start):
            if last + k >= len(text):
                break
            if not text[start + k].isspace():
                seen += 1
            if seen > matched:
                break
            last = start + k
        ranges.append((start, last + 1))
        pos = last + 1
    return ranges, fallbacks


def fallback_find(text, chunk, pos):
    norm = re.sub(r"\s+", " ", chunk).strip()
    first_word = norm.split()[0]
    for i in range(pos, len(text) - len(norm)):
        if re.sub(r"\s+", " ", text[i:i + len(norm) + 20]).strip().startswith(norm):
            return i
        if i == pos + 100:
            for j in range(pos, len(text) - 10):
                if re.match(r"\b" + re.escape(first_word) + r"\b", text[j:j + len(first_word) + 5]) and \
                        re.sub(r"\s+", " ", text[j:j + len(norm) + 30]).strip().startswith(norm):
                    return j
            return -1
    return -1


ODD_SPACES = "\u00a0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200C)) + "\u202f\u205f\u3000\ufeff"


def sentence_char_ranges(text, sentences):
    """get_sentence_token_boundaries, steps 1-2: sequential search in the space-normalised text."""
    table = str.maketrans({c: " " for c in ODD_SPACES})
    norm_text = text.translate(table)
    out, search = [], 0
    for s in sentences:
        ns = s.translate(table)
        start = norm_text.find(ns, search)
        if start != -1:
            end = start + len(ns)
        else:
            start = norm_text.find(ns.strip(), search)
            if start == -1:
                raise ValueError("Sentence not found in text")
            end = start + len(ns.strip())
        out.append((start, end))
        search = end
    return out


def prefix_bounds(encode, text, char_ranges):
    """Upstream: tok_start = len(encode(text[:cs])) (0 if cs == 0), tok_end = len(encode(text[:ce]))."""
    return [(0 if cs == 0 else len(encode(text[:cs])), len(encode(text[:ce]))) for cs, ce in char_ranges]


def offset_bounds(offsets, text, char_ranges):
    """Corrected: a token belongs to the sentence holding its first non-whitespace character (its
    first character when it is all whitespace); offsets from one tokenisation of the full text."""
    anchors = []
    for s, e in offsets:
        anchors.append(next((c for c in range(s, min(e, len(text))) if not text[c].isspace()), s))
    out = []
    for cs, ce in char_ranges:
        inside = [i for i, a in enumerate(anchors) if cs <= a < ce]
        if inside:
            out.append((inside[0], inside[-1] + 1))
        else:
            before = sum(1 for a in anchors if a < cs)
            out.append((before, before))
    return out



def compute_averaged_matrix(attn, bounds):
    """Upstream _compute_averaged_matrix (attn_funcs.py): block means over half-open token ranges clipped
    to T-1, float32, zero where a range is empty."""
    t_last = attn.shape[0] - 1
    n = len(bounds)
    out = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        r0, r1 = min(bounds[i][0], t_last), min(bounds[i][1], t_last)
        if r0 >= r1:
            continue
        for j in range(n):
            c0, c1 = min(bounds[j][0], t_last), min(bounds[j][1], t_last)
            if c0 >= c1:
                continue
            out[i, j] = np.mean(attn[r0:r1, c0:c1])
    return out
