"""Reference numbers for `thoughtscope va`, from the VA attention analysis notebook's cells
(Qwen3-4B-Thinking, problem 9) re-written here with numpy/pandas, the same operations in the same
order: load_chunks_and_va_mask, safe_mean, compute_va_stats_for_head, the [1:-1] trim,
sort_values().groupby().first(), the agg and summary sums. Vertical scores are written from the
definition of thought-anchors `get_vertical_scores` (scipy rankdata for average ranks).

The sentence-averaged matrices are read from the attention cache `thoughtscope va` filled
(`<cache>/<model>/<text_id>/attention.npy` [L, H, N, N], or thought-anchors' `<l>_<h>.npy`), in
place of upstream's get_avg_attention_matrix; text_id is computed here as upstream does.

Two variants of the head selection are reported: the seed's `sort_values` (pandas' default
quicksort, not stable: which of exactly tied heads comes first depends on the CPU) and the same
with kind='stable'. Groups whose top |delta| is tied are listed under "ties".

    .venv/bin/python scripts/va_reference.py --root R --cache-dir C --model smollm2-135m \
        --n-layers 30 --n-heads 9 [--prefix rollout_] [--tag T] [--mode chunks|full-cot] [--no-trim] \
        [--layers 2,14,26] [--heads 0,1] [--proximity-ignore 4] --out ref.json
"""
import argparse
import hashlib
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ta_upstream  # noqa: E402  (upstream segmentation, for full-cot mode)

warnings.filterwarnings("ignore", category=RuntimeWarning)


def get_vertical_scores(avg_mat, proximity_ignore=20, control_depth=True, score_type="mean"):
    """get_vertical_scores: mask the upper triangle and the band i - j < p, optionally replace each valid
    cell by its average rank within its row divided by the row's valid count, then aggregate
    column j over rows i >= j + p."""
    if proximity_ignore < 0:
        raise ValueError("proximity_ignore must be >= 0")
    x = np.array(avg_mat, copy=True)
    n = x.shape[0]
    p = proximity_ignore
    rows, cols = np.indices((n, n))
    x[(cols > rows) | (rows - cols < p)] = np.nan
    if control_depth:
        ranks = rankdata(x, axis=1, method="average", nan_policy="omit")
        valid = np.sum(~np.isnan(x), axis=1, keepdims=True)
        x = ranks / valid
    scores = []
    for j in range(n):
        column = x[j + p:, j]
        if column.size == 0 or np.all(np.isnan(column)):
            scores.append(np.nan)
        elif score_type == "mean":
            scores.append(np.nanmean(column))
        elif score_type == "median":
            scores.append(np.nanmedian(column))
        else:
            raise ValueError(f"score_type {score_type!r}")
    return np.array(scores)


def text_id(text, sentences):
    joined = text + "|||" + "|||".join(sentences) if sentences else text
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


def load_chunks_and_va_mask(rollout_dir, tag, mode):
    """The seed's load_chunks_and_va_mask (chunks mode), with the tag as a parameter; full-cot
    mode takes thought-anchors' sentences of base_solution.full_cot instead of the chunks."""
    labeled_path = rollout_dir / "chunks_labeled.json"
    labeled = json.loads(labeled_path.read_text(encoding="utf-8")) if labeled_path.exists() else []
    if not isinstance(labeled, list):
        labeled = []
    if mode == "chunks":
        chunks_obj = json.loads((rollout_dir / "chunks.json").read_text(encoding="utf-8"))
        chunks = chunks_obj.get("chunks", [])
        if not isinstance(chunks, list):
            chunks = []
        text = "\n".join(str(x) for x in chunks)
        sentences = [str(x) for x in chunks]
    else:
        full_cot = json.loads((rollout_dir / "base_solution.json").read_text(encoding="utf-8"))["full_cot"]
        sentences, _ = ta_upstream.split_solution_keep_spacing(full_cot)
        text = full_cot
    n = len(sentences)
    labeled = labeled[:n]
    va_mask = np.zeros((n,), dtype=bool)
    for i, c in enumerate(labeled):
        tags = c.get("function_tags", []) if isinstance(c, dict) else []
        if isinstance(tags, list) and any(t == tag for t in tags):
            va_mask[i] = True
    return text, sentences, va_mask, labeled


def safe_mean(arr):
    arr = np.asarray(arr, dtype=float)
    if arr.size == 0:
        return float("nan")
    return float(np.nanmean(arr))


