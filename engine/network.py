"""The SLIDE network, Python side: configuration, validation, refresh schedule, save/load, memory
preflight. The arithmetic lives in engine/_core.pyx (see docs/engine.md for the exact semantics).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..contract import derive_seed
from . import _core

LSH_SAMPLERS = ("vanilla", "topk", "threshold")
SAMPLERS = LSH_SAMPLERS + ("random", "full")
FAMILIES = ("dwta", "simhash", "wta", "doph")
MAX_RANGE_POW = 30
MAX_LAYERS = 8

# keys the engine accepts; batch_size is accepted and ignored (the harness passes it)
_DEFAULTS: dict[str, Any] = {
    "hidden": [128], "optimizer": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
    "init_std": 0.01, "sampler": "vanilla", "lsh_layers": "output", "hash": "dwta", "K": 6, "L": 50,
    "range_pow": 18, "bucket_size": 128, "insertion": "fifo", "active": 0.005, "min_active": None,
    "threshold_m": 2, "rehash": "fixed", "rehash_every": 6400, "rebuild_every": 128000,
    "rehash_n0": 50, "rehash_decay": 0.05, "batch_size": None, "predict_mode": "exact",
    "lsh_active": None, "random_active": 0, "correction": "none",
}
CORRECTIONS = ("none", "logq")
# per-code collision probability of two unrelated vectors, for K = "auto" (docs/engine.md)
_AUTO_P = {"simhash": 0.5, "doph": 1.0 / 3.0}


@dataclass
class Config:
    n_features: int
    n_labels: int
    hidden: list[int]
    optimizer: str
    lr: float
    beta1: float
    beta2: float
    eps: float
    init_std: float
    sampler: str
    lsh_layers: list[int]
    hash: str
    K: int | str
    L: int
    range_pow: int
    bucket_size: int
    insertion: str
    active: float
    min_active: int | None
    threshold_m: int
    rehash: str
    rehash_every: int | str
    rebuild_every: int
    rehash_n0: int
    rehash_decay: float
    batch_size: int | None
    predict_mode: str
    lsh_active: float | None = None
    random_active: float = 0
    correction: str = "none"
    params: dict[str, Any] = field(default_factory=dict)   # the params as given (for save/describe)

    @property
    def sizes(self) -> list[int]:
        return [self.n_features, *self.hidden, self.n_labels]

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1

    def layer_sampler(self, l: int) -> str:
        """'full', 'lsh' or 'random' for layer l."""
        if self.sampler == "full" or l not in self.lsh_layers:
            return "full"
        return "random" if self.sampler == "random" else "lsh"

    def target(self, l: int) -> int:
        n = self.sizes[l + 1]
        t = math.ceil(self.active * n) if self.active < 1 else int(self.active)
        return max(1, min(t, n))

    def min_active_for(self, l: int) -> int:
        n = self.sizes[l + 1]
        m = self.target(l) if self.min_active is None else int(self.min_active)
        return min(m, n)

    def _share(self, v: float, l: int) -> int:
        """A fraction (< 1) of layer l's target, or a count."""
        return math.ceil(v * self.target(l)) if 0 < v < 1 else int(v)

    def rand_block(self, l: int) -> int:
        """The guaranteed block of uniformly random neurons per sample (lsh sampler)."""
        return min(self._share(self.random_active, l), self.sizes[l + 1])

    def lsh_cap(self, l: int) -> int:
        """LSH candidates kept per sample, at most (lsh sampler): `lsh_active`, or the target minus
        the random block."""
        if self.lsh_active is None:
            return max(self.target(l) - self.rand_block(l), 0)
        return min(self._share(self.lsh_active, l), self.sizes[l + 1])

    def rehash_samples(self) -> int:
        """Samples between rehashes of the fixed schedule: `rehash_every`, or for "auto" the interval
        at which a rehash costs about REHASH_SHARE (10%) of training time under a cost model (work
        units, calibrated on the 670k-output benchmark, docs/engine.md):
            rehash = sum over tabled layers of n_out * (hash_units(family) + L)
            step   = batch * (sum over layers of active_l * fan_in_l) * 4   (layer 0: fan_in = 100 nonzeros)
            interval_batches = rehash * (1 - share) / (share * step)
        hash_units: dwta/wta/doph K*L*window, simhash dim*K*L/3 (a third of the projection is nonzero)."""
        if self.rehash_every != "auto":
            return int(self.rehash_every)
        b = self.batch_size or 128
        rehash = step = 0.0
        for l in range(self.n_layers):
            fan_in, n_out = self.sizes[l], self.sizes[l + 1]
            act = n_out if self.layer_sampler(l) == "full" else max(self.target(l), self.min_active_for(l))
            if l == 0:               # sparse input: about REHASH_NNZ nonzeros a sample
                fan_in = min(fan_in, REHASH_NNZ)
            step += b * act * fan_in * 4.0
            if self.layer_sampler(l) == "lsh":
                K = self.K_for(l)
                units = fan_in * K * self.L / 3.0 if self.hash == "simhash" else K * self.L * min(8, fan_in)
                rehash += n_out * (units + self.L) * REHASH_COST_SCALE
        if step <= 0 or rehash <= 0:
            return 6400
        batches = rehash * (1 - REHASH_SHARE) / (REHASH_SHARE * step)
        return int(max(1, math.ceil(batches)) * b)

    def K_for(self, l: int) -> int:
        """K of layer l's tables: the configured one, or for K = "auto" auto_K(...)."""
        if self.K != "auto":
            return int(self.K)
        return auto_K(self.hash, self.sizes[l], self.sizes[l + 1], self.L, self.range_pow, self.bucket_size,
                      self.lsh_cap(l))

    def uses_tables(self) -> bool:
        return self.sampler in LSH_SAMPLERS


