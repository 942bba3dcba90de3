"""torch_full_softmax: the dense full-softmax baseline in PyTorch, for machines with a GPU but no TensorFlow.

Why it exists: the paper's headline claim is SLIDE on a CPU against TensorFlow on a GPU. The GPU
machines this suite is measured on carry PyTorch (and JAX) but not TensorFlow, and cannot install it
(no network; TensorFlow's wheels are larger than what can be carried there). This trainer is the same
model and the same objective as ``tf_full_softmax`` so that the comparison can be made there; it is
reported as "dense full softmax (PyTorch)", never as TensorFlow.

The model and loss are the TF baselines' (baselines/base.py): sparse input -> hidden ReLU layer(s) ->
dense output over every label; per sample, softmax cross-entropy against soft targets 1/|y| on each
true label, summed over the batch and divided by the number of samples; samples without labels add 0.
The input layer is ``embedding_bag`` (mode "sum", the nonzeros' values as per-sample weights), i.e.
the gather path of ``tf_full_softmax``'s ``tuned`` configuration; its gradient is dense (a GPU updates
the whole 17M-weight input matrix in a fraction of a millisecond), and every weight gets the textbook
Adam update (``torch.optim.Adam``, fused on CUDA). Initial weights are drawn by numpy exactly as the
TF baselines draw them (``base.init_weights``), so both start from the same network for a seed.

Tuning: not tuned separately; experiments give it TF full softmax's tuned lr (the same model and
optimiser), and ``tf32`` follows TensorFlow's own default on GPUs (TensorFloat-32 matmuls on).

``import slidebench.baselines.torch_full_softmax`` does not import PyTorch; ``setup`` does.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ..contract import BatchStream, Dataset, StepStats, check_csr, derive_seed
from .config import check, check_int, check_setup_args, merge_config, require_setup, validate_model

SYSTEM = "torch_full_softmax"

#: Named configurations; every key explicit. ``tuned`` is the only one: the 2019 release had no
#: PyTorch baseline, so there is no ``paper`` configuration to be faithful to.
CONFIGS: dict[str, dict[str, Any]] = {
    "tuned": {
        "device": "gpu", "hidden": [128], "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
        "init": "release", "init_std": 0.01, "tf32": True, "predict_batch": 4096,
    },
}

KEYS: dict[str, str] = {
    "device": "'gpu' (CUDA; DeviceUnavailable when none is visible) or 'cpu'",
    "hidden": "hidden ReLU layer sizes, e.g. [128]",
    "lr": "Adam learning rate", "beta1": "Adam beta1", "beta2": "Adam beta2", "eps": "Adam epsilon",
    "init": "'release' or 'normal' (as tf_full_softmax)", "init_std": "std of the 'normal' init",
    "tf32": "TensorFloat-32 matmuls on a GPU (TensorFlow's default on GPUs; no effect on the CPU)",
    "predict_batch": "rows per top-k batch at evaluation",
}


def resolve(params: dict[str, Any]) -> dict[str, Any]:
    """The named configuration plus overrides, every key checked; ValueError names the key."""
    p = merge_config(SYSTEM, CONFIGS, params, set(KEYS))
    validate_model(SYSTEM, p)
    check(isinstance(p["tf32"], bool), SYSTEM, "tf32", p["tf32"], "must be true or false")
    return p


def encode_labels(Y: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row of each true label, its id, its weight 1/|y| of its row, 1.0 for rows with a label)."""
    counts = np.diff(Y.indptr)
    rows = np.repeat(np.arange(Y.shape[0], dtype=np.int64), counts)
    inv = (1.0 / np.maximum(counts, 1)).astype(np.float32)
    return rows, Y.indices.astype(np.int64), inv[rows], (counts > 0).astype(np.float32)


