"""The SLIDE network, Python side: refresh schedule, save/load, predict, recall (configuration and
memory preflight: engine/config.py). The arithmetic lives in engine/_core.pyx (see docs/engine.md for the exact semantics).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _core
from ._lsh import LSHIndex
from .config import (  # noqa: F401  (re-exported: the engine's public configuration names)
    CORRECTIONS, FAMILIES, LSH_SAMPLERS, MAX_LAYERS, MAX_RANGE_POW, SAMPLERS, Config, _preflight, auto_K,
    derive_seed, estimate_memory, expected_candidates, parse_config)

# ------------------------------------------------------------------------------------ network


def _check_csr(X, name: str, n_cols: int) -> sp.csr_matrix:
    if not (sp.isspmatrix_csr(X) or isinstance(X, sp.csr_array)):
        raise ValueError(f"{name} must be a scipy CSR matrix, got {type(X).__name__}")
    if X.dtype != np.float32:
        raise ValueError(f"{name} must have float32 values, got {X.dtype}")
    if X.indices.dtype != np.int32 or X.indptr.dtype != np.int32:
        raise ValueError(f"{name} must have int32 indices/indptr, got {X.indices.dtype}/{X.indptr.dtype}")
    if X.ndim != 2 or X.shape[1] != n_cols:
        raise ValueError(f"{name} has shape {X.shape}, expected {n_cols} columns")
    nnz = int(X.indptr[-1]) if len(X.indptr) else 0
    if len(X.indptr) != X.shape[0] + 1 or X.indptr[0] != 0 or nnz > len(X.indices) or np.any(np.diff(X.indptr) < 0):
        raise ValueError(f"{name} has a malformed indptr")
    if nnz:
        ind = X.indices[:nnz]
        lo, hi = int(ind.min()), int(ind.max())
        if lo < 0 or hi >= n_cols:
            raise ValueError(f"{name} has column ids out of range [0, {n_cols}): min {lo}, max {hi}"
                             + (" (labels out of range)" if name == "Y" else ""))
    if not X.has_canonical_format:         # sorted, no duplicates (the sparse hash needs it)
        X = X.copy()
        X.sum_duplicates()
    return X


DEFAULT_LAYOUT = "wmv,soa"


def _layout(v: str | None) -> str:
    """In-memory layout of weight and Adam-moment rows (internal; results do not depend on it), for
    layer 0 and for the later layers: "wmv" interleaves each row's weight, m and v ([rows][3][fan]) so
    a touched row is one contiguous block; "mv" interleaves only m and v; "soa" keeps three separate
    arrays. Default "wmv,soa": layer 0's rows are only ever touched sparsely (the features of a batch),
    while the output layer is also streamed whole (the `full` sampler, exact predict, rehash), which
    interleaving slows down. Benchmarks pass another one to `Network(layout=...)`."""
    v = DEFAULT_LAYOUT if v is None else v
    parts = v.split(",")
    if not 1 <= len(parts) <= 2 or any(p not in ("wmv", "mv", "soa") for p in parts):
        raise ValueError(f"layout must be one of wmv, mv, soa or two of them separated by a comma "
                         f"(layer 0, later layers); got {v!r}")
    return v


def _saved(z, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """Array `key` of a saved network, checked against the engine's size for it."""
    if key not in z:
        raise ValueError(f"saved network lacks array {key!r}")
    a = z[key]
    if a.size != math.prod(shape):
        raise ValueError(f"saved array {key!r} has {a.size} values, expected {math.prod(shape)}")
    return a.reshape(shape)


