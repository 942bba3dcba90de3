"""The SLIDE engine as a Trainer (system name ``slide``).

Params: the runner's keys (``batch_size``, ``shuffle``, ``config``) plus the engine's flat keys
(see slidebench.engine.network / docs/engine.md). ``config`` names a starting point:

* ``default``: chosen from the sampling evidence (docs/engine.md): 1,000 active output neurons a
  sample, a uniform random block with the log-inclusion-probability correction, Adam 3e-3;
* ``lsh``: the best LSH-based configuration of that evidence (500 SimHash top-k + 500 uniform, corrected);
* ``paper``: the 2019 release's settings (DWTA K=6 L=50 vanilla padded to 0.5%, no correction, Adam 1e-4).

Explicit params override the named configuration; unknown keys raise ValueError (from the engine).
Every configuration trains in the row order (``out_pass = "row"``) where the network's shape runs it
and in the sample order otherwise, unless the params name ``out_pass``.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ..contract import RUNNER_KEYS, BatchStream, Dataset, StepStats, derive_seed  # noqa: F401

CONFIGS: dict[str, dict[str, Any]] = {
    # Chosen from benchmarks/sampling_evidence.py (docs/engine.md, "Sampling: the evidence"): at an
    # equal active set of 1,000 neurons, a uniform random block with the log-inclusion correction
    # learned fastest of every sampled configuration on delicious-small and amazon-small; LSH
    # candidates in the active set (500 or 100 of the 1,000, corrected or not) lowered P@1, and
    # LSH alone collapsed. So the default samples no LSH candidates.
    "default": {"hidden": [128], "optimizer": "adam", "lr": 3e-3, "sampler": "random", "active": 1000,
                "correction": "logq"},
    # The best LSH-based configuration of the same evidence (for experiments about LSH itself):
    # 500 SimHash top-k candidates (K auto, L 25) + a block of 500 uniform neurons, corrected.
    "lsh": {"hidden": [128], "optimizer": "adam", "lr": 3e-3, "sampler": "topk", "hash": "simhash", "K": "auto",
            "L": 25, "range_pow": 18, "bucket_size": 128, "active": 1000, "lsh_active": 500, "random_active": 500,
            "correction": "logq"},
    # The 2019 release's choices: the union of the hit buckets (DWTA K=6, L=50) padded with random
    # neurons up to 0.5% of the outputs, no random block, no correction, fixed refresh, lr 1e-4.
    "paper": {"hidden": [128], "optimizer": "adam", "lr": 1e-4, "sampler": "vanilla", "hash": "dwta", "K": 6,
              "L": 50, "range_pow": 18, "bucket_size": 128, "insertion": "fifo", "active": 0.005,
              "lsh_active": None, "random_active": 0, "min_active": None, "correction": "none",
              "rehash": "fixed", "rehash_every": 6400, "rebuild_every": 128000, "init_std": 0.01},
}


def _pass_order(engine_params: dict[str, Any], n_features: int, n_labels: int) -> str:
    """The training step's pass order when the params do not name one: "row" (engine/net_rowpass.pxd:
    the same step up to the hidden deltas' rounding, bitwise the same at any thread count, 1.10x the
    sample order's rate on the headline's amazon shape at 2 threads, docs/engine.md) where the
    network's shape runs it (one hidden layer computed in full, a sampled output layer), else "sample"."""
    from ..engine import parse_config
    from ..engine.config import row_pass_fits
    cfg = parse_config(n_features, n_labels, {**engine_params, "out_pass": "sample"})
    return "row" if row_pass_fits([cfg.layer_sampler(l) for l in range(cfg.n_layers)]) else "sample"