class TorchFullSoftmaxTrainer:
    """Dense full softmax in PyTorch (system ``torch_full_softmax``): the GPU stand-in for ``tf_full_softmax``."""

    system: ClassVar[str] = SYSTEM
    CONFIGS: ClassVar[dict[str, dict[str, Any]]] = CONFIGS

    def __init__(self) -> None:
        self.p: dict[str, Any] | None = None
        self.steps_done = 0

    @classmethod
    def validate_params(cls, params: dict[str, Any], n_features: int | None, n_labels: int | None,
                        n_threads: int = 1) -> dict[str, Any]:
        """Check params without importing PyTorch (the runner calls this before any run)."""
        return resolve(params)

    # ---------------------------------------------------------------- contract

    def setup(self, data: Dataset, params: dict[str, Any], *, seed: int, n_threads: int,
              batches: BatchStream | None = None) -> None:
        check_setup_args(SYSTEM, seed, n_threads)
        p = resolve(params)
        if "batch_size" not in p:
            raise ValueError(f"{SYSTEM}: params must contain 'batch_size' (the runner puts it there)")
        data.validate()
        t0 = time.perf_counter()
        try:
            import torch
        except ImportError as e:                  # a missing library is an error, never a silent skip
            raise ImportError(f"{SYSTEM} needs PyTorch (pip install torch): {e}") from e
        from . import DeviceUnavailable
        if p["device"] == "gpu":
            if not torch.cuda.is_available():
                raise DeviceUnavailable("device = 'gpu' but PyTorch sees no CUDA device")
            self.dev = torch.device("cuda")
            torch.backends.cuda.matmul.allow_tf32 = bool(p["tf32"])
            torch.backends.cudnn.allow_tf32 = bool(p["tf32"])
        else:
            self.dev = torch.device("cpu")
        torch.set_num_threads(int(n_threads))      # the CPU side: batch encoding, and the math on the CPU
        self.torch, self.p = torch, p
        self.seed, self.n_threads = int(seed), int(n_threads)
        self.n_features, self.n_labels = data.n_features, data.n_labels
        self.batch_size = int(p["batch_size"])
        self.stream = batches if batches is not None else data.batches(self.batch_size, seed, shuffle=p["shuffle"])
        from .base import init_weights
        sizes = [self.n_features] + list(p["hidden"]) + [self.n_labels]
        init = init_weights(sizes, p["init"], float(p["init_std"]), derive_seed(seed, "init"))
        self.Ws = [torch.tensor(w, device=self.dev, requires_grad=True) for w, _ in init]
        self.bs = [torch.tensor(b, device=self.dev, requires_grad=True) for _, b in init]
        del init
        self.params = [t for pair in zip(self.Ws, self.bs) for t in pair]
        fused = self.dev.type == "cuda"
        self.opt = torch.optim.Adam(self.params, lr=float(p["lr"]), betas=(float(p["beta1"]), float(p["beta2"])),
                                    eps=float(p["eps"]), fused=fused)
        self.fused = fused
        self.steps_done = 0
        self._warmup(data)
        self.init_time_s = time.perf_counter() - t0

    def _warmup(self, data: Dataset) -> None:
        """One step and one prediction inside the untimed setup (CUDA context, kernels, allocator), then
        every weight and the optimiser state put back: the first timed step pays no start-up and training
        is unchanged. The batch order is not touched."""
        torch = self.torch
        saved = [t.detach().clone() for t in self.params]
        rows = min(self.batch_size, data.X_train.shape[0])
        self._step(data.X_train[:rows], data.Y_train[:rows])
        self.predict_topk(data.X_train[:2], 1)
        with torch.no_grad():
            for t, s in zip(self.params, saved):
                t.copy_(s)
        self.opt.state.clear()                      # Adam's moments and step count start from zero again
        self.opt.zero_grad(set_to_none=True)        # and no gradient of the warm-up batch is left behind
        self._sync()

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()

    def _x(self, X: sp.csr_matrix):
        torch = self.torch
        idx = torch.from_numpy(X.indices.astype(np.int64)).to(self.dev, non_blocking=True)
        off = torch.from_numpy(X.indptr[:-1].astype(np.int64)).to(self.dev, non_blocking=True)
        val = torch.from_numpy(X.data).to(self.dev, non_blocking=True)
        return idx, off, val

    def _hidden(self, X: sp.csr_matrix):
        torch = self.torch
        idx, off, val = self._x(X)
        h = torch.nn.functional.embedding_bag(idx, self.Ws[0], off, mode="sum", per_sample_weights=val)
        h = torch.relu(h + self.bs[0])
        for W, b in zip(self.Ws[1:-1], self.bs[1:-1]):
            h = torch.relu(h @ W + b)
        return h

    def loss(self, X: sp.csr_matrix, Y: sp.csr_matrix):
        """The batch loss as a tensor with its graph (the TF baselines' loss, see the module docstring)."""
        torch = self.torch
        rows, ids, w, has = (torch.from_numpy(a).to(self.dev, non_blocking=True) for a in encode_labels(Y))
        logits = self._hidden(X) @ self.Ws[-1] + self.bs[-1]             # [b, n_labels]
        lse = torch.logsumexp(logits, dim=1)
        target = torch.zeros(X.shape[0], device=self.dev, dtype=logits.dtype).index_add_(0, rows, w * logits[rows, ids])
        return (has * lse - target).sum() / X.shape[0]

    def _step(self, X: sp.csr_matrix, Y: sp.csr_matrix):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(X, Y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def train_steps(self, n_steps: int) -> StepStats:
        require_setup(SYSTEM, self.p is not None, "train_steps")
        check_int(SYSTEM, "n_steps", n_steps, 1)
        losses, n_samples = [], 0
        for _ in range(n_steps):
            batch = self.stream.next_batch()
            losses.append(self._step(batch.X, batch.Y))
            n_samples += batch.X.shape[0]
            self.steps_done += 1
        total = float(self.torch.stack(losses).sum())      # reads back: every step has finished
        self._sync()
        return StepStats(n_steps=n_steps, n_samples=n_samples, loss=total / n_steps,
                         epoch=self.stream.epoch_progress, counters={})

    def predict_topk(self, X_csr: sp.csr_matrix, k: int) -> np.ndarray:
        require_setup(SYSTEM, self.p is not None, "predict_topk")
        check_csr(X_csr, "X", self.n_features)
        check_int(SYSTEM, "k", k, 1, self.n_labels, f"in [1, n_labels={self.n_labels}]")
        torch = self.torch
        n = X_csr.shape[0]
        out = np.empty((n, k), np.int32)
        step = int(self.p["predict_batch"])
        with torch.no_grad():
            for lo in range(0, n, step):
                Xb = X_csr[lo:lo + step]
                logits = self._hidden(Xb) @ self.Ws[-1] + self.bs[-1]
                out[lo:lo + Xb.shape[0]] = torch.topk(logits, k, dim=1).indices.cpu().numpy()
        return out

    def get_params(self) -> dict[str, np.ndarray]:
        """{"W0": [fan_in, fan_out], "b0", ...} float32 copies (the engine's and the TF baselines' layout)."""
        if self.p is None:
            raise RuntimeError(f"{SYSTEM}: call setup() before get_params()")
        out = {}
        for i, (W, b) in enumerate(zip(self.Ws, self.bs)):
            out[f"W{i}"] = W.detach().cpu().numpy().astype(np.float32, copy=True)
            out[f"b{i}"] = b.detach().cpu().numpy().astype(np.float32, copy=True)
        return out

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"system": SYSTEM, "config": self.p["config"] if self.p else None,
                             "n_threads": getattr(self, "n_threads", None),
                             "device": self.p["device"] if self.p else None}
        if self.p is None:
            return d
        torch = self.torch
        d.update({
            "library": "pytorch", "torch_version": torch.__version__,
            "torch_device": str(self.dev),
            "gpu_name": torch.cuda.get_device_name(0) if self.dev.type == "cuda" else None,
            "tf32": bool(self.p["tf32"]) and self.dev.type == "cuda", "fused_adam": self.fused,
            "intra_op_threads": torch.get_num_threads(),
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.p.items()},
            "n_parameters": int(sum(t.numel() for t in self.params)),
            "init_time_s": self.init_time_s, "steps": self.steps_done,
        })
        return d
