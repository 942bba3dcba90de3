"""TF-free checks of a baseline's parameters and memory, for the harness's checks before any run.

``validate_params(system, params, n_features=None, n_labels=None, n_threads=1)`` resolves the named
configuration plus overrides exactly as ``setup`` does (``resolve_params`` + the system's extra
checks), raising ValueError naming the key; with the data's shapes it also runs the memory preflight.
``preflight_memory`` is the MemoryError ``setup`` raises before TensorFlow allocates anything.
Importing this module never imports TensorFlow.
"""
from __future__ import annotations

import importlib
from typing import Any

SYSTEMS = {"tf_full_softmax": "slidebench.baselines.full_softmax:FullSoftmaxTrainer",
           "tf_sampled_softmax": "slidebench.baselines.sampled_softmax:SampledSoftmaxTrainer"}


def _cls(system: str):
    if system not in SYSTEMS:
        raise ValueError(f"unknown baseline system {system!r}; known: {', '.join(sorted(SYSTEMS))}")
    mod, _, name = SYSTEMS[system].partition(":")
    return getattr(importlib.import_module(mod), name)      # these modules do not import TensorFlow


def estimate_memory(system: str, p: dict[str, Any], n_features: int, n_labels: int) -> dict[str, int]:
    """Bytes a resolved configuration needs: weights with optimiser state (and the dense input-layer
    gradient of the sparse_matmul path), the batch's output-layer activations, one prediction block's
    logits."""
    sizes = [int(n_features)] + [int(h) for h in p["hidden"]] + [int(n_labels)]
    n_w = sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(sizes) - 1))
    copies = 1 + (2 if p["optimizer"] == "adam" else 0)
    weights = 4 * n_w * copies
    grads = 4 * n_w if p["input_path"] == "sparse_matmul" or p["optimizer_impl"] == "keras" else \
        4 * (n_w - sizes[0] * sizes[1])
    bs = int(p["batch_size"])
    if system == "tf_full_softmax":
        out_cols = n_labels                                  # dense logits over every label
    else:                                                    # sampled classes + true-label slots
        ns = p["num_sampled"]
        n_sampled = int(max(1, round(ns * n_labels))) if ns < 1 else int(ns)
        n_true = 64 if p.get("num_true") in ("auto", "max") else int(p.get("num_true") or 1)
        out_cols = min(n_labels, n_sampled + n_true)
    batch = 4 * bs * out_cols * 3
    predict = 4 * int(p["predict_batch"]) * n_labels         # one block of logits
    init = 4 * max(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
    return {"weights": weights, "gradients": grads, "batch": batch, "predict": predict, "init": init,
            "total": weights + grads + batch + predict + init}


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def preflight_memory(system: str, p: dict[str, Any], n_features: int, n_labels: int,
                     available: int | None = None) -> dict[str, int]:
    """MemoryError (before anything is allocated) when the estimate exceeds the available memory."""
    est = estimate_memory(system, p, n_features, n_labels)
    if available is None:
        import psutil
        available = int(psutil.virtual_memory().available)
    if est["total"] > available:
        parts = ", ".join(f"{k} {_fmt(v)}" for k, v in est.items() if k != "total")
        raise MemoryError(f"{system}: this configuration needs about {_fmt(est['total'])} ({parts}) but only "
                          f"{_fmt(available)} is available (hidden={p['hidden']}, {n_features} features, "
                          f"{n_labels} labels, batch_size={p['batch_size']}, predict_batch={p['predict_batch']})")
    return est


def validate_params(system: str, params: dict[str, Any], n_features: int | None = None,
                    n_labels: int | None = None, n_threads: int = 1) -> dict[str, Any]:
    """The resolved parameters (ValueError naming the key when one is wrong; MemoryError when the data's
    shapes are given and the run cannot fit)."""
    from .config import resolve_params
    cls = _cls(system)
    p = resolve_params(system, cls.CONFIGS, params, cls.EXTRA_KEYS)
    cls._validate_extra(cls.__new__(cls), p)       # the extra checks read only self.system
    if n_features is not None and n_labels is not None:
        preflight_memory(system, p, n_features, n_labels)
    return p
