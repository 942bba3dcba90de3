"""How close tuned TF full softmax runs to the machine's matrix-multiply roofline.

The output layer of one training step does three matrix products of ``batch x hidden x n_labels``
(forward logits, the weight gradient, the gradient of the hidden layer): ``6 * batch * hidden *
n_labels`` floating-point operations. ``tf_gflops`` is that count divided by the time of a WHOLE
tuned ``tf_full_softmax`` step (the input layer, the softmax and the dense Adam over the output matrix
included), so it is a lower bound of the rate TF's matrix products reach. ``sgemm_gflops`` is numpy's
SGEMM (OpenBLAS) on the same three shapes, timed in the same process at the same thread count:
``fraction = tf_gflops / sgemm_gflops``.

The measurement runs in its own subprocess whose environment drops ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` (this environment pins OpenBLAS to its Haswell kernel; unset, OpenBLAS picks the
machine's own, e.g. SkylakeX's AVX-512 one) and fixes the thread count before numpy or TensorFlow are
imported; the OpenBLAS kernel that ran is read with threadpoolctl and reported (``openblas_coretype``).

    python -m slidebench.baselines.roofline --labels 200000 --threads 2 [--csv results/summary/roofline.csv]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CSV_COLUMNS = ["n_labels", "threads", "tf_gflops", "sgemm_gflops", "fraction", "openblas_coretype"]
DROPPED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SHAPE = {"n_features": 135_909, "nnz": 75, "hidden": 128, "batch_size": 128, "labels_per_sample": 5}


def output_layer_flops(batch: int, hidden: int, n_labels: int) -> float:
    """FLOPs of the output layer's three matrix products in one training step."""
    return 6.0 * batch * hidden * n_labels


def child_env(n_threads: int, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    for k in DROPPED_ENV:
        env.pop(k, None)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(n_threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _sgemm_seconds(n_labels: int, hidden: int, batch: int, repeats: int) -> tuple[float, dict]:
    import numpy as np
    rng = np.random.default_rng(0)
    h = rng.standard_normal((batch, hidden), dtype=np.float32)
    W = rng.standard_normal((hidden, n_labels), dtype=np.float32)
    G = rng.standard_normal((batch, n_labels), dtype=np.float32)
    out = np.empty((batch, n_labels), np.float32)

    def once() -> float:
        t0 = time.perf_counter()
        np.matmul(h, W, out=out)          # forward logits        [b, h] x [h, N]
        _ = h.T @ G                       # weight gradient       [h, b] x [b, N]
        _ = G @ W.T                       # hidden-layer gradient [b, N] x [N, h]
        return time.perf_counter() - t0

    once()
    times = [once() for _ in range(repeats)]
    info = {}
    try:
        from threadpoolctl import threadpool_info
        blas = [d for d in threadpool_info() if d.get("internal_api") == "openblas" or d.get("user_api") == "blas"]
        if blas:
            info = {"openblas_coretype": blas[0].get("architecture") or "?", "blas": blas[0].get("internal_api"),
                    "blas_threads": blas[0].get("num_threads"), "blas_version": blas[0].get("version")}
    except ImportError:
        info = {"openblas_coretype": "unknown (threadpoolctl missing)"}
    return statistics.median(times), info


def _tf_step_seconds(n_labels: int, n_threads: int, steps: int, repeats: int) -> tuple[float, dict]:
    import numpy as np
    import scipy.sparse as sp
    from ..contract import Dataset
    from ..trainers import get_trainer
    rng = np.random.default_rng(0)
    b = SHAPE["batch_size"]
    n = b * 16

    def csr(dim, per, values):
        counts = np.clip(rng.poisson(per, n), 1, None).astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        idx = np.concatenate([np.sort(rng.choice(dim, c, replace=False)) for c in counts]).astype(np.int32)
        data = rng.random(len(idx)).astype(np.float32) if values else np.ones(len(idx), np.float32)
        return sp.csr_matrix((data, idx, indptr), shape=(n, dim))

    X, Y = csr(SHAPE["n_features"], SHAPE["nnz"], True), csr(n_labels, SHAPE["labels_per_sample"], False)
    ds = Dataset("roofline", X, Y, X[:64], Y[:64])
    tr = get_trainer("tf_full_softmax")()
    tr.setup(ds, {"config": "tuned", "batch_size": b, "hidden": [SHAPE["hidden"]]}, seed=0, n_threads=n_threads)
    tr.train_steps(2)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tr.train_steps(steps)
        times.append((time.perf_counter() - t0) / steps)
    d = tr.describe()
    return statistics.median(times), {"intra_op_threads": d["intra_op_threads"], "inter_op_threads": d["inter_op_threads"],
                                      "tf_version": d["tf_version"]}


def measure_in_process(n_labels: int, n_threads: int, *, steps: int = 4, repeats: int = 5) -> dict:
    """The measurement itself (call it in a process whose environment child_env() made)."""
    b, hdim = SHAPE["batch_size"], SHAPE["hidden"]
    flops = output_layer_flops(b, hdim, n_labels)
    s1, info = _sgemm_seconds(n_labels, hdim, b, repeats)
    t_step, tf_info = _tf_step_seconds(n_labels, n_threads, steps, repeats)
    s2, _ = _sgemm_seconds(n_labels, hdim, b, repeats)             # again after TF: load drift shows as a spread
    sgemm = flops / min(s1, s2) / 1e9
    tfg = flops / t_step / 1e9
    return {"n_labels": n_labels, "threads": n_threads, "tf_gflops": round(tfg, 1), "sgemm_gflops": round(sgemm, 1),
            "fraction": round(tfg / sgemm, 3), "openblas_coretype": info.get("openblas_coretype", "?"),
            "tf_ms_per_step": round(t_step * 1e3, 1), "sgemm_ms_before_after": [round(s1 * 1e3, 1), round(s2 * 1e3, 1)],
            "output_layer_gflop_per_step": round(flops / 1e9, 2), "load_avg_1min": round(os.getloadavg()[0], 2),
            **info, **tf_info}


def measure(n_labels: int, n_threads: int, *, steps: int = 4, repeats: int = 5) -> dict:
    """Run measure_in_process in a fresh subprocess with child_env(); returns its result dict."""
    cmd = [sys.executable, "-m", "slidebench.baselines.roofline", "--child", "--labels", str(n_labels),
           "--threads", str(n_threads), "--steps", str(steps), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(n_threads))
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"roofline child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", nargs="+", type=int, default=[200_000])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--csv", help="write the rows to this CSV (columns: " + ",".join(CSV_COLUMNS) + ")")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print("RESULT " + json.dumps(measure_in_process(a.labels[0], a.threads, steps=a.steps, repeats=a.repeats)),
              flush=True)
        return 0
    rows = [measure(n, a.threads, steps=a.steps, repeats=a.repeats) for n in a.labels]
    for r in rows:
        print(f"labels {r['n_labels']:>7d}  threads {r['threads']}  TF tuned full softmax {r['tf_gflops']:6.1f} GFLOP/s "
              f"({r['tf_ms_per_step']} ms/step, {r['output_layer_gflop_per_step']} GFLOP output layer)  numpy SGEMM "
              f"{r['sgemm_gflops']:6.1f} GFLOP/s (OpenBLAS kernel {r['openblas_coretype']}, {r.get('blas_threads')} "
              f"threads; ms before/after TF {r['sgemm_ms_before_after']})  fraction {r['fraction']:.2f}  "
              f"load {r['load_avg_1min']}")
    if a.csv:
        print(f"wrote {write_csv(rows, a.csv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
