#!/usr/bin/env python3
"""Writes tests/fixtures/answers/cases.json: thought-anchors' answer handling (`utils.py`),
re-stated here from its definitions, on enumerated cases, with and without its sympy fallback.

Needs sympy and antlr4-python3-runtime==4.11 (for sympy's LaTeX parser) in its own environment:
    python3 -m venv /tmp/st && /tmp/st/bin/pip install sympy antlr4-python3-runtime==4.11.1
    /tmp/st/bin/python scripts/make_answer_fixture.py

Per case: `normalized` of both sides (upstream's normalize_latex), `string_equal` (what upstream's
check_answer returns when sympy's LaTeX parser is not installed: its requirements.txt does not
list antlr4, so the fallback raises and answers False) and `sympy_equal` (check_answer with the
parser installed). The Rust test checks our normalisation against `normalized` and that our
check_answer never says equal where `sympy_equal` is false.
"""
import json
import re
import sys
from pathlib import Path

from sympy.parsing.latex import parse_latex

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "answers" / "cases.json"


def boxed(text):
    found = []
    for m in re.finditer(r"\\boxed\{", text):
        depth, i, out = 1, m.end(), []
        while i < len(text):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            out.append(ch)
            i += 1
        if out:
            found.append("".join(out))
    return found or [""]


def normalize(s):
    s = s.strip().lower().replace("dfrac", "frac").replace("tfrac", "frac")
    s = re.sub(r"\s+", "", s)
    s = s.replace("\\%", "").replace("{,}", "").replace("\\times", "*").replace("\\cdot", "*")
    s = re.sub(r"(\d+)[\.,](\d+)", r"\1.\2", s)
    s = re.sub(r"{([^{}]+)}", r"\1", s)
    s = s.replace("\\pi", "pi")
    s = re.sub(r"\\text\{([^{}]+)\}", r"\1", s)
    s = re.sub(r"\\mathrm\{([^{}]+)\}", r"\1", s)
    s = re.sub(r"([a-z]+)\\+\s*(\d+)", r"\1\2", s)
    return s.replace("\\text", "")


def for_sympy(s):
    s = re.sub(r"\\boxed\{(.*?)\}", r"\1", s)
    for old, new in [(r"\\dfrac", r"\\frac"), (r"\\tfrac", r"\\frac"), (r"\\cdot", r"*"), (r"\\times", r"*"),
                     (r"\\div", r"/"), (r"\\left", r""), (r"\\right", r""), (r"\\textbf", r""), (r"\\text", r""),
                     (r"\\mathrm", r""), (r"\\!", r""), (r",", r"")]:
        s = re.sub(old, new, s)
    return s


def sympy_equal(a, b):
    try:
        return parse_latex(for_sympy(a)).equals(parse_latex(for_sympy(b))) is True
    except Exception:
        return False


PAIRS = [
    ("12", "12"), ("12", "12.0"), ("12.00", "12"), ("0.5", "\\frac{1}{2}"), ("\\frac12", "0.5"),
    ("1/2", "\\dfrac{1}{2}"), ("\\tfrac{3}{4}", "0.75"), ("-\\frac34", "-0.75"), ("+3", "3"),
    ("1,000", "1000"), ("1{,}000", "1000"), ("1,5", "15"), ("2.50", "2.5"), ("0.1", "\\frac{1}{10}"),
    ("0.333", "\\frac{1}{3}"), ("0.3333333333333333", "\\frac13"), ("\\frac{2}{4}", "\\frac{1}{2}"),
    ("\\frac{4}{2}", "2"), ("6/3", "2"), ("\\sqrt{4}", "2"), ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\pi", "pi"), ("2\\pi", "2 \\pi"), ("x+1", "1+x"), ("(1,2)", "12"), ("(1,2)", "(1, 2)"),
    ("[0,1]", "[0, 1]"), ("\\{1,2\\}", "\\{2,1\\}"), ("50\\%", "50"), ("50\\%", "0.5"),
    ("\\text{October } 30", "October\\ 30"), ("\\text{(B)}", "B"), ("\\mathrm{cm}", "cm"),
    ("3 \\times 4", "12"), ("3\\cdot4", "3*4"), ("10^2", "100"), ("1e3", "1000"), (".5", "0.5"),
    ("0", "-0"), ("", "0"), ("", ""), ("None", "none"), ("\\boxed{7}", "7"), ("\\infty", "\\infty"),
    ("x=5", "5"), ("5", "x=5"), ("\\$5", "5"), ("5 \\text{ apples}", "5"), ("19", "19 bits"),
    ("1/0", "2/0"), ("007", "7"), ("1.0e2", "100"), ("-2", "2"), ("\\left(3\\right)", "3"),
    ("120", "120"), ("384", "120"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("0.50", "\\frac{2}{4}"),
]

# Every pair of these is checked: the numbers our check_answer compares exactly.
NUMBERS = [
    "0", "-0", "0.0", "-0.0", "1", "+1", "1.0", "1.00", "2", "-2", "0.5", "-0.5", "0.50", ".5", "1/2", "-1/2",
    "2/4", "\\frac{1}{2}", "\\frac12", "\\dfrac{1}{2}", "-\\frac{1}{2}", "\\frac{2}{4}", "0.75", "\\frac34",
    "3/4", "1.5", "3/2", "\\frac{3}{2}", "1,5", "15", "1,000", "1000", "1000.0", "007", "7", "00.5", "10.",
    "\\frac{0}{5}", "0/5", "1/0", "\\frac{1}{0}", "12", "12.0", "\\boxed{12}", "36", "\\frac{72}{2}", "72/2",
    "0.333", "\\frac13", "0.1", "\\frac{1}{10}", "1e3", "10^3",
]

BOXED = [
    "so the answer is \\boxed{12}.", "\\boxed{\\frac{1}{2}} and \\boxed{3}", "no box here", "\\boxed{}",
    "\\boxed{} then \\boxed{4}", "\\boxed{a{b}c", "\\boxed{\\boxed{5}}", "\\boxed{é{ü}}x}", "\\boxed {9}",
    "\\boxed{\\text{(B)}}", "Final: \\boxed{x^{2}+1}.\n</think>\n\\boxed{x^2+1}",
]


def main():
    cases = [{"answer": a, "gold": b, "normalized": [normalize(a), normalize(b)], "string_equal": normalize(a) == normalize(b),
              "sympy_equal": normalize(a) == normalize(b) or sympy_equal(a, b)} for a, b in PAIRS]
    boxes = [{"text": t, "answers": boxed(t)} for t in BOXED]
    grid = [[normalize(a) == normalize(b) or sympy_equal(a, b) for b in NUMBERS] for a in NUMBERS]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"pairs": cases, "boxed": boxes, "numbers": NUMBERS, "numbers_sympy_equal": grid}, indent=None, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} pairs, {len(NUMBERS)}² number pairs and {len(boxes)} boxed texts to {OUT}")


if __name__ == "__main__":
    sys.exit(main())