class Network:
    """A SLIDE network: sparse input -> hidden ReLU layers -> softmax output, LSH-sampled layers.

    Build with ``Network.from_params``; see docs/engine.md for the exact semantics.
    """

    def __init__(self, cfg: Config, *, seed: int = 0, n_threads: int = 1, layout: str | None = None,
                 out_pass: str | None = None, _init_weights: bool = True):
        if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1:
            raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.cfg = cfg
        self.seed = int(seed)
        self.n_threads = int(n_threads)
        self.memory_estimate = _preflight(cfg, self.n_threads)
        self.engine_seed = derive_seed(self.seed, "engine")
        L = cfg.n_layers
        samplers = [cfg.layer_sampler(l) for l in range(L)]
        qmode = cfg.sampler if cfg.sampler in LSH_SAMPLERS else "vanilla"
        self.out_pass = cfg.out_pass if out_pass is None else out_pass
        self._core = _core.Core(
            cfg.sizes, samplers, [cfg.target(l) for l in range(L)], [cfg.min_active_for(l) for l in range(L)],
            optimizer=cfg.optimizer, lr=cfg.lr, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps,
            query_mode=qmode, min_hits=cfg.threshold_m, seed=self.engine_seed, n_threads=self.n_threads,
            layout=_layout(layout), lsh_caps=[cfg.lsh_cap(l) for l in range(L)],
            rand_blocks=[cfg.rand_block(l) for l in range(L)], correct=cfg.correction == "logq",
            out_pass=self.out_pass)
        if _init_weights:
            rng = np.random.default_rng(derive_seed(self.seed, "init"))
            for l in range(L):
                n_in, n_out = cfg.sizes[l], cfg.sizes[l + 1]
                w = rng.standard_normal((n_in, n_out), dtype=np.float32)
                w *= np.float32(cfg.init_std)
                self._store_weight(l, w)
                del w
        self.debug_keep_active = False   # tests: keep each sample's output active set in last_active
        self.last_active = None
        self.last_active_layers = None
        self._tabled = [l for l in range(L) if samplers[l] == "lsh"]
        self.rehash_interval = cfg.rehash_samples()
        self._generation = {l: 0 for l in self._tabled}
        # refresh schedule state (samples / batches since the last rehash / rebuild)
        self._since_rehash = 0
        self._since_rebuild = 0
        self._batches_since_rehash = 0
        self._n_rehash_exp = 0
        self._c = {"steps": 0, "samples": 0, "rehashes": 0, "rebuilds": 0, "refresh_time_s": 0.0,
                   "step_time_s": 0.0, "active_out_sum": 0.0, "touched_frac_sum": 0.0,
                   "lsh_cand_sum": 0.0, "lsh_cand_batches": 0}
        # each sampled layer's tables: an LSHIndex (engine/_lsh.pyx), which validates and owns them; the
        # core samples from them and rebuilds them from its weight rows
        self._lsh: dict[int, LSHIndex] = {}
        for l in self._tabled:
            self._lsh[l] = LSHIndex(cfg.hash, cfg.sizes[l], cfg.K_for(l), cfg.L, cfg.range_pow, cfg.bucket_size,
                                    cfg.insertion, self._table_seed(l))
            self._core.attach_tables(l, self._lsh[l])
        self._build_tables()

    # -------------------------------------------------------------------------------- build
    @classmethod
    def from_params(cls, n_features: int, n_labels: int, params: dict[str, Any] | None, *, seed: int = 0,
                    n_threads: int = 1, layout: str | None = None, out_pass: str | None = None) -> "Network":
        """`layout` and `out_pass` (overrides param 'out_pass', the training step's pass order: "sample",
        or "row" for net_rowpass.pxd's row-ordered step) are for benchmarks. Results do not depend on the
        layout; the row order changes layer 0's update by float rounding only (docs/engine.md)."""
        return cls(parse_config(n_features, n_labels, params), seed=seed, n_threads=n_threads, layout=layout,
                   out_pass=out_pass)

    def _table_seed(self, l: int) -> int:
        ss = np.random.SeedSequence([self.engine_seed, 1 + l, self._generation.get(l, 0)])
        return int(ss.generate_state(1, np.uint64)[0])

    def _build_tables(self) -> None:
        t0 = time.perf_counter()
        for l in self._tabled:
            self._core.build(l, self.n_threads)
        if self._tabled:
            self._c["refresh_time_s"] += time.perf_counter() - t0

    def _store_weight(self, l: int, w: np.ndarray) -> None:
        """w in Keras layout [fan_in, fan_out] -> engine layout."""
        if l == 0:
            self._core.W[0][...] = w
        else:
            self._core.W[l][...] = w.T

    # -------------------------------------------------------------------------------- schedule
    def _refresh_if_due(self, b: int) -> None:
        if not self._tabled:
            return
        cfg = self.cfg
        if self._since_rebuild >= cfg.rebuild_every:
            t0 = time.perf_counter()
            for l in self._tabled:
                self._generation[l] += 1
                self._lsh[l].new_functions(self._table_seed(l))
                self._core.build(l, self.n_threads)
            self._c["refresh_time_s"] += time.perf_counter() - t0
            self._c["rebuilds"] += 1
            self._since_rebuild = self._since_rehash = self._batches_since_rehash = 0
            return
        if cfg.rehash == "fixed":
            due = self._since_rehash >= self.rehash_interval
        else:
            interval = max(1, round(cfg.rehash_n0 * math.exp(cfg.rehash_decay * self._n_rehash_exp)))
            due = self._batches_since_rehash >= interval
        if due:
            self._build_tables()
            self._c["rehashes"] += 1
            self._n_rehash_exp += 1
            self._since_rehash = self._batches_since_rehash = 0

    # -------------------------------------------------------------------------------- train
    def train_batch(self, X, Y) -> float:
        """One optimiser step on the batch; returns the batch's mean softmax cross-entropy."""
        X = _check_csr(X, "X", self.cfg.n_features)
        Y = _check_csr(Y, "Y", self.cfg.n_labels)
        b = X.shape[0]
        if Y.shape[0] != b:
            raise ValueError(f"X has {b} rows but Y has {Y.shape[0]}")
        if b < 1:
            raise ValueError("empty batch")
        self._refresh_if_due(b)
        t0 = time.perf_counter()
        max_labels = int(np.diff(Y.indptr).max())
        loss, st = self._core.train_batch(X.indptr, X.indices, X.data, Y.indptr, Y.indices, b, max_labels,
                                          self.debug_keep_active)
        self.last_active = st.get("active")
        self.last_active_layers = st.get("active_layers")
        self.last_active_parts = st.get("active_parts")
        self.last_logq = st.get("logq")
        c = self._c
        c["step_time_s"] += time.perf_counter() - t0
        c["steps"] += 1
        c["samples"] += b
        c["time_forward_backward_s"] = c.get("time_forward_backward_s", 0.0) + st["time_forward_backward_s"]
        c["time_update_s"] = c.get("time_update_s", 0.0) + st["time_update_s"]
        c["active_out_sum"] += st["mean_active_out"] * b
        for key in ("active_labels", "active_lsh", "active_random"):
            c[key + "_sum"] = c.get(key + "_sum", 0.0) + st[key] * b
        c["touched_frac_sum"] += st["touched_rows_out"] / self.cfg.n_labels
        if not math.isnan(st["mean_lsh_candidates"]):
            c["lsh_cand_sum"] += st["mean_lsh_candidates"] * b
            c["lsh_cand_batches"] += b
        self._since_rehash += b
        self._since_rebuild += b
        self._batches_since_rehash += 1
        return float(loss)

    # -------------------------------------------------------------------------------- predict
    def predict_topk(self, X, k: int, mode: str = "exact") -> np.ndarray:
        """int32 [n, k] output ids, best first. mode "exact": the full network; "lsh": sampled layers
        score only their candidates (padded with random neurons up to max(min_active, k))."""
        if mode not in ("exact", "lsh"):
            raise ValueError(f"predict mode must be 'exact' or 'lsh', got {mode!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.cfg.n_labels:
            raise ValueError(f"k must be an integer in 1..{self.cfg.n_labels}, got {k!r}")
        X = _check_csr(X, "X", self.cfg.n_features)
        n = X.shape[0]
        # exact mode holds one full output row per thread; chunking keeps other buffers bounded
        out = np.empty((n, int(k)), np.int32)
        chunk = 4096
        for lo in range(0, n, chunk):
            Xc = X[lo:lo + chunk]
            out[lo:lo + chunk] = self._core.predict(Xc.indptr, Xc.indices, Xc.data, Xc.shape[0], int(k),
                                                   mode == "exact", self.n_threads)
        return out

    # -------------------------------------------------------------------------------- params
    def get_params(self) -> dict[str, np.ndarray]:
        """Copies in TF/Keras layout: W{l} [fan_in, fan_out], b{l} [fan_out]; layer 0 = input->hidden."""
        d = {}
        sizes = self.cfg.sizes
        for l in range(self.cfg.n_layers):
            n_in, n_out = sizes[l], sizes[l + 1]
            if l == 0:
                d["W0"] = self._core.W[0].copy()          # C-contiguous copy (W[0] may be a strided view)
            else:
                d[f"W{l}"] = self._core.W[l].T.copy()
            d[f"b{l}"] = self._core.b[l].copy()
        return d

    def set_params(self, d: dict[str, np.ndarray]) -> None:
        """Replace weights (same layout as get_params; every key required). Optimiser state is kept;
        hash tables are rebuilt from the new weights."""
        sizes = self.cfg.sizes
        want = {}
        for l in range(self.cfg.n_layers):
            want[f"W{l}"] = (sizes[l], sizes[l + 1])
            want[f"b{l}"] = (sizes[l + 1],)
        missing = sorted(set(want) - set(d))
        extra = sorted(set(d) - set(want))
        if missing or extra:
            raise ValueError(f"set_params: missing keys {missing}, unexpected keys {extra}")
        arrs = {}
        for key, shape in want.items():
            a = np.asarray(d[key])
            if a.shape != shape:
                raise ValueError(f"set_params: {key} has shape {a.shape}, expected {shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"set_params: {key} has non-finite values")
            arrs[key] = a.astype(np.float32, copy=False)
        for l in range(self.cfg.n_layers):
            self._store_weight(l, arrs[f"W{l}"])
            self._core.b[l][...] = arrs[f"b{l}"]
        self._build_tables()

    # -------------------------------------------------------------------------------- save/load
    def save(self, path) -> Path:
        """npz with weights, optimiser state, step counters, schedule state, config and seed."""
        path = Path(path)
        core = self._core
        arrays = {}
        for l in range(self.cfg.n_layers):
            # flat engine-row order (the file format does not depend on the in-memory layout)
            arrays[f"W{l}"] = np.ascontiguousarray(core.W[l]).reshape(-1)
            arrays[f"b{l}"] = core.b[l]
            if self.cfg.optimizer == "adam":
                for name in ("mW", "vW"):
                    arrays[f"{name}{l}"] = np.ascontiguousarray(getattr(core, name)[l]).reshape(-1)
                for name in ("mb", "vb"):
                    arrays[f"{name}{l}"] = getattr(core, name)[l]
        state = {
            "format": "slidebench-engine-1", "n_features": self.cfg.n_features, "n_labels": self.cfg.n_labels,
            "params": self.cfg.params, "seed": self.seed, "step": int(core.step),
            "samples_seen": int(core.samples_seen), "generation": {str(k): v for k, v in self._generation.items()},
            "since_rehash": self._since_rehash, "since_rebuild": self._since_rebuild,
            "batches_since_rehash": self._batches_since_rehash, "n_rehash_exp": self._n_rehash_exp,
            "counters": self._c, "n_threads": self.n_threads,
            "table_builds": {str(l): self._lsh[l].n_builds for l in self._tabled},
        }
        arrays["state"] = np.frombuffer(json.dumps(state).encode(), np.uint8)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path, *, n_threads: int | None = None) -> "Network":
        """Rebuild a saved network (hash tables are rebuilt from the saved weights with the saved
        hash-function generation) and continue training from it."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no saved network at {path}")
        with np.load(path, allow_pickle=False) as z:
            if "state" not in z:
                raise ValueError(f"{path} is not a saved slidebench engine network (no state record)")
            state = json.loads(bytes(z["state"]).decode())
            if state.get("format") != "slidebench-engine-1":
                raise ValueError(f"{path}: unknown format {state.get('format')!r}")
            cfg = parse_config(state["n_features"], state["n_labels"], state["params"])
            net = cls.__new__(cls)
            net._init_from_state(cfg, state, z, n_threads)
        return net

    def _init_from_state(self, cfg: Config, state: dict, z, n_threads: int | None) -> None:
        gens = {int(k): v for k, v in state["generation"].items()}
        nt = int(n_threads) if n_threads is not None else int(state.get("n_threads", 1))
        # construct without LSH tables first, then restore arrays and the hash generation
        Network.__init__(self, cfg, seed=state["seed"], n_threads=nt, _init_weights=False)
        core = self._core
        for l in range(cfg.n_layers):
            core.W[l][...] = _saved(z, f"W{l}", core.W[l].shape)
            core.b[l][...] = _saved(z, f"b{l}", core.b[l].shape)
            if cfg.optimizer == "adam":
                for name in ("mW", "vW", "mb", "vb"):
                    arr = getattr(core, name)[l]
                    arr[...] = _saved(z, f"{name}{l}", arr.shape)
        core.step = state["step"]
        core.samples_seen = state["samples_seen"]
        self._generation = {l: gens.get(l, 0) for l in self._tabled}
        builds = {int(k): v for k, v in state.get("table_builds", {}).items()}
        for l in self._tabled:
            if self._generation[l]:
                self._lsh[l].new_functions(self._table_seed(l))
            if l in builds:      # the rebuild below continues the saved build stream
                self._lsh[l].n_builds = max(builds[l] - 1, 0)
        self._build_tables()
        self._since_rehash = state["since_rehash"]
        self._since_rebuild = state["since_rebuild"]
        self._batches_since_rehash = state["batches_since_rehash"]
        self._n_rehash_exp = state["n_rehash_exp"]
        self._c = dict(state["counters"])

    # -------------------------------------------------------------------------------- info
    @property
    def step(self) -> int:
        return int(self._core.step)

    @property
    def samples_seen(self) -> int:
        return int(self._core.samples_seen)

    def table_bytes(self) -> int:
        return sum(self._lsh[l].table_nbytes for l in self._tabled)

    def counters(self) -> dict[str, float]:
        c = self._c
        s = max(c["samples"], 1)
        return {
            "samples": c["samples"], "steps": c["steps"], "rehashes": c["rehashes"], "rebuilds": c["rebuilds"],
            "mean_active_out": c["active_out_sum"] / s,
            "frac_out_touched": c["touched_frac_sum"] / max(c["steps"], 1),
            "frac_out_active": c["active_out_sum"] / s / self.cfg.n_labels,
            "mean_lsh_candidates": (c["lsh_cand_sum"] / c["lsh_cand_batches"]) if c["lsh_cand_batches"] else float("nan"),
            "refresh_time_s": c["refresh_time_s"], "step_time_s": c["step_time_s"],
            "time_forward_backward_s": c.get("time_forward_backward_s", 0.0),
            "time_update_s": c.get("time_update_s", 0.0),
            "table_bytes": self.table_bytes(),
            # per-sample means since the start (SlideTrainer reports them per train_steps call)
            "active_labels": c.get("active_labels_sum", 0.0) / s, "active_lsh": c.get("active_lsh_sum", 0.0) / s,
            "active_random": c.get("active_random_sum", 0.0) / s,
        }

    # -------------------------------------------------------------------------------- recall
    def lsh_candidates(self, X, max_out: int | None = None) -> list[np.ndarray]:
        """For each row of X, the output layer's LSH candidates as the training sampler's LSH part
        gets them (up to its LSH share, or max_out), from exact hidden activations. Untimed; only for
        a network whose output layer is LSH-sampled."""
        l = self.cfg.n_layers - 1
        if l not in self._tabled:
            raise ValueError("lsh_candidates: the output layer has no LSH tables (sampler is not an LSH one)")
        X = _check_csr(X, "X", self.cfg.n_features)
        if l > 0 and self.cfg.layer_sampler(l - 1) != "full":
            raise ValueError("lsh_candidates: only for a network whose last hidden layer is computed in full")
        H = self._core.hidden(X.indptr, X.indices, X.data, X.shape[0], self.n_threads)
        cap = max(0, min(self.cfg.lsh_cap(l) if max_out is None else int(max_out), self.cfg.sizes[l + 1]))
        qmode = self.cfg.sampler if self.cfg.sampler in LSH_SAMPLERS else "vanilla"
        indptr, ids, _ = self._lsh[l].query_many(np.ascontiguousarray(H, np.float32), mode=qmode, target=cap,
                                                 min_hits=self.cfg.threshold_m, max_out=cap)
        return [ids[indptr[i]:indptr[i + 1]] for i in range(X.shape[0])]

    def lsh_recall(self, X, k: int = 10) -> float:
        """Mean over the rows of X of |LSH candidates & exact top-k outputs| / k."""
        cands = self.lsh_candidates(X)
        top = self.predict_topk(X, k, mode="exact")
        hits = [np.intersect1d(c, t[t >= 0]).size / k for c, t in zip(cands, top)]
        return float(np.mean(hits)) if hits else float("nan")

    def describe(self) -> dict[str, Any]:
        return {"sizes": self.cfg.sizes, "sampler": self.cfg.sampler, "lsh_layers": self.cfg.lsh_layers,
                "layer_samplers": [self.cfg.layer_sampler(l) for l in range(self.cfg.n_layers)],
                "targets": [self.cfg.target(l) for l in range(self.cfg.n_layers)],
                "lsh_caps": [self.cfg.lsh_cap(l) for l in range(self.cfg.n_layers)],
                "random_blocks": [self.cfg.rand_block(l) for l in range(self.cfg.n_layers)],
                "K": [self.cfg.K_for(l) for l in self._tabled], "correction": self.cfg.correction,
                "out_pass": self.out_pass,
                "n_threads": self.n_threads, "seed": self.seed, "kernels": _core.kernels_dispatch(),
                "memory_estimate_bytes": self.memory_estimate["total"], "table_bytes": self.table_bytes()}
