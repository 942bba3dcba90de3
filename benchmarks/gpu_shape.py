"""Step time of the dense full softmax on a GPU (PyTorch), at the paper's output sizes.

The GPU side of the step-time comparison in docs/engine.md ("SLIDE on CPU cores against a GPU"):
``torch_full_softmax``'s real training step (the harness's trainer, not a re-implementation) on a
synthetic batch stream of the amazon shape (135,909 features, ~75 nonzeros, 5 labels a sample,
hidden 128, batch 128) at each label count, timed over whole ``train_steps`` calls (which block until
the GPU is done), median of ``--reps``; and the output layer's achieved FLOP rate next to the GPU's
own SGEMM rate on the same [batch x hidden] x [hidden x labels] shape, measured in the same process.

    python benchmarks/gpu_shape.py --labels 200000 670091 [--json out.json]

Needs PyTorch and a CUDA device (exits with a message otherwise); prints samples/s per label count.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from slidebench.contract import Dataset


def make_data(n_rows: int, n_features: int, n_labels: int, nnz: int, labels: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)

    def csr(n_cols, per_row, values):
        idx = np.sort(np.stack([rng.choice(n_cols, per_row, replace=False) for _ in range(n_rows)]), axis=1)
        data = rng.random(idx.size, dtype=np.float32) if values else np.ones(idx.size, np.float32)
        return sp.csr_matrix((data, idx.ravel().astype(np.int32), np.arange(0, idx.size + 1, per_row, dtype=np.int32)),
                             shape=(n_rows, n_cols))
    X, Y = csr(n_features, nnz, True), csr(n_labels, labels, False)
    return Dataset("gpu-shape", X, Y, X[:2], Y[:2])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, nargs="+", default=[200000, 670091])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--features", type=int, default=135909)
    ap.add_argument("--steps", type=int, default=100, help="steps per timed call")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-tf32", action="store_true", help="plain fp32 matmuls (TensorFlow's GPU default is TF32)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_shape: needs PyTorch", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_shape: PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    from slidebench.baselines.torch_full_softmax import TorchFullSoftmaxTrainer
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, tf32={not a.no_tf32}")
    out = []
    for n_labels in a.labels:
        data = make_data(a.batch * 20, a.features, n_labels, 75, 5, seed=n_labels)
        tr = TorchFullSoftmaxTrainer()
        tr.setup(data, {"batch_size": a.batch, "hidden": [a.hidden], "lr": 1e-3, "tf32": not a.no_tf32},
                 seed=0, n_threads=1)
        tr.train_steps(a.steps)                                   # warm
        times = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            tr.train_steps(a.steps)
            times.append((time.perf_counter() - t0) / a.steps)
        step = statistics.median(times)
        # the output layer's GEMMs: forward [b,h]x[h,L], gradient wrt W [h,b]x[b,L], wrt h [b,L]x[L,h]
        flops = 3 * 2 * a.batch * a.hidden * n_labels
        h = torch.randn(a.batch, a.hidden, device="cuda")
        W = torch.randn(a.hidden, n_labels, device="cuda")
        for _ in range(3):
            h @ W
        torch.cuda.synchronize()
        g = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            for _ in range(50):
                h @ W
            torch.cuda.synchronize()
            g.append((time.perf_counter() - t0) / 50)
        gemm = 2 * a.batch * a.hidden * n_labels / statistics.median(g) / 1e9
        row = {"n_labels": n_labels, "batch": a.batch, "hidden": a.hidden, "step_ms": step * 1e3,
               "samples_per_s": a.batch / step, "step_ms_min": min(times) * 1e3, "step_ms_max": max(times) * 1e3,
               "output_gflops_in_step": flops / step / 1e9, "sgemm_gflops": gemm, "tf32": not a.no_tf32,
               "device": torch.cuda.get_device_name(0)}
        out.append(row)
        print(f"  {n_labels:>8,} labels: {step * 1e3:.3f} ms/step [{min(times) * 1e3:.3f}, {max(times) * 1e3:.3f}] "
              f"= {a.batch / step:,.0f} samples/s; output-layer GEMMs at {flops / step / 1e9:,.0f} GFLOP/s in the step "
              f"vs {gemm:,.0f} GFLOP/s for the forward GEMM alone")
        del tr
        torch.cuda.empty_cache()
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
