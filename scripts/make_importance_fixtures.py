#!/usr/bin/env python3
"""Writes the hand-made solution sets of tests/fixtures/importance/ (then run
scripts/importance_reference.py for expected.json). Standard library only; the data below is
spelled out by hand to hit upstream's edge cases:

- `labelled`: chunks_labeled.json present (labels, a stale `absolute_importance_accuracy`, an
  extra key, an entry for a dropped short chunk); chunk 1 shorter than 4 characters (dropped);
  chunk 3 without a folder (missing); chunk 5 with an empty solutions array; error stubs
  (`{chunk_removed, prefix_without_chunk, error}`); answers "", " ", "None"; `is_correct` null
  and missing; answers that normalise equal (`\\dfrac{72}{2}`, `36.0` vs `36`) and ones that
  need two or three normalisations (`{{36}}`, `{{{36}}}`); a non-string `chunk_resampled`;
  cosines exactly at the 0.8 threshold and just below; ties in the answer counts; repeated
  resampled chunks (overdeterminedness); forced-answer rollouts with chunks 5 and 7 missing.
- `unlabelled`: no chunks_labeled.json, a dropped short chunk before others (upstream's
  position shift), no forced folder.
"""
import json
import shutil
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "importance"


def sol(removed, resampled, answer, correct, **extra):
    s = {"chunk_removed": removed, "prefix_without_chunk": "...", "chunk_resampled": resampled,
         "rollout": f"{resampled} ...", "full_cot": f"prompt ... {resampled}"}
    if answer is not ...:
        s["answer"] = answer
    if correct is not ...:
        s["is_correct"] = correct
    s.update(extra)
    return s


def stub(removed):
    return {"chunk_removed": removed, "prefix_without_chunk": "...", "error": "'text'"}


def write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def labelled_case():
    chunks = [
        "First, count the apples in each box.",
        "Ok.",
        "There are 3 boxes with 12 apples each.",
        "So the total is 36 apples.",
        "Wait, let me double-check that.",
        "3 times 12 is 36.",
        "Yes, the answer is 36.",
        "So the final answer is \\boxed{36}.",
    ]
    c = chunks
    rollouts = {
        0: [
            sol(c[0], "Let me count the apples.", "36", True),
            sol(c[0], "Let me count the apples.", "36", True),
            sol(c[0], "Count apples per box first.", "\\dfrac{72}{2}", False),
            sol(c[0], "I will add the boxes up.", "12", False),
            sol(c[0], "I will add the boxes up.", "None", False),
            sol(c[0], "Maybe multiply instead.", "", False),
            sol(c[0], "Maybe multiply instead.", " ", True),
            sol(c[0], "Let me think about boxes.", "{{36}}", None),
            sol(c[0], "Let me think about boxes.", "36", ...),
            stub(c[0]),
            stub(c[0]),
        ],
        2: [
            sol(c[2], "Each of the 3 boxes holds 12 apples.", "36", True),
            sol(c[2], "Each of the 3 boxes holds 12 apples.", "36.0", True),
            sol(c[2], "There are 12 boxes with 3 apples.", "36", True),
            sol(c[2], "Suppose there are 4 boxes.", "48", False),
            sol(c[2], "Suppose there are 4 boxes.", "48", False),
            sol(c[2], "Boxes are unequal.", "{{{36}}}", True),
            sol(c[2], None, "40", False),
            stub(c[2]),
        ],
        4: [
            sol(c[4], "Let me verify.", "36", True),
            sol(c[4], "Let me verify.", "36", True),
            sol(c[4], "Hmm, that seems right.", "36", True),
            sol(c[4], "Actually it is 48.", "48", False),
            sol(c[4], "Actually it is 40.", "40", False),
            sol(c[4], "No need to check.", "None", True),
        ],
        5: [],
        6: [
            sol(c[6], "Yes, 36.", "36", True),
            sol(c[6], "Yes, 36.", "36", True),
            sol(c[6], "The answer is 48.", "48", False),
            sol(c[6], "The answer is 36 apples.", "\\text{36}", True),
        ],
        7: [
            sol(c[7], "Final answer: \\boxed{36}.", "36", True),
            sol(c[7], "Final answer: \\boxed{48}.", "48", False),
            sol(c[7], "Final answer: \\boxed{36}.", "36", True),
        ],
    }
    forced = {
        0: [sol(c[0], "", "36", True), sol(c[0], "", "12", False), sol(c[0], "", "", False), stub(c[0])],
        2: [sol(c[2], "", "36", True), sol(c[2], "", "36", True), sol(c[2], "", "48", False)],
        3: [sol(c[3], "", "36", True), sol(c[3], "", "None", False)],
        4: [sol(c[4], "", "36", True), sol(c[4], "", "36", True)],
        6: [sol(c[6], "", "", True), sol(c[6], "", "   ", False)],
    }
    labels = []
    for i, text in enumerate(chunks):
        labels.append({"chunk": text, "chunk_idx": i, "function_tags": ["active_computation" if i % 2 else "plan_generation"],
                       "depends_on": [str(i - 1)] if i else [], "accuracy": 0.123, "absolute_importance_accuracy": 9.0,
                       "summary": f"step {i}", "notes": "kept as is"})
    # Cosines of (chunk_removed, chunk_resampled): 0.8 exactly is "similar" (upstream tests < 0.8).
    sims = {
        (c[0], "Let me count the apples."): 0.93,
        (c[0], "Count apples per box first."): 0.8,
        (c[0], "I will add the boxes up."): 0.7999999999,
        (c[0], "Maybe multiply instead."): 0.31,
        (c[0], "Let me think about boxes."): 0.42,
        (c[2], "Each of the 3 boxes holds 12 apples."): 0.91,
        (c[2], "There are 12 boxes with 3 apples."): 0.77,
        (c[2], "Suppose there are 4 boxes."): 0.5,
        (c[2], "Boxes are unequal."): 0.2,
        (c[4], "Let me verify."): 0.85,
        (c[4], "Hmm, that seems right."): 0.6,
        (c[4], "Actually it is 48."): 0.55,
        (c[4], "Actually it is 40."): 0.55,
        (c[6], "Yes, 36."): 0.88,
        (c[6], "The answer is 48."): 0.4,
        (c[6], "The answer is 36 apples."): 0.81,
        (c[7], "Final answer: \\boxed{36}."): 0.97,
        (c[7], "Final answer: \\boxed{48}."): 0.79,
    }
    return chunks, rollouts, forced, labels, sims