def expected_candidates(family: str, dim: int, n: int, K: int, L: int, range_pow: int, bucket_size: int) -> float:
    """Expected distinct neurons the L hit buckets hold for a query unrelated to the weights:
    n * (1 - (1 - P)^L), P = p^K + (1 - p^K) 2^-range_pow (a key folded into range_pow bits collides
    by chance too), p the per-code collision probability of unrelated vectors (SimHash 1/2, WTA/DWTA
    1/window, DOPH 1/3), capped at L * bucket_size."""
    if family in ("wta", "dwta"):
        w = 1
        while w * 2 <= min(8, dim):
            w *= 2
        p = 1.0 / w
    else:
        p = _AUTO_P[family]
    pk = p ** K
    P = pk + (1.0 - pk) * 2.0 ** -range_pow
    return min(n * (1.0 - (1.0 - P) ** L), float(L * bucket_size), float(n))


AUTO_K_MARGIN = 2.0
REHASH_SHARE = 0.10          # rehash_every = "auto": target share of training time
REHASH_COST_SCALE = 1.0      # a rehash work unit against a step work unit (calibrated, docs/engine.md)
REHASH_NNZ = 100             # input nonzeros a sample assumed by the cost model


def auto_K(family: str, dim: int, n: int, L: int, range_pow: int, bucket_size: int, share: int) -> int:
    """The largest K (1..32) whose expected_candidates covers AUTO_K_MARGIN (2) x the LSH share: the
    most selective hash that still fills the share when real queries hit skewed buckets (trained
    weights are not unrelated to the queries), leaving topk/threshold a choice. K = 1 when even
    K = 1 falls short."""
    best = 1
    for K in range(1, 33):
        if K * L > 4096:
            break
        if expected_candidates(family, dim, n, K, L, range_pow, bucket_size) >= AUTO_K_MARGIN * max(share, 1):
            best = K
        else:
            break
    return best


def _int(params: dict, key: str, lo: int, hi: int | None = None) -> int:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (isinstance(v, float) and v.is_integer()):
        raise ValueError(f"param {key!r} must be an integer, got {v!r}")
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"param {key!r} must be {rng}, got {v}")
    return v


def _float(params: dict, key: str, lo: float, hi: float | None = None, lo_open: bool = True) -> float:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"param {key!r} must be a number, got {v!r}")
    v = float(v)
    bad = (v <= lo if lo_open else v < lo) or (hi is not None and v >= hi) or not math.isfinite(v)
    if bad:
        raise ValueError(f"param {key!r} = {v} is out of range ({'>' if lo_open else '>='} {lo}"
                         f"{'' if hi is None else f' and < {hi}'})")
    return v


def _choice(params: dict, key: str, options: tuple[str, ...]) -> str:
    v = params[key]
    if v not in options:
        raise ValueError(f"param {key!r} must be one of {', '.join(options)}; got {v!r}")
    return v


