"""Statistics of a data set (the same table for real and synthetic sets) and a kNN reference score.

``dataset_stats(ds)`` measures what matters for extreme classification and for SLIDE's cost:
sizes and dimensions, nonzeros and labels per point, how training points spread over labels
(mean/median points per label, the tail: labels with no or at most 5 training points), the slope
of the label rank-frequency law on a log-log scale, how concentrated label mass is in the head, and
label co-occurrence (how strongly a label predicts its most frequent partner).
``format_stats`` prints one or several of these side by side.
``knn_precision`` is the learnability check for synthetic sets: a cosine kNN classifier's P@1.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..contract import Dataset

# (key, label, format) in table order
_ROWS = [
    ("name", "data set", "{}"),
    ("source", "source", "{}"),
    ("n_train", "train points", "{:,}"),
    ("n_test", "test points", "{:,}"),
    ("n_features", "features", "{:,}"),
    ("n_labels", "labels", "{:,}"),
    ("nnz_per_point_mean", "nonzeros/point mean", "{:.1f}"),
    ("nnz_per_point_median", "nonzeros/point median", "{:.1f}"),
    ("labels_per_point_mean", "labels/point mean", "{:.2f}"),
    ("labels_per_point_median", "labels/point median", "{:.1f}"),
    ("labels_per_point_max", "labels/point max", "{:,}"),
    ("points_per_label_mean", "train points/label mean", "{:.2f}"),
    ("points_per_label_median", "train points/label median (used)", "{:.1f}"),
    ("frac_labels_unused", "labels with 0 train points", "{:.1%}"),
    ("frac_labels_le5", "labels with <= 5 train points", "{:.1%}"),
    ("label_zipf_slope", "label rank-frequency slope", "{:.2f}"),
    ("top1pct_label_share", "label mass in top 1% labels", "{:.1%}"),
    ("frac_features_used", "features used in train", "{:.1%}"),
    ("empty_label_points_train", "train points without labels", "{:,}"),
    ("empty_label_points_test", "test points without labels", "{:,}"),
    ("empty_feature_points", "points without features", "{:,}"),
    ("cooc_top_partner", "co-occurrence: P(top partner | label)", "{:.3f}"),
    ("test_labels_unseen", "test label occurrences unseen in train", "{:.1%}"),
]


def _rank_frequency_slope(freq: np.ndarray) -> float:
    """Least-squares slope of log(frequency) on log(rank) over ranks 10 .. (labels with >= 2 points).

    The head (first 10 ranks) and the flat bottom of singletons are left out; NaN if fewer than 20
    ranks remain.
    """
    f = np.sort(freq[freq > 0])[::-1].astype(np.float64)
    hi = int(np.sum(f >= 2))
    lo = 10
    if hi - lo < 20:
        return float("nan")
    r = np.arange(lo, hi, dtype=np.float64) + 1.0
    y = np.log(f[lo:hi])
    x = np.log(r)
    return float(np.polyfit(x, y, 1)[0])


def _cooc_top_partner(Y: sp.csr_matrix, freq: np.ndarray, n_labels_sample: int = 2000, seed: int = 0) -> float:
    """Mean over labels with >= 5 training points (a seeded sample of at most 2,000) of
    max_{j != i} P(label j | label i) in the training set."""
    cand = np.flatnonzero(freq >= 5)
    if cand.size == 0:
        return float("nan")
    if cand.size > n_labels_sample:
        cand = np.sort(np.random.default_rng(seed).choice(cand, n_labels_sample, replace=False))
    Yc = sp.csc_matrix(Y, dtype=np.float32)[:, cand]
    co = (Yc.T @ sp.csr_matrix(Y, dtype=np.float32)).tocsr()          # [cand, L] counts
    best = np.zeros(cand.size)
    for r in range(cand.size):
        lo, hi = co.indptr[r], co.indptr[r + 1]
        idx, val = co.indices[lo:hi], co.data[lo:hi]
        val = val[idx != cand[r]]
        best[r] = val.max() / freq[cand[r]] if val.size else 0.0
    return float(best.mean())


def dataset_stats(ds: Dataset) -> dict:
    """Statistics of a Dataset (see the module docstring). Pure function of the data."""
    Xtr, Ytr, Xte, Yte = ds.X_train, ds.Y_train, ds.X_test, ds.Y_test
    ntr, nte = Xtr.shape[0], Xte.shape[0]
    L = Ytr.shape[1]
    nnz = np.concatenate([np.diff(Xtr.indptr), np.diff(Xte.indptr)])
    lpp = np.concatenate([np.diff(Ytr.indptr), np.diff(Yte.indptr)])
    freq = np.bincount(Ytr.indices, minlength=L)
    used = freq[freq > 0]
    total = freq.sum()
    top = max(1, L // 100)
    test_freq = np.bincount(Yte.indices, minlength=L)
    st = {
        "name": ds.name,
        "source": ds.meta.get("source", "?"),
        "n_train": int(ntr),
        "n_test": int(nte),
        "n_features": int(Xtr.shape[1]),
        "n_labels": int(L),
        "nnz_per_point_mean": float(nnz.mean()) if nnz.size else 0.0,
        "nnz_per_point_median": float(np.median(nnz)) if nnz.size else 0.0,
        "labels_per_point_mean": float(lpp.mean()) if lpp.size else 0.0,
        "labels_per_point_median": float(np.median(lpp)) if lpp.size else 0.0,
        "labels_per_point_max": int(lpp.max()) if lpp.size else 0,
        "points_per_label_mean": float(total / L),
        "points_per_label_median": float(np.median(used)) if used.size else 0.0,
        "frac_labels_unused": float(np.mean(freq == 0)),
        "frac_labels_le5": float(np.mean(freq <= 5)),
        "label_zipf_slope": _rank_frequency_slope(freq),
        "top1pct_label_share": float(np.sort(freq)[::-1][:top].sum() / total) if total else 0.0,
        "frac_features_used": float(np.unique(Xtr.indices).size / Xtr.shape[1]) if Xtr.shape[1] else 0.0,
        "empty_label_points_train": int(np.sum(np.diff(Ytr.indptr) == 0)),
        "empty_label_points_test": int(np.sum(np.diff(Yte.indptr) == 0)),
        "empty_feature_points": int(np.sum(nnz == 0)),
        "cooc_top_partner": _cooc_top_partner(Ytr, freq),
        "test_labels_unseen": float(test_freq[freq == 0].sum() / max(1, test_freq.sum())),
    }
    return st


def format_stats(stats) -> str:
    """An aligned text table: one column per stats dict (a dict or a list of dicts)."""
    if isinstance(stats, dict):
        stats = [stats]
    stats = list(stats)
    if not stats:
        raise ValueError("format_stats needs at least one stats dict")
    keys = [r for r in _ROWS if any(r[0] in s for s in stats)]
    extra = sorted({k for s in stats for k in s} - {r[0] for r in _ROWS})
    keys += [(k, k, "{}") for k in extra]

    def cell(s, key, fmt):
        if key not in s:
            return "-"
        v = s[key]
        if isinstance(v, float) and not np.isfinite(v):
            return "n/a"
        try:
            return fmt.format(v)
        except (ValueError, TypeError):
            return str(v)

    rows = [[label] + [cell(s, key, fmt) for s in stats] for key, label, fmt in keys]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def knn_topk(X_train: sp.csr_matrix, Y_train: sp.csr_matrix, X_query: sp.csr_matrix, *, k_neighbors: int = 10,
             topk: int = 5, block: int = 512) -> np.ndarray:
    """Cosine kNN: score labels by the summed similarity of the query's k nearest training points;
    returns int32 [n, topk] label ids, best first (ties broken by training-set label popularity)."""
    def l2n(M):
        M = sp.csr_matrix(M, dtype=np.float32)
        n = np.sqrt(np.asarray(M.multiply(M).sum(axis=1)).ravel())
        n[n == 0] = 1.0
        return sp.diags(1.0 / n).astype(np.float32) @ M

    A, B = l2n(X_train), l2n(X_query)
    Ytr = sp.csr_matrix(Y_train, dtype=np.float32)
    pop = np.asarray(Ytr.sum(axis=0)).ravel()
    out = np.empty((B.shape[0], topk), dtype=np.int32)
    At = A.T.tocsr()
    kk = min(k_neighbors, A.shape[0])
    for lo in range(0, B.shape[0], block):
        S = (B[lo:lo + block] @ At).toarray()
        nb = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        sims = np.take_along_axis(S, nb, axis=1)
        rows = np.repeat(np.arange(S.shape[0]), kk)
        W = sp.csr_matrix((sims.ravel(), (rows, nb.ravel())), shape=(S.shape[0], A.shape[0]))
        scores = (W @ Ytr).toarray() + 1e-9 * pop / max(1.0, pop.max())
        out[lo:lo + S.shape[0]] = np.argsort(-scores, axis=1)[:, :topk]
    return out


def knn_precision(ds: Dataset, *, k_neighbors: int = 10, n_eval: int = 2000, seed: int = 0) -> dict:
    """P@1/3/5 of the cosine kNN classifier on a seeded subset of the test set (learnability check)."""
    from ..metrics import eval_subset, evaluate
    idx = eval_subset(ds.X_test.shape[0], min(n_eval, ds.X_test.shape[0]), seed)
    topk = knn_topk(ds.X_train, ds.Y_train, ds.X_test[idx], k_neighbors=k_neighbors, topk=5)
    return evaluate(topk, ds.Y_test[idx])