class SlideTrainer:
    """Trainer contract on top of slidebench.engine.Network."""

    system: ClassVar[str] = "slide"
    CONFIGS: ClassVar[dict[str, dict[str, Any]]] = CONFIGS

    def __init__(self) -> None:
        self.net = None
        self.stream: BatchStream | None = None

    @classmethod
    def validate_params(cls, params: dict[str, Any], n_features: int | None, n_labels: int | None,
                        n_threads: int = 1) -> dict:
        """Check params as ``setup`` would, without allocating (the engine's parse_config) and the memory
        preflight against the data's shapes; ValueError/MemoryError naming the key or the need."""
        import psutil

        from ..engine import estimate_memory, parse_config
        engine_params = cls._engine_params(params, n_features, n_labels)
        if n_features is None or n_labels is None:         # shapes unknown: the keys and values only
            parse_config(1, 1, engine_params)
            return engine_params
        need = estimate_memory(n_features, n_labels, engine_params, n_threads=n_threads)   # validates too
        avail = int(psutil.virtual_memory().available)
        if need > avail:
            raise MemoryError(f"slide: this configuration needs about {need / 2**30:.1f} GiB but only "
                              f"{avail / 2**30:.1f} GiB is available ({n_features} features, {n_labels} labels)")
        return engine_params

    @classmethod
    def stale_log(cls, params: dict[str, Any], run_start: dict[str, Any]) -> str | None:
        """Why a finished run log of these params (the same config hash) was trained in another pass order
        than this trainer resolves for them (``_pass_order``; the hash does not include it), or None. A log
        whose engine description names no ``out_pass`` was written before the engine had the row order
        (043313f), in the sample order. Params that name ``out_pass`` are covered by the hash."""
        if not isinstance(params, dict) or "out_pass" in params:
            return None
        ds = run_start.get("dataset") or {}
        nf, nl = ds.get("n_features"), ds.get("n_labels")
        if nf is None or nl is None:
            return None
        want = cls._engine_params(params, int(nf), int(nl)).get("out_pass", "sample")
        had = ((run_start.get("describe") or {}).get("engine") or {}).get("out_pass", "sample")
        if had != want:
            return (f"it was trained in the {had!r} pass order, and this version of slidebench trains the same "
                    f"configuration in the {want!r} order (slidebench/trainers/slide.py, _pass_order)")
        return None

    @staticmethod
    def _engine_params(params: dict[str, Any], n_features: int | None = None,
                       n_labels: int | None = None) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise ValueError(f"slide: params must be a dict, got {type(params).__name__}")
        name = params.get("config", "default")
        if name not in CONFIGS:
            raise ValueError(f"slide: unknown config {name!r}; known configs: {', '.join(sorted(CONFIGS))}")
        shuffle = params.get("shuffle", True)
        if not isinstance(shuffle, bool):
            raise ValueError(f"slide: 'shuffle' must be true or false, got {shuffle!r}")
        engine_params = dict(CONFIGS[name])
        engine_params.update({k: v for k, v in params.items() if k not in ("shuffle", "config")})
        if "out_pass" not in engine_params and n_features is not None and n_labels is not None:
            engine_params["out_pass"] = _pass_order(engine_params, n_features, n_labels)
        return engine_params

    def setup(self, data: Dataset, params: dict[str, Any], *, seed: int, n_threads: int,
              batches: BatchStream | None = None) -> None:
        from ..engine import Network

        if isinstance(params, dict) and "batch_size" not in params:
            raise ValueError("slide: params must contain 'batch_size' (the runner puts it there)")
        data.validate()
        engine_params = self._engine_params(params, data.n_features, data.n_labels)
        name = params.get("config", "default")
        shuffle = params.get("shuffle", True)
        self.params = dict(params)
        self.config = name
        self.batch_size = int(params["batch_size"])
        self.n_threads = int(n_threads)
        self.predict_mode = engine_params.get("predict_mode", "exact")
        self.net = Network.from_params(data.n_features, data.n_labels, engine_params,
                                       seed=derive_seed(seed, "slide"), n_threads=self.n_threads)
        self.stream = batches if batches is not None else data.batches(self.batch_size, seed, shuffle=shuffle)
        self._recall_seed = derive_seed(seed, "lsh_recall")
        self._recall_rows: np.ndarray | None = None
        self._parts_mark = self._parts_sums()

    def train_steps(self, n_steps: int) -> StepStats:
        if self.net is None or self.stream is None:
            raise RuntimeError("slide: setup() must be called before train_steps()")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        loss_sum, n_samples, done = 0.0, 0, 0
        for _ in range(n_steps):
            batch = self.stream.next_batch()
            b = batch.X.shape[0]
            loss = self.net.train_batch(batch.X, batch.Y)
            loss_sum += loss * b
            n_samples += b
            done += 1
            if math.isnan(loss):     # diverged: stop early, the runner sees the NaN
                break
        counters = self.net.counters()
        # active-set composition: per-sample means over the samples of this call
        mark, self._parts_mark = self._parts_mark, self._parts_sums()
        n = max(self._parts_mark[0] - mark[0], 1)
        for i, key in enumerate(("active_labels", "active_lsh", "active_random")):
            counters[key] = (self._parts_mark[1 + i] - mark[1 + i]) / n
        return StepStats(n_steps=done, n_samples=n_samples, loss=loss_sum / max(n_samples, 1),
                         epoch=self.stream.epoch_progress, counters=counters)

    def _parts_sums(self) -> tuple[float, float, float, float]:
        c = self.net._c
        return (c["samples"], c.get("active_labels_sum", 0.0), c.get("active_lsh_sum", 0.0),
                c.get("active_random_sum", 0.0))

    RECALL_QUERIES: ClassVar[int] = 256

    def eval_metrics(self, X_csr: sp.csr_matrix) -> dict[str, float]:
        """Untimed metrics the runner logs at each evaluation. For an LSH sampler:
        ``lsh_recall_at_10``, recall@10 of the output layer's LSH candidates (its LSH share, as the
        training sampler asks for them) against the exact top-10 output neurons, on a fixed sample of
        at most 256 of these rows (chosen once, from the run seed); {} for full/random samplers."""
        if self.net is None:
            raise RuntimeError("slide: setup() must be called before eval_metrics()")
        cfg = self.net.cfg
        if cfg.layer_sampler(cfg.n_layers - 1) != "lsh" or X_csr.shape[0] == 0:
            return {}
        n = X_csr.shape[0]
        if self._recall_rows is None or self._recall_rows.max(initial=-1) >= n:
            rng = np.random.default_rng(self._recall_seed)
            self._recall_rows = np.sort(rng.choice(n, size=min(n, self.RECALL_QUERIES), replace=False))
        X = sp.csr_matrix(X_csr)[self._recall_rows]
        return {"lsh_recall_at_10": self.net.lsh_recall(X, 10)}

    def predict_topk(self, X_csr: sp.csr_matrix, k: int) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("slide: setup() must be called before predict_topk()")
        return self.net.predict_topk(X_csr, k, mode=self.predict_mode)

    def describe(self) -> dict[str, Any]:
        from ..engine import build_info

        d: dict[str, Any] = {"system": self.system, "config": getattr(self, "config", "default"),
                             "n_threads": getattr(self, "n_threads", None), "device": "cpu",
                             "build": build_info(), "predict_mode": getattr(self, "predict_mode", "exact")}
        if self.net is not None:
            d["engine"] = self.net.describe()
            d["counters"] = self.net.counters()
        return d
