#!/usr/bin/env python3
"""Write tests/fixtures/analysis/numpy_reference.json: numpy/scipy results that the Rust analysis
core must reproduce (tests/analysis/numpy_parity.rs).

    .venv/bin/python scripts/make_analysis_fixture.py      # numpy 2.4.6, scipy 1.17.1 (scripts/python-env.sh)

Cases (seeded, small):
- vertical scores of random float32 / float64 lower-triangular matrices with ties (values on a
  coarse grid) and NaNs, for p in {0, 1, 2, 4, 7}, both depth modes and both aggregations;
- scipy kurtosis(fisher=True, bias=True, nan_policy="omit") of float32 and float64 vectors,
  including constant, near-constant, single-value and all-NaN ones;
- upstream block averaging of fp16-rounded causal attention matrices with clipped and empty bounds.

JSON has no NaN: NaN is written as null. float32 values are written as the float64 they widen to
(exact), so the Rust side reads back the same bits.
"""
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analysis_numpy import compute_averaged_matrix, vertical_scores  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "analysis" / "numpy_reference.json"


def encode(values):
    """NaN as None; float32 values as _F32 (written as their shortest float32 decimal)."""
    array = np.asarray(values)
    wrap = _F32 if array.dtype == np.float32 else float
    return [None if np.isnan(v) else wrap(v) for v in array.ravel()]


class _F32(float):
    """A float32 value that `dumps` writes as its shortest float32 decimal."""

    def __new__(cls, value):
        obj = super().__new__(cls, float(value))
        obj.text = np.format_float_positional(np.float32(value), unique=True, trim="-")
        return obj


def dumps(value):
    """Compact JSON in which _F32 values keep their float32 text."""
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, _F32):
        return value.text
    return json.dumps(value)


def random_matrix(rng, n, dtype, nan_fraction, grid):
    m = rng.random((n, n))
    if grid:
        m = np.round(m * grid) / grid  # ties
    m = np.tril(m).astype(dtype)
    if nan_fraction:
        mask = rng.random((n, n)) < nan_fraction
        m[mask] = np.nan
    return m


def main():
    rng = np.random.default_rng(20250825)
    warnings.simplefilter("ignore", RuntimeWarning)

    vertical = []
    for n in [1, 2, 3, 5, 8, 13, 24]:
        variants = [(np.float32, 0.0, 0), (np.float32, 0.0, 5), (np.float32, 0.15, 10), (np.float64, 0.15, 10)]
        for dtype, nan_fraction, grid in variants:
            m = random_matrix(rng, n, dtype, nan_fraction, grid) * np.asarray(0.01, dtype=dtype)
            results = []
            for p in [0, 1, 2, 4, 7]:
                for depth in [False, True]:
                    for agg in ["mean", "median"]:
                        v = vertical_scores(m, p, depth, agg)
                        results.append({"p": p, "control_depth": depth, "score_type": agg,
                                        "out_dtype": str(v.dtype), "expected": encode(v)})
            vertical.append({"n": n, "dtype": str(m.dtype), "matrix": encode(m), "results": results})

    kurt = []
    def add_kurtosis(x):
        k = stats.kurtosis(x, fisher=True, bias=True, nan_policy="omit")
        k = np.asarray(k)
        kurt.append({"dtype": str(x.dtype), "values": encode(x), "expected": encode(k.reshape(1))[0],
                     "out_dtype": str(k.dtype)})
    for dtype in [np.float32, np.float64]:
        for n in [0, 1, 2, 3, 7, 30, 150, 400]:
            x = (rng.standard_normal(n) ** 3 * 0.01 + 0.02).astype(dtype)
            if n > 4:
                x[rng.random(n) < 0.1] = np.nan
            add_kurtosis(x)
        add_kurtosis(np.full(12, 0.03, dtype=dtype))
        add_kurtosis(np.array([0.5, 0.5, 0.5, 0.5 + np.finfo(dtype).eps], dtype=dtype))
        add_kurtosis(np.array([np.nan] * 5, dtype=dtype))
        add_kurtosis(np.zeros(9, dtype=dtype))

    averaging = []
    for t, bounds in [
        (16, [(2, 5), (5, 9), (9, 9), (9, 13), (13, 16)]),
        (40, [(3, 10), (10, 11), (11, 25), (25, 39), (39, 40), (40, 45)]),
        (64, [(0, 7), (7, 20), (20, 21), (21, 50), (50, 63)]),
        (5, [(0, 2), (2, 5)]),
    ]:
        a = rng.random((t, t)) ** 3
        a[:, 0] *= 10
        a = np.tril(a)
        a = (a / a.sum(axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
        averaging.append({"t": t, "bounds": bounds, "matrix": encode(a),
                          "expected": encode(compute_averaged_matrix(a, bounds))})

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(dumps({
        "numpy": np.__version__, "scipy": __import__("scipy").__version__,
        "vertical": vertical, "kurtosis": kurt, "averaging": averaging,
    }))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {len(vertical)} vertical, {len(kurt)} kurtosis, {len(averaging)} averaging cases")


if __name__ == "__main__":
    main()