def parse_config(n_features: int, n_labels: int, params: dict[str, Any] | None) -> Config:
    """Validate a flat params dict (the "slide" system's keys) into a Config; ValueError on any
    unknown key or bad value, naming it."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown engine param(s): {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(_DEFAULTS))}")
    for name, v in (("n_features", n_features), ("n_labels", n_labels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if v >= 2**31 - 1:
            raise ValueError(f"{name} = {v} does not fit the engine's int32 ids")
    p = {**_DEFAULTS, **params}
    hidden = p["hidden"]
    if isinstance(hidden, (int, np.integer)):
        hidden = [int(hidden)]
    if not isinstance(hidden, (list, tuple)) or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in hidden):
        raise ValueError(f"param 'hidden' must be a list of positive layer sizes, got {p['hidden']!r}")
    hidden = [int(h) for h in hidden]
    if not hidden:
        raise ValueError("param 'hidden' must name at least one hidden layer (sparse input -> hidden ReLU "
                         "layers -> output)")
    if len(hidden) + 1 > MAX_LAYERS:
        raise ValueError(f"param 'hidden': at most {MAX_LAYERS - 1} hidden layers, got {len(hidden)}")
    n_layers = len(hidden) + 1
    ll = p["lsh_layers"]
    if ll == "output":
        lsh_layers = [n_layers - 1]
    elif ll == "all":
        lsh_layers = list(range(n_layers))
    elif isinstance(ll, (list, tuple)) and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ll):
        lsh_layers = sorted({int(i) for i in ll})
        bad = [i for i in lsh_layers if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"param 'lsh_layers' has layer indices out of range 0..{n_layers - 1}: {bad}")
    else:
        raise ValueError(f"param 'lsh_layers' must be 'output', 'all' or a list of layer indices, got {ll!r}")
    active = _float(p, "active", 0.0)
    if active >= 1 and not float(active).is_integer():
        raise ValueError(f"param 'active' must be a fraction < 1 or a whole count >= 1, got {active}")
    min_active = None if p["min_active"] is None else _int(p, "min_active", 0)
    batch_size = None if p["batch_size"] is None else _int(p, "batch_size", 1)
    L = _int(p, "L", 1, 255)
    K = "auto" if p["K"] == "auto" else _int(p, "K", 1, 64)
    correction = _choice(p, "correction", CORRECTIONS)
    random_active = p["random_active"]
    if isinstance(random_active, bool) or not isinstance(random_active, (int, float, np.integer, np.floating)) \
            or not math.isfinite(random_active) or random_active < 0 or (random_active >= 1 and not float(random_active).is_integer()):
        raise ValueError(f"param 'random_active' must be 0, a fraction < 1 of the active target or a whole "
                         f"count >= 1; got {random_active!r}")
    lsh_active = p["lsh_active"]
    if lsh_active is not None and (isinstance(lsh_active, bool) or not isinstance(lsh_active, (int, float, np.integer, np.floating))
                                   or not math.isfinite(lsh_active) or lsh_active < 0
                                   or (lsh_active >= 1 and not float(lsh_active).is_integer())):
        raise ValueError(f"param 'lsh_active' must be a fraction < 1 of the active target or a whole count; "
                         f"got {lsh_active!r}")
    cfg = Config(
        n_features=int(n_features), n_labels=int(n_labels), hidden=hidden,
        optimizer=_choice(p, "optimizer", ("adam", "sgd")),
        lr=_float(p, "lr", 0.0), beta1=_float(p, "beta1", 0.0, 1.0, lo_open=False),
        beta2=_float(p, "beta2", 0.0, 1.0, lo_open=False), eps=_float(p, "eps", 0.0, lo_open=False),
        init_std=_float(p, "init_std", 0.0, lo_open=False),
        sampler=_choice(p, "sampler", SAMPLERS), lsh_layers=lsh_layers,
        hash=_choice(p, "hash", FAMILIES), K=K, L=L,
        range_pow=_int(p, "range_pow", 1, MAX_RANGE_POW), bucket_size=_int(p, "bucket_size", 1),
        insertion=_choice(p, "insertion", ("fifo", "reservoir")), active=active, min_active=min_active,
        threshold_m=_int(p, "threshold_m", 1, L), rehash=_choice(p, "rehash", ("fixed", "exponential")),
        rehash_every="auto" if p["rehash_every"] == "auto" else _int(p, "rehash_every", 1), rebuild_every=_int(p, "rebuild_every", 1),
        rehash_n0=_int(p, "rehash_n0", 1), rehash_decay=_float(p, "rehash_decay", 0.0, lo_open=False),
        batch_size=batch_size, predict_mode=_choice(p, "predict_mode", ("exact", "lsh")),
        lsh_active=None if lsh_active is None else float(lsh_active), random_active=float(random_active),
        correction=correction, params=params,
    )
    for l in range(n_layers):
        if cfg.layer_sampler(l) != "lsh":
            continue
        T = cfg.target(l)
        if cfg.rand_block(l) > T:
            raise ValueError(f"param 'random_active' = {random_active} asks for {cfg.rand_block(l)} random neurons "
                             f"in layer {l}, above its active target of {T} ('active')")
        if cfg.lsh_cap(l) + cfg.rand_block(l) > T:
            raise ValueError(f"param 'lsh_active' = {lsh_active} asks for {cfg.lsh_cap(l)} LSH candidates in layer "
                             f"{l}, which with the random block of {cfg.rand_block(l)} is above its active target "
                             f"of {T} ('active')")
    return cfg


# ------------------------------------------------------------------------------------ memory


def _estimate(cfg: Config, n_threads: int = 1) -> dict[str, int]:
    sizes = cfg.sizes
    n_mats = 3 if cfg.optimizer == "adam" else 1
    weights = sum((sizes[l] * sizes[l + 1] + sizes[l + 1]) * 4 * n_mats for l in range(cfg.n_layers))
    tables = 0
    if cfg.uses_tables():
        for l in cfg.lsh_layers:
            n = sizes[l + 1]
            # CSR-like tables: offsets per bucket per table + one id per neuron per table,
            # plus the codes array of a build and the hash functions (at most a float per dim per hash)
            tables += cfg.L * ((1 << cfg.range_pow) + 1) * 4 + 2 * cfg.L * n * 4 + cfg.K_for(l) * cfg.L * 8 + sizes[l] * 4 * cfg.L
    b = cfg.batch_size or 128
    maxn = max(sizes)
    per_sample = 0
    for l in range(cfg.n_layers):
        cap = sizes[l + 1] if cfg.layer_sampler(l) == "full" else min(sizes[l + 1], max(cfg.target(l), cfg.min_active_for(l)) + 256)
        per_sample += cap * 12
    batch = b * per_sample + 4 * 8 * b * per_sample // 12      # buffers + row-bucketing entries
    scratch = n_threads * (maxn * 6 + max(sizes[1:]) * 4 + 1024) + 3 * 4 * (sizes[0] + sum(sizes[1:]))
    init_tmp = max(sizes[l] * sizes[l + 1] for l in range(cfg.n_layers)) * 4
    return {"weights": weights, "tables": tables, "batch": batch, "scratch": scratch, "init": init_tmp,
            "total": weights + tables + batch + scratch + init_tmp}


def estimate_memory(n_features: int, n_labels: int, params: dict[str, Any] | None, *, n_threads: int = 1) -> int:
    """Bytes a network of this configuration needs (weights + optimiser state, hash tables, batch
    buffers, per-thread scratch, init temporaries)."""
    return _estimate(parse_config(n_features, n_labels, params), n_threads)["total"]


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _preflight(cfg: Config, n_threads: int) -> dict[str, int]:
    import psutil
    est = _estimate(cfg, n_threads)
    avail = psutil.virtual_memory().available
    if est["total"] > avail:
        parts = ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in est.items() if k != "total")
        raise MemoryError(f"this engine configuration needs about {_fmt_bytes(est['total'])} ({parts}) "
                          f"but only {_fmt_bytes(avail)} is available (range_pow={cfg.range_pow}, L={cfg.L}, "
                          f"sizes={cfg.sizes})")
    return est


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
                 _init_weights: bool = True):
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
        self._core = _core.Core(
            cfg.sizes, samplers, [cfg.target(l) for l in range(L)], [cfg.min_active_for(l) for l in range(L)],
            optimizer=cfg.optimizer, lr=cfg.lr, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps,
            query_mode=qmode, min_hits=cfg.threshold_m, seed=self.engine_seed, n_threads=self.n_threads,
            layout=_layout(layout), lsh_caps=[cfg.lsh_cap(l) for l in range(L)],
            rand_blocks=[cfg.rand_block(l) for l in range(L)], correct=cfg.correction == "logq")
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
        for l in self._tabled:
            self._core.init_tables(l, cfg.hash, cfg.K_for(l), cfg.L, cfg.range_pow, cfg.bucket_size, cfg.insertion,
                                   self._table_seed(l))
        self._build_tables()

    # -------------------------------------------------------------------------------- build
    @classmethod
    def from_params(cls, n_features: int, n_labels: int, params: dict[str, Any] | None, *, seed: int = 0,
                    n_threads: int = 1, layout: str | None = None) -> "Network":
        return cls(parse_config(n_features, n_labels, params), seed=seed, n_threads=n_threads, layout=layout)

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
                self._core.new_functions(l, self._table_seed(l))
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
            "table_builds": {str(l): self._core.table_builds(l) for l in self._tabled},
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
                self._core.new_functions(l, self._table_seed(l))
            if l in builds:      # the rebuild below continues the saved build stream
                self._core.table_builds(l, max(builds[l] - 1, 0))
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
        return sum(self._core.table_nbytes(l) for l in self._tabled)

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
        cap = self.cfg.lsh_cap(l) if max_out is None else int(max_out)
        indptr, ids = self._core.query_dense(l, np.ascontiguousarray(H, np.float32), cap)
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
                "n_threads": self.n_threads, "seed": self.seed, "kernels": _core.kernels_dispatch(),
                "memory_estimate_bytes": self.memory_estimate["total"], "table_bytes": self.table_bytes()}
