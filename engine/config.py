"""The SLIDE network's configuration: the flat params of the `slide` system validated into a Config
(ValueError naming the key), the derived sampler composition (target, LSH share, random block,
K = "auto", rehash interval), and the memory estimate. See docs/engine.md."""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._lsh_config import FAMILIES as _LSH_FAMILIES, INSERTIONS as _LSH_INSERTIONS, MAX_RANGE_POW, MAX_TABLES, check_config


def row_pass_fits(samplers: list[str]) -> bool:
    """Whether out_pass "row" (engine/net_rowpass.pxd) runs a network whose layers are sampled so
    ('full', 'lsh' or 'random' per layer): one hidden layer computed in full, a sampled output layer."""
    return len(samplers) == 2 and samplers[0] == "full" and samplers[1] != "full"


def check_core_args(n_layers: int, max_layers: int, sizes, optimizer: str, query_mode: str,
                    query_modes, layout: str, layouts, out_pass: str, samplers) -> list[str]:
    """The compiled core's constructor arguments (engine/_core.pyx Core), checked; returns the weight
    layout of layer 0 and of the later layers. ValueError naming what is wrong."""
    if n_layers < 1 or n_layers > max_layers:
        raise ValueError(f"the network must have 1..{max_layers} layers, got {n_layers}")
    if any(int(s) < 1 for s in sizes):
        raise ValueError(f"layer sizes must be >= 1, got {list(sizes)}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if query_mode not in query_modes:
        raise ValueError(f"unknown LSH query mode {query_mode!r}; known: {', '.join(query_modes)}")
    parts = layout.split(",")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or any(p not in layouts for p in parts):
        raise ValueError(f"unknown weight layout {layout!r}: one of {', '.join(layouts)}, or two of them "
                         f"separated by a comma (layer 0, later layers)")
    if out_pass not in OUT_PASSES:
        raise ValueError(f"out_pass must be 'sample' or 'row', got {out_pass!r}")
    if out_pass == "row" and not row_pass_fits(list(samplers)):
        raise ValueError("out_pass='row' needs one hidden layer computed in full and a sampled output "
                         f"layer; got samplers {list(samplers)}")
    return parts


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one named purpose (numpy SeedSequence of (seed, crc32(purpose))). The same
    derivation as the harness's derive_seed in its contract module (a test pins them equal): the engine
    imports nothing from the harness."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    ss = np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


LSH_SAMPLERS = ("vanilla", "topk", "threshold")
SAMPLERS = LSH_SAMPLERS + ("random", "full")
# the LSH names and limits are engine/_lsh_config.pyx's (the one place for LSH rules); dwta first: the default
FAMILIES = ("dwta",) + tuple(f for f in _LSH_FAMILIES if f != "dwta")
INSERTIONS = tuple(_LSH_INSERTIONS)
MAX_LAYERS = 8

# keys the engine accepts; batch_size is accepted and ignored (the harness passes it)
_DEFAULTS: dict[str, Any] = {
    "hidden": [128], "optimizer": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
    "init_std": 0.01, "sampler": "vanilla", "lsh_layers": "output", "hash": "dwta", "K": 6, "L": 50,
    "range_pow": 18, "bucket_size": 128, "insertion": "fifo", "active": 0.005, "min_active": None,
    "threshold_m": 2, "rehash": "fixed", "rehash_every": 6400, "rebuild_every": 128000,
    "rehash_n0": 50, "rehash_decay": 0.05, "batch_size": None, "predict_mode": "exact",
    "lsh_active": None, "random_active": 0, "correction": "none", "out_pass": "sample",
}
OUT_PASSES = ("sample", "row")
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
    out_pass: str = "sample"       # the training step's pass order (engine/_core.pyx; docs/engine.md)
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
        at which a rehash costs about REHASH_SHARE (8%) of training time under a cost model (work
        units, calibrated at two shapes, 50k and 670k outputs, of benchmarks/engine_shape.py;
        docs/engine.md):
            rehash = REHASH_COST_SCALE * sum over tabled layers of n_out * (hash_units(family) + L)
            step   = sum over layers of (batch * active_l * fan_in_l * 4              (forward + backward)
                                         + REHASH_UPDATE_UNITS * rows_l * width_l)     (the optimiser update)
                                        * (1 + REHASH_MISS_PENALTY * miss_l)
            miss_l = max(0, 1 - REHASH_CACHE_BYTES / (4 * fan_in_l * n_out_l))      (weights beyond the cache)
            interval_batches = rehash * (1 - share) / (share * step)
        Layer 0 (sparse input): fan_in = REHASH_NNZ nonzeros a sample, rows = the expected distinct
        features of a batch, n_in * (1 - (1 - nnz/n_in)^batch), of width n_out. Other layers: rows =
        the expected distinct output neurons a batch touches, n_out * (1 - (1 - active/n_out)^batch)
        (all of them for a full layer), of width fan_in. The update and cache terms are what make a step
        at 670k outputs 2.4-3.1x dearer than one at 50k with the same active size (2.5x the rows
        touched; 343 MB of output weights against 26 MB). hash_units: dwta/wta/doph K*L*window, simhash dim*K*L/3 (a third of
        the projection is nonzero)."""
        if self.rehash_every != "auto":
            return int(self.rehash_every)
        b = self.batch_size or 128
        rehash = step = 0.0
        for l in range(self.n_layers):
            fan_in, n_out = self.sizes[l], self.sizes[l + 1]
            full = self.layer_sampler(l) == "full"
            act = n_out if full else max(self.target(l), self.min_active_for(l))
            miss = max(0.0, 1.0 - REHASH_CACHE_BYTES / (4.0 * fan_in * n_out))   # weights beyond the cache
            if l == 0:               # sparse input: about REHASH_NNZ nonzeros a sample
                nnz = min(fan_in, REHASH_NNZ)
                rows = fan_in * (1.0 - (1.0 - nnz / fan_in) ** b)
                work = b * act * nnz * 4.0 + REHASH_UPDATE_UNITS * rows * n_out
            else:
                rows = n_out if full else n_out * (1.0 - (1.0 - min(act, n_out) / n_out) ** b)
                work = b * act * fan_in * 4.0 + REHASH_UPDATE_UNITS * rows * fan_in
            step += work * (1.0 + REHASH_MISS_PENALTY * miss)
            if self.layer_sampler(l) == "lsh":
                K = self.K_for(l)
                f_in = min(fan_in, REHASH_NNZ) if l == 0 else fan_in
                units = f_in * K * self.L / 3.0 if self.hash == "simhash" else K * self.L * min(8, f_in)
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
# rehash_every = "auto": target share of training time. 8%, not the 10% limit of issue 9: aimed at 10%
# the model's interval measured 9.7-12.3% at 670k outputs on 1-2 threads (docs/engine.md), so the
# target leaves that much room under the limit.
REHASH_SHARE = 0.08
REHASH_COST_SCALE = 9.6      # a rehash work unit against a step work unit   } fitted together at the 50k
REHASH_UPDATE_UNITS = 10.0   # step work units per updated weight element     } and 670k shapes
REHASH_MISS_PENALTY = 0.7    # extra step cost of a layer's work when its weights miss the cache } (docs/engine.md)
REHASH_CACHE_BYTES = 32 * 2**20   # weights up to this size are taken to stay in the last-level cache
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
    L = _int(p, "L", 1, MAX_TABLES)
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
        insertion=_choice(p, "insertion", INSERTIONS), active=active, min_active=min_active,
        threshold_m=_int(p, "threshold_m", 1, L), rehash=_choice(p, "rehash", ("fixed", "exponential")),
        rehash_every="auto" if p["rehash_every"] == "auto" else _int(p, "rehash_every", 1), rebuild_every=_int(p, "rebuild_every", 1),
        rehash_n0=_int(p, "rehash_n0", 1), rehash_decay=_float(p, "rehash_decay", 0.0, lo_open=False),
        batch_size=batch_size, predict_mode=_choice(p, "predict_mode", ("exact", "lsh")),
        lsh_active=None if lsh_active is None else float(lsh_active), random_active=float(random_active),
        correction=correction, out_pass=_choice(p, "out_pass", OUT_PASSES), params=params,
    )
    if cfg.out_pass == "row" and not row_pass_fits([cfg.layer_sampler(l) for l in range(n_layers)]):
        raise ValueError("param 'out_pass' = 'row' needs one hidden layer computed in full and a sampled output "
                         f"layer; got hidden {hidden}, sampler {cfg.sampler!r}, lsh_layers {lsh_layers}")
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
        try:                 # the tables' own rules (e.g. K*L hash codes), checked before anything is built
            check_config(cfg.hash, cfg.sizes[l], cfg.K_for(l), cfg.L, cfg.range_pow, cfg.bucket_size, cfg.insertion)
        except ValueError as exc:
            raise ValueError(f"params 'hash', 'K', 'L', 'range_pow', 'bucket_size', 'insertion' of layer {l}: "
                             f"{exc}") from None
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