def unlabelled_case():
    chunks = ["Hmm.", "Let x be the unknown.", "Hi", "Then 2x = 10.", "So x = 5.", "The answer is \\boxed{5}."]
    c = chunks
    rollouts = {
        1: [sol(c[1], "Let y be the unknown.", "5", True), sol(c[1], "Guess x = 4.", "4", False),
            sol(c[1], "Guess x = 4.", "4", False), sol(c[1], "Call it n.", "5", True)],
        3: [sol(c[3], "Then 2x = 10.", "5", True), sol(c[3], "Then x + x = 10.", "5", True),
            sol(c[3], "Then 3x = 10.", "\\frac{10}{3}", False)],
        4: [sol(c[4], "x = 5.", "5", True), sol(c[4], "x is five.", "5", True), stub(c[4])],
        5: [sol(c[5], "Answer: 5.", "5", True), sol(c[5], "Answer: 4.", "4", False)],
    }
    sims = {
        (c[1], "Let y be the unknown."): 0.9, (c[1], "Guess x = 4."): 0.3, (c[1], "Call it n."): 0.6,
        (c[3], "Then 2x = 10."): 1.0, (c[3], "Then x + x = 10."): 0.82, (c[3], "Then 3x = 10."): 0.79,
        (c[4], "x = 5."): 0.95, (c[4], "x is five."): 0.7,
        (c[5], "Answer: 5."): 0.9, (c[5], "Answer: 4."): 0.5,
    }
    return chunks, rollouts, None, None, sims


def main():
    for name, make in [("labelled", labelled_case), ("unlabelled", unlabelled_case)]:
        chunks, rollouts, forced, labels, sims = make()
        case = OUT / name
        shutil.rmtree(case, ignore_errors=True)
        write(case / "problem" / "chunks.json", {"source_text": "...", "solution_text": " ".join(chunks), "chunks": chunks})
        if labels is not None:
            write(case / "problem" / "chunks_labeled.json", labels)
        for i, sols in rollouts.items():
            write(case / "problem" / f"chunk_{i}" / "solutions.json", sols)
        if forced is not None:
            for i, sols in forced.items():
                write(case / "forced" / f"chunk_{i}" / "solutions.json", sols)
        write(case / "similarities.json", {"pairs": [[a, b, s] for (a, b), s in sims.items()]})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
