"""The non-neural reference: omikuji (a Parabel/Bonsai-style partitioned label tree learner, Rust with a
Python binding; ``pip install 'slidebench[reference]'``) trained once per data set.

``measure_reference(p, data_list=..., n_threads=..., seed=..., say=...)`` is the ``reference`` measure of
the micro-experiments (``experiments/reference.toml``): for each data set it writes the training split
in the XMLRepository text format (the format omikuji's ``Model.train_on_data`` reads; written by
``slidebench.data.xmlrepo.write_xmlrepo``), trains with the given hyper-parameters on the run's
threads (timed: data loading by omikuji included, writing the file not), predicts the top 5 of every
test point (beam search; the points shared by the run's threads) and scores P@1/3/5 on the **full** test
set with the suite's scorer.
One row per data set: dataset, n_features, n_labels, n_train, p_at_1, p_at_3, p_at_5, train_seconds,
predict_seconds, library, version, params.
"""
from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["measure_reference", "REFERENCE_DEFAULTS", "topk_padded"]

# omikuji's own defaults except n_trees (3 -> 1 keeps the 2-core reproduce short; the published Parabel
# numbers use 3 trees); any key of omikuji's hyper-parameter struct may be set in [micro]
REFERENCE_DEFAULTS: dict[str, Any] = {
    "n_trees": 1, "max_depth": 20, "min_branch_size": 100, "cluster_k": 2, "linear_c": 1.0,
    "linear_eps": 0.1, "linear_max_iter": 20, "linear_weight_threshold": 0.1, "beam_size": 10,
}
_NOT_HYPER = {"beam_size"}


def topk_padded(preds: list[list[int]], k: int, fill_order: np.ndarray) -> np.ndarray:
    """[n, k] int array of predictions, a short row filled with the most frequent training labels it
    lacks (the scorer rejects repeated or negative ids)."""
    out = np.empty((len(preds), k), dtype=np.int64)
    for i, row in enumerate(preds):
        row = list(dict.fromkeys(int(x) for x in row))[:k]
        if len(row) < k:
            have = set(row)
            for lab in fill_order:
                if int(lab) not in have:
                    row.append(int(lab))
                    have.add(int(lab))
                    if len(row) == k:
                        break
        out[i] = row
    return out


class _quiet_stderr:
    """Send file descriptors 1 and 2 (omikuji's Rust logger writes to stdout, its progress bars to
    stderr) to a file while training; on failure its last lines are printed."""

    def __init__(self, path: Path):
        self.path, self.failed = path, False

    def __enter__(self):
        import os
        import sys
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        self._f = open(self.path, "wb")
        for fd in (1, 2):
            os.dup2(self._f.fileno(), fd)
        return self

    def __exit__(self, *exc):
        import os
        import sys
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._f.close()
        if self.failed or exc[0] is not None:
            tail = self.path.read_bytes()[-2000:].decode(errors="replace")
            print(f"omikuji output (last lines):\n{tail}", file=sys.stderr, flush=True)
        return False


def _hyper(omikuji, p: dict[str, Any]):
    hp = omikuji.Model.default_hyper_param()
    for k, v in p.items():
        if k in _NOT_HYPER:
            continue
        if not hasattr(hp, k):
            raise ValueError(f"[micro] reference: omikuji has no hyper-parameter {k!r}")
        setattr(hp, k, v)
    return hp


def measure_reference(p: dict[str, Any], *, data_list: list, n_threads: int, seed: int,
                      say: Callable[[str], None]) -> list[dict[str, Any]]:
    try:
        import omikuji
    except ImportError as e:
        raise ImportError("the reference needs omikuji: pip install 'slidebench[reference]' "
                          "(or pip install omikuji==0.5.2)") from e
    from importlib.metadata import version

    from ..data.xmlrepo import write_xmlrepo
    from ..metrics import evaluate
    hyper = {k: p[k] for k in REFERENCE_DEFAULTS if k in p}
    params = " ".join(f"{k}={v}" for k, v in sorted(hyper.items()))
    rows = []
    for data in data_list:
        with tempfile.TemporaryDirectory(prefix="slidebench-ref-") as tmp:
            path = Path(tmp) / "train.txt"
            write_xmlrepo(path, data.X_train, data.Y_train)
            say(f"{data.name}: training omikuji ({params}) on {data.X_train.shape[0]} points")
            hp = _hyper(omikuji, hyper)
            with _quiet_stderr(Path(tmp) / "omikuji.log") as log:   # its progress bars fill megabytes
                t0 = time.perf_counter()
                try:
                    model = omikuji.Model.train_on_data(str(path), hp, n_threads=n_threads)
                except Exception:
                    log.failed = True
                    raise
                train_s = time.perf_counter() - t0
        X = data.X_test.tocsr()
        t0 = time.perf_counter()
        beam = int(hyper.get("beam_size", 10))

        def predict_one(i: int) -> list[int]:
            a, b = X.indptr[i], X.indptr[i + 1]
            pairs = list(zip(X.indices[a:b].tolist(), X.data[a:b].tolist()))
            return [lab for lab, _ in model.predict(pairs, beam_size=beam, top_k=5)]

        # one point per call; omikuji's binding (cffi) releases the GIL, so the run's threads share the
        # points (the serial loop's predictions, in order; 1,000 amazon-medium points on the 2-core VM: 0.86 s
        # against 2.48 s serially)
        with ThreadPoolExecutor(max_workers=max(1, int(n_threads))) as pool:
            preds = list(pool.map(predict_one, range(X.shape[0]), chunksize=64))
        pred_s = time.perf_counter() - t0
        freq = np.asarray(data.Y_train.sum(axis=0)).ravel()
        topk = topk_padded(preds, 5, np.argsort(-freq, kind="stable")[:50])
        m = evaluate(topk, data.Y_test)
        say(f"{data.name}: P@1 {m['p_at_1']:.3f} P@5 {m['p_at_5']:.3f}, train {train_s:.1f} s, "
            f"predict {pred_s:.1f} s")
        rows.append({"dataset": data.name, "n_features": int(data.X_train.shape[1]),
                     "n_labels": int(data.Y_train.shape[1]), "n_train": int(data.X_train.shape[0]),
                     "n_test": int(X.shape[0]), "p_at_1": m["p_at_1"], "p_at_3": m["p_at_3"],
                     "p_at_5": m["p_at_5"], "train_seconds": train_s, "predict_seconds": pred_s,
                     "library": "omikuji", "version": version("omikuji"), "params": params})
    return rows
