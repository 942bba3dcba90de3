"""The one scorer: P@k and nDCG@k from top-k predictions, and the shared evaluation subset.

Definitions (the Extreme Classification Repository's):

* ``P@k = |top-k ∩ y| / k`` for a point with true label set ``y``, averaged over points.
* ``DCG@k = sum_{r=1..k} [pred_r ∈ y] / log2(r + 1)``;
  ``nDCG@k = DCG@k / IDCG@min(k, |y|)`` with ``IDCG@m = sum_{r=1..m} 1 / log2(r + 1)``.
* Points with no true labels (``|y| = 0``) score 0 for every metric and stay in the denominator
  (the repository's convention: the evaluation averages over all test points). ``empty="skip"``
  drops them instead; the harness always uses the default.

Predictions are validated: an id outside ``[0, n_labels)`` or a label repeated within a point's
top-k is a ValueError (a repeated label would count twice in P@k).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .contract import derive_seed

KS = (1, 3, 5)


def _hits(topk, Y) -> tuple[np.ndarray, np.ndarray]:
    """hits[i, r] = topk[i, r] is a true label of point i; and |y_i|."""
    topk = np.asarray(topk)
    if topk.ndim != 2:
        raise ValueError(f"topk must be a 2-D array [n, k], got shape {topk.shape}")
    if not np.issubdtype(topk.dtype, np.integer):
        raise ValueError(f"topk must hold integer label ids, got dtype {topk.dtype}")
    if not sp.issparse(Y):
        raise ValueError(f"Y must be a scipy sparse label matrix, got {type(Y).__name__}")
    Y = sp.csr_matrix(Y)
    n, k = topk.shape
    if Y.shape[0] != n:
        raise ValueError(f"topk has {n} rows but Y has {Y.shape[0]}")
    L = Y.shape[1]
    if topk.size:
        lo, hi = int(topk.min()), int(topk.max())
        if lo < 0 or hi >= L:
            bad = lo if lo < 0 else hi
            raise ValueError(f"topk holds label id {bad}, outside [0, {L})")
        s = np.sort(topk, axis=1)
        dup = s[:, 1:] == s[:, :-1]
        if np.any(dup):
            i = int(np.flatnonzero(dup.any(axis=1))[0])
            raise ValueError(f"topk row {i} repeats a label ({topk[i].tolist()})")
    Y.sum_duplicates()
    Y.eliminate_zeros()
    n_true = np.diff(Y.indptr).astype(np.int64)
    true_keys = np.repeat(np.arange(n, dtype=np.int64), n_true) * L + Y.indices.astype(np.int64)
    pred_keys = np.arange(n, dtype=np.int64)[:, None] * L + topk.astype(np.int64)
    hits = np.isin(pred_keys, true_keys)
    return hits, n_true


def _scores(hits: np.ndarray, n_true: np.ndarray, k: int):
    p = hits[:, :k].sum(axis=1) / k
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * disc).sum(axis=1)
    idcg_cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = idcg_cum[np.minimum(n_true, k)]
    ndcg = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
    return p, ndcg


def _check_k(topk, k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if np.asarray(topk).ndim == 2 and np.asarray(topk).shape[1] < k:
        raise ValueError(f"topk has {np.asarray(topk).shape[1]} columns, fewer than k={k}")


def _mask(n_true, empty: str):
    if empty == "zero":
        return np.ones(n_true.size, dtype=bool)
    if empty == "skip":
        return n_true > 0
    raise ValueError(f"empty must be 'zero' or 'skip', got {empty!r}")


def precision_at_k(topk, Y, k: int, *, empty: str = "zero") -> float:
    """Mean P@k over points (see the module docstring)."""
    _check_k(topk, k)
    hits, n_true = _hits(topk, Y)
    m = _mask(n_true, empty)
    p, _ = _scores(hits, n_true, k)
    return float(p[m].mean()) if m.any() else float("nan")


def ndcg_at_k(topk, Y, k: int, *, empty: str = "zero") -> float:
    """Mean nDCG@k over points (see the module docstring)."""
    _check_k(topk, k)
    hits, n_true = _hits(topk, Y)
    m = _mask(n_true, empty)
    _, nd = _scores(hits, n_true, k)
    return float(nd[m].mean()) if m.any() else float("nan")


def evaluate(topk, Y, *, empty: str = "zero") -> dict:
    """P@1/3/5 and nDCG@1/3/5 of int top-k predictions [n, k >= 5] (best first) against label CSR Y.

    Returns {"p_at_1", "p_at_3", "p_at_5", "ndcg_at_1", "ndcg_at_3", "ndcg_at_5", "n"}; ``n`` is the
    number of points averaged over. No points: ValueError.
    """
    _check_k(topk, 5)
    hits, n_true = _hits(topk, Y)
    m = _mask(n_true, empty)
    if not m.any():
        raise ValueError("nothing to evaluate: no points" + (" with labels" if n_true.size else ""))
    out = {}
    nd = {}
    for k in KS:
        p, g = _scores(hits, n_true, k)
        out[f"p_at_{k}"] = float(p[m].mean())
        nd[f"ndcg_at_{k}"] = float(g[m].mean())
    out.update(nd)
    out["n"] = int(m.sum())
    return out


def eval_subset(n_test: int, size: int, seed: int) -> np.ndarray:
    """The evaluation subset: the first ``size`` entries of a fixed seeded permutation of
    range(n_test) (seed -> derive_seed(seed, "eval")), int64. Never a prefix of the file (the real
    test files are sorted by label); a smaller size is a prefix of a larger one, so subsets nest.
    ``size >= n_test`` gives all points (shuffled)."""
    for name, v in (("n_test", n_test), ("size", size), ("seed", seed)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if n_test < 1:
        raise ValueError(f"n_test must be >= 1, got {n_test}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    rng = np.random.default_rng(derive_seed(int(seed), "eval"))
    return rng.permutation(int(n_test)).astype(np.int64)[:min(int(size), int(n_test))]
