#!/usr/bin/env python3
"""Time the upstream numpy way of sentence averaging and vertical scores on the inputs that
`thoughtscope bench analysis --write-inputs DIR` wrote, check the numbers agree with thoughtscope's,
and print both timings and their ratio.

    cargo run --bin thoughtscope -- bench analysis --write-inputs /tmp/bench
    .venv/bin/python scripts/bench_analysis_numpy.py /tmp/bench

The two functions below follow thought-anchors `attn_funcs.py` (`_compute_averaged_matrix`, `get_vertical_scores`):
`compute_averaged_matrix` is the O(N^2) loop of numpy block means with the clip to T-1 and empty
blocks left at 0; `vertical_scores` masks the upper triangle and the proximity band, optionally
rank-normalises rows with scipy `rankdata(method="average", nan_policy="omit")`, then takes the
nanmean/nanmedian of each column below the band. `scripts/make_analysis_fixture.py` imports them.
"""
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats


def compute_averaged_matrix(matrix, bounds):
    """N x N float32 block means of a T x T matrix (upstream `_compute_averaged_matrix`)."""
    n = len(bounds)
    out = np.zeros((n, n), dtype=np.float32)
    last = matrix.shape[0] - 1
    for i in range(n):
        r0, r1 = min(bounds[i][0], last), min(bounds[i][1], last)
        if r0 >= r1:
            continue
        for j in range(n):
            c0, c1 = min(bounds[j][0], last), min(bounds[j][1], last)
            if c0 >= c1:
                continue
            block = matrix[r0:r1, c0:c1]
            if block.size > 0:
                out[i, j] = np.mean(block)
    return out


def vertical_scores(avg, proximity_ignore=4, control_depth=False, score_type="mean"):
    """Upstream `get_vertical_scores` semantics (float32 out without depth control)."""
    x = avg.copy()
    x[np.triu_indices_from(x, k=1)] = np.nan
    x[np.triu_indices_from(x, k=-proximity_ignore + 1)] = np.nan
    if control_depth:
        per_row = np.sum(~np.isnan(x), axis=1)
        x = stats.rankdata(x, axis=1, nan_policy="omit") / per_row[:, None]
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice" for the last p columns
        for j in range(x.shape[-1]):
            column = x[j + proximity_ignore:, j]
            if score_type == "mean":
                scores.append(np.nanmean(column))
            elif score_type == "median":
                scores.append(np.nanmedian(column))
            else:
                raise ValueError(score_type)
    return np.array(scores)


def main(directory):
    d = Path(directory)
    meta = json.loads((d / "bench.json").read_text())
    bounds = [tuple(b) for b in meta["bounds"]]
    heads, distinct = meta["heads"], meta["distinct"]
    attention = np.load(d / "attention.npy")
    rust_avg = np.load(d / "averaged.npy")

    start = time.perf_counter()
    averaged = np.stack([compute_averaged_matrix(attention[k % distinct], bounds) for k in range(heads)])
    t_avg = time.perf_counter() - start
    avg_diff = float(np.max(np.abs(averaged - rust_avg)))
    avg_rel = float(np.max(np.abs(averaged - rust_avg) / np.maximum(np.abs(averaged), 1e-30)))

    timings = {}
    agreement = {}
    for name, depth, expected_file in [("vertical", False, "vertical_p4.npy"), ("vertical_depth", True, "vertical_p4_depth.npy")]:
        start = time.perf_counter()
        ours = np.stack([vertical_scores(rust_avg[k], 4, depth, "mean") for k in range(heads)])
        timings[name] = time.perf_counter() - start
        theirs = np.load(d / expected_file)
        same_nan = bool(np.array_equal(np.isnan(ours), np.isnan(theirs)))
        finite = ~np.isnan(ours)
        exact = int(np.sum(ours[finite] == theirs[finite]))
        agreement[name] = {
            "dtype": str(ours.dtype),
            "nan_pattern_equal": same_nan,
            "exactly_equal": f"{exact}/{int(finite.sum())}",
            "max_abs_diff": float(np.max(np.abs(ours[finite] - theirs[finite]))) if finite.any() else 0.0,
        }

    rust = meta["rust"]
    report = {
        "inputs": {"tokens": rust["tokens"], "sentences": rust["sentences"], "heads": heads},
        "numpy_s": {"averaging": t_avg, **timings},
        "rust_s": {
            "averaging_sequential": rust["averaging_sequential_s"],
            "averaging_sink": rust["averaging_sink_s"],
            "vertical": rust["vertical_s"],
            "vertical_depth": rust["vertical_depth_s"],
            "threads": rust["threads"],
        },
        "speedup_numpy_over_rust": {
            "averaging_sequential": t_avg / rust["averaging_sequential_s"],
            "averaging_sink": t_avg / rust["averaging_sink_s"],
            "vertical": timings["vertical"] / rust["vertical_s"],
            "vertical_depth": timings["vertical_depth"] / rust["vertical_depth_s"],
        },
        "agreement": {"averaging_max_abs_diff": avg_diff, "averaging_max_rel_diff": avg_rel, **agreement},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bench_analysis_numpy.py DIR   (DIR from `thoughtscope bench analysis --write-inputs DIR`)")
    main(sys.argv[1])