def compute_va_stats_for_head(avg_mat, va_mask, proximity_ignore=4):
    n = avg_mat.shape[0]
    assert va_mask.shape[0] == n
    non_mask = ~va_mask
    vert = get_vertical_scores(avg_mat, proximity_ignore=proximity_ignore, control_depth=True, score_type="mean")
    mean_va_vert = safe_mean(vert[va_mask])
    mean_non_vert = safe_mean(vert[non_mask])
    delta_vert = mean_va_vert - mean_non_vert
    mean_in_va = safe_mean(avg_mat[non_mask][:, va_mask])
    mean_in_non = safe_mean(avg_mat[non_mask][:, non_mask])
    mean_out_va = safe_mean(avg_mat[va_mask][:, non_mask])
    mean_va_to_va = safe_mean(avg_mat[va_mask][:, va_mask])
    lift_in = float("nan")
    if np.isfinite(mean_in_va) and np.isfinite(mean_in_non) and mean_in_non != 0:
        lift_in = mean_in_va / mean_in_non
    return {
        "mean_va_vert": mean_va_vert,
        "mean_nonva_vert": mean_non_vert,
        "delta_va_vert": delta_vert,
        "mean_in_va": mean_in_va,
        "mean_in_nonva": mean_in_non,
        "lift_in_va": lift_in,
        "mean_out_va": mean_out_va,
        "mean_va_to_va": mean_va_to_va,
        "vert_scores": vert,
    }


class CachedMatrices:
    """get_avg_attention_matrix over an existing cache (never computes)."""

    def __init__(self, cache_dir, model):
        self.root = Path(cache_dir) / model
        self.loaded = {}

    def get(self, text, sentences, layer, head):
        entry = self.root / text_id(text, sentences)
        native = entry / "attention.npy"
        if native.exists():
            if entry not in self.loaded:
                self.loaded = {entry: np.load(native)}
            mat = self.loaded[entry][layer, head]
        else:
            mat = np.load(entry / f"{layer}_{head}.npy")
        assert mat.dtype == np.float32, (entry, mat.dtype)
        assert mat.shape == (len(sentences), len(sentences)), (entry, mat.shape)
        return mat


def trimmed(avg_mat, va_mask, trim):
    if trim and avg_mat.shape[0] >= 3:
        return avg_mat[1:-1, 1:-1], va_mask[1:-1]
    return avg_mat, va_mask


def select(df, kind):
    """The seed's best_per_layer / agg / best rollout, with pandas' sort of the given kind."""
    df = df.copy()
    df["abs_delta_va_vert"] = df["delta_va_vert"].abs()
    sort = {} if kind == "default" else {"kind": kind}
    best_per_layer = (
        df.sort_values("abs_delta_va_vert", ascending=False, **sort)
        .groupby(["rollout_id", "layer"], as_index=False)
        .first()
    )
    agg = (
        best_per_layer.groupby("rollout_id")
        .agg({"abs_delta_va_vert": "sum", "n_va": "first", "n_sentences": "first"})
        .rename(columns={"abs_delta_va_vert": "distinctiveness_score"})
        .reset_index()
    )
    agg["va_rate"] = agg["n_va"] / agg["n_sentences"].clip(lower=1)
    ranked = agg.sort_values("distinctiveness_score", ascending=False, **sort)
    return best_per_layer, ranked, ranked.iloc[0]["rollout_id"]


def summary(rollouts, best_per_layer, kind):
    """The seed's Step 2 summary rows and meta.json (figures left out)."""
    rows, metas = [], {}
    for rollout_id, (sentences, va_mask) in rollouts.items():
        per_layer = best_per_layer[best_per_layer["rollout_id"] == rollout_id].sort_values("layer")
        if per_layer.empty:
            continue
        metas[rollout_id] = {
            "rollout_id": rollout_id,
            "n_sentences": int(len(sentences)),
            "n_va": int(va_mask.sum()),
            "va_idxs": [int(i) for i, v in enumerate(va_mask.tolist()) if v],
            "layers": [int(x) for x in per_layer["layer"].tolist()],
            "heads": [int(x) for x in per_layer["head"].tolist()],
        }
        sel = per_layer.copy()
        sel["abs_delta_va_vert"] = sel["delta_va_vert"].abs()
        rows.append({
            "rollout_id": rollout_id,
            "n_sentences": int(len(sentences)),
            "n_va": int(va_mask.sum()),
            "va_rate": float(va_mask.sum() / max(1, len(sentences))),
            "distinctiveness_score": float(sel["abs_delta_va_vert"].sum()),
            "layers": ",".join(str(int(x)) for x in sel["layer"].tolist()),
            "heads": ",".join(str(int(x)) for x in sel["head"].tolist()),
            "delta_va_vert_by_layer": ",".join(f"{float(x):.4f}" for x in sel["delta_va_vert"].tolist()),
            "lift_in_va_by_layer": ",".join(
                f"{float(x):.3f}" if np.isfinite(float(x)) else "nan" for x in sel["lift_in_va"].tolist()
            ),
        })
    sort = {} if kind == "default" else {"kind": kind}
    return pd.DataFrame(rows).sort_values("distinctiveness_score", ascending=False, **sort), metas


