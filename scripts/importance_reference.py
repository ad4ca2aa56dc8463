#!/usr/bin/env python3
"""Independent reference for `thoughtscope importance`: thought-anchors' per-chunk importance
metrics (`analyze_rollouts.py`), re-stated from its definitions, on the hand-made solution sets
in tests/fixtures/importance/<case>/. Standard library + numpy only.

Each case folder holds `problem/` (chunks.json, optional chunks_labeled.json, chunk_<i>/solutions.json),
optionally `forced/` (chunk_<i>/solutions.json) and `similarities.json` (the cosine of each
(chunk_removed, chunk_resampled) pair, precomputed, so no embedder is needed here).

    .venv/bin/python scripts/importance_reference.py [--out FILE]

writes, per case and variant (faithful; corrected; prob_true; absolute), every chunk's fields, to
tests/fixtures/importance/expected.json unless --out is given.
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "importance"
ALPHA = 1e-9
THRESHOLD = 0.8
VARIANTS = {
    "faithful": dict(corrected=False, prob_true=False, absolute=False),
    "corrected": dict(corrected=True, prob_true=False, absolute=False),
    "prob_true": dict(corrected=False, prob_true=True, absolute=False),
    "absolute": dict(corrected=False, prob_true=False, absolute=True),
}


# --- utils.py's normalize_latex, re-stated --------------------------------------------------
import re


def norm(s):
    s = s.strip().lower()
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    s = re.sub(r"\s+", "", s)
    for a, b in (("\\%", ""), ("{,}", ""), ("\\times", "*"), ("\\cdot", "*")):
        s = s.replace(a, b)
    s = re.sub(r"(\d+)[\.,](\d+)", r"\1.\2", s)
    s = re.sub(r"{([^{}]+)}", r"\1", s)
    s = s.replace("\\pi", "pi")
    s = re.sub(r"\\text\{([^{}]+)\}", r"\1", s)
    s = re.sub(r"\\mathrm\{([^{}]+)\}", r"\1", s)
    s = re.sub(r"([a-z]+)\\+\s*(\d+)", r"\1\2", s)
    return s.replace("\\text", "")


# --- divergences ----------------------------------------------------------------------------
def kl_answers(answers_p, answers_q):
    """Answer-distribution KL; the answers are normalised here (once more)."""
    cp, cq = {}, {}
    for a in answers_p:
        a = norm(a)
        if a:
            cp[a] = cp.get(a, 0) + 1
    for a in answers_q:
        a = norm(a)
        if a:
            cq[a] = cq.get(a, 0) + 1
    if not cp or not cq:
        return 0.0
    support = sorted(set(cp) | set(cq))
    v = len(support)
    tp, tq = sum(cp.values()) + ALPHA * v, sum(cq.values()) + ALPHA * v
    total = 0.0
    for a in support:
        p = (cp.get(a, 0) + ALPHA) / tp
        q = (cq.get(a, 0) + ALPHA) / tq
        total += p * math.log(p / q)
    return max(0.0, total)


def kl_true(flags_p, flags_q):
    """Binary KL of P(correct); flags are True/False/None (None not counted)."""
    np_, nq = [f for f in flags_p if f is not None], [f for f in flags_q if f is not None]
    if not np_ or not nq:
        return 0.0
    p = (sum(1 for f in np_ if f is True) + ALPHA) / (len(np_) + 2 * ALPHA)
    q = (sum(1 for f in nq if f is True) + ALPHA) / (len(nq) + 2 * ALPHA)
    return max(0.0, p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))


def kl_of_solutions(a, b, prob_true):
    if prob_true:
        return kl_true([s.get("is_correct") for s in a], [s.get("is_correct") for s in b])
    return kl_answers([s.get("answer", "") for s in a], [s.get("answer", "") for s in b])


def accuracy(solutions):
    counted = [s for s in solutions if s.get("answer", "") != "" and s.get("is_correct") is not None]
    if not counted:
        return 0.0
    return sum(1 for s in counted if s["is_correct"] is True) / len(counted)


# --- one problem ----------------------------------------------------------------------------
def analyse(case, corrected, prob_true, absolute):
    problem = case / "problem"
    chunks = json.loads((problem / "chunks.json").read_text())["chunks"]
    kept = [i for i, c in enumerate(chunks) if len(c) >= 4]
    labelled_file = problem / "chunks_labeled.json"
    labelled = json.loads(labelled_file.read_text()) if labelled_file.exists() else None
    sims = {(a, b): c for a, b, c in json.loads((case / "similarities.json").read_text())["pairs"]}

    def read(root, i):
        f = root / f"chunk_{i}" / "solutions.json"
        return json.loads(f.read_text()) if f.exists() else None

    raw = {i: read(problem, i) for i in kept if read(problem, i) is not None}
    acc = {i: accuracy(s) for i, s in raw.items()}
    # chunk_info: non-empty files only; answers neither "" nor "None"; normalised once.
    info = {}
    for i, sols in raw.items():
        if not sols:
            continue
        info[i] = [
            dict(removed=s.get("chunk_removed", ""), resampled=s.get("chunk_resampled", ""),
                 correct=s.get("is_correct", False), answer=norm(s["answer"]))
            for s in sols if s.get("answer", "") not in ("", "None")
        ]
    forced_root = case / "forced"
    forced, forced_acc = None, None
    if forced_root.is_dir():
        forced = {i: read(forced_root, i) for i in kept}
        forced_acc = {}
        for i in kept:
            if forced[i] is not None:
                forced_acc[i] = accuracy(forced[i])
            elif not corrected:
                forced_acc[i] = 0.0

    def after(keys, i):
        later = [k for k in keys if k > i]
        return min(later) if later else None

    sign = abs if absolute else (lambda x: x)

    def info_accuracy(entries):
        counted = [e for e in entries if e["answer"] != "" and e["correct"] is not None]
        return sum(1 for e in counted if e["correct"] is True) / len(counted) if counted else 0.0

    def metrics(i):
        out = {}
        # counterfactual
        cf_acc = cf_kl = dtf = od = 0.0
        nxt = after(info, i)
        if i in info and (nxt is not None or corrected):
            cur = info[i]
            pairs = [(e, sims[(e["removed"], e["resampled"])]) for e in cur
                     if isinstance(e["removed"], str) and isinstance(e["resampled"], str) and (e["removed"], e["resampled"]) in sims]
            diff = [e for e, c in pairs if c < THRESHOLD]
            same = [e for e, c in pairs if c >= THRESHOLD]
            dtf = len(diff) / len(cur) if cur else 0.0
            od = 1.0 - len(np.unique([e["resampled"] for e, _ in pairs])) / len(pairs) if pairs else 0.0
            if nxt is not None and diff and info[nxt]:
                cf_acc = sign(info_accuracy(diff) - info_accuracy(info[nxt]))
                twice = lambda es: [norm(e["answer"]) for e in es if norm(e["answer"])]
                if prob_true:
                    seen = {}
                    for e in cur + info[nxt]:
                        if norm(e["answer"]):
                            seen[norm(e["answer"])] = e["correct"]
                    cf_kl = kl_true([seen.get(a, False) for a in twice(diff)],
                                    [seen.get(a, False) for a in twice(info[nxt]) + twice(same)])
                else:
                    cf_kl = kl_answers(twice(diff), twice(info[nxt]) + twice(same))
        out.update(counterfactual_importance_accuracy=cf_acc, counterfactual_importance_kl=cf_kl,
                   different_trajectories_fraction=dtf, overdeterminedness=od)
        # resampling
        rs_acc = 0.0
        if i in acc:
            j = after(acc, i) if corrected else i + 1
            if j is not None and j in acc:
                rs_acc = sign(acc[j] - acc[i])
        rs_kl = 0.0
        if i in info and nxt is not None:
            rs_kl = kl_of_solutions(raw[i], raw[nxt], prob_true)
        out.update(resampling_importance_accuracy=rs_acc, resampling_importance_kl=rs_kl)
        # forced
        if forced_acc:
            f_acc = f_kl = 0.0
            j = after(forced_acc, i)
            if i in forced_acc and j is not None:
                f_acc = sign(forced_acc[j] - forced_acc[i])
                a, b = forced.get(i) or [], forced.get(j) or []
                if any(norm(s.get("answer", "")) for s in a) and any(norm(s.get("answer", "")) for s in b):
                    f_kl = kl_of_solutions(a, b, prob_true)
            out.update(forced_importance_accuracy=f_acc, forced_importance_kl=f_kl)
        return out

    rows = []
    if labelled is not None:
        targets = [(e["chunk_idx"], e["chunk_idx"]) for e in labelled if e["chunk_idx"] in kept]
    else:
        targets = [(idx, idx if corrected else pos) for pos, idx in enumerate(kept)]
    for idx, query in targets:
        row = {"chunk_idx": idx, "accuracy": acc.get(idx)}
        row.update(metrics(query))
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES / "expected.json")
    args = parser.parse_args()
    cases = sorted(p for p in FIXTURES.iterdir() if (p / "problem").is_dir())
    result = {c.name: {v: analyse(c, **flags) for v, flags in VARIANTS.items()} for c in cases}
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(cases)} cases x {len(VARIANTS)} variants to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