def ties(df):
    out = []
    for (rollout_id, layer), group in df.groupby(["rollout_id", "layer"]):
        values = group["delta_va_vert"].abs()
        top = values.max()
        if np.isfinite(top) and int((values == top).sum()) > 1:
            out.append({"rollout_id": rollout_id, "layer": int(layer), "heads": [int(h) for h in group["head"][values == top]]})
    return out


def records(df):
    def clean(v):
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return None if math.isnan(v) else float(v)
        if isinstance(v, np.bool_):
            return bool(v)
        return v
    return [{k: clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--prefix", default="rollout_")
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--n-layers", type=int, required=True)
    ap.add_argument("--n-heads", type=int, required=True)
    ap.add_argument("--tag", default="verbalized_evaluation_awareness")
    ap.add_argument("--mode", choices=["chunks", "full-cot"], default="chunks")
    ap.add_argument("--no-trim", action="store_true")
    ap.add_argument("--layers")
    ap.add_argument("--heads")
    ap.add_argument("--proximity-ignore", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    n_layers, n_heads = args.n_layers, args.n_heads
    layers = [max(0, int(0.10 * (n_layers - 1))), int(0.50 * (n_layers - 1)), int(0.90 * (n_layers - 1))]
    layers = sorted(set(layers))
    if args.layers:
        layers = sorted(set(int(x) for x in args.layers.split(",")))
    heads_to_scan = list(range(n_heads)) if not args.heads else sorted(set(int(x) for x in args.heads.split(",")))

    root = Path(args.root)
    rollout_dirs = sorted([p for p in root.iterdir() if p.is_dir() and p.name.startswith(args.prefix)])
    matrices = CachedMatrices(args.cache_dir, args.model)
    rows, rollouts, vert = [], {}, {}
    for rollout_dir in rollout_dirs:
        rollout_id = rollout_dir.name
        text, sentences, va_mask, labeled = load_chunks_and_va_mask(rollout_dir, args.tag, args.mode)
        rollouts[rollout_id] = (sentences, va_mask)
        for layer in layers:
            for head in heads_to_scan:
                avg_mat = matrices.get(text, sentences, layer, head)
                avg_mat2, va_mask2 = trimmed(avg_mat, va_mask, not args.no_trim)
                stats = compute_va_stats_for_head(avg_mat2, va_mask2, proximity_ignore=args.proximity_ignore)
                vert[f"{rollout_id}/{layer}/{head}"] = [None if math.isnan(v) else float(v) for v in stats["vert_scores"]]
                rows.append({
                    "rollout_id": rollout_id,
                    "layer": int(layer),
                    "head": int(head),
                    "n_sentences": int(avg_mat2.shape[0]),
                    "n_va": int(va_mask2.sum()),
                    "va_rate": float(va_mask2.sum() / max(1, avg_mat2.shape[0])),
                    "delta_va_vert": stats["delta_va_vert"],
                    "mean_va_vert": stats["mean_va_vert"],
                    "mean_nonva_vert": stats["mean_nonva_vert"],
                    "lift_in_va": stats["lift_in_va"],
                    "mean_in_va": stats["mean_in_va"],
                    "mean_in_nonva": stats["mean_in_nonva"],
                    "mean_out_va": stats["mean_out_va"],
                    "mean_va_to_va": stats["mean_va_to_va"],
                })
    df = pd.DataFrame(rows)
    result = {"layers": layers, "heads": heads_to_scan, "rows": records(df), "vert_scores": vert, "ties": ties(df)}
    for kind in ["default", "stable"]:
        best_per_layer, agg, best_rollout_id = select(df, kind)
        summary_df, metas = summary(rollouts, best_per_layer, kind)
        result[kind] = {
            "best_per_layer": records(best_per_layer),
            "agg": records(agg),
            "best_rollout_id": best_rollout_id,
            "summary": records(summary_df),
            "meta": metas,
        }
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"{len(rollouts)} rollouts, {len(df)} head rows, {len(result['ties'])} tied groups -> {args.out}")


if __name__ == "__main__":
    main()
