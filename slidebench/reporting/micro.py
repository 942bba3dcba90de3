"""Micro-experiments: engine measurements that are not training runs (fig4, fig11, tab3).

``run_micro(spec, *, scale, n_threads, out_csv, progress)`` is called by the runner in a child
process whose thread environment is already fixed. ``spec`` is the whole experiment file as a dict;
its ``[micro]`` table selects the measurement (``measure = "samplers" | "threshold" | "insertion" | "reference" | "roofline"``)
and its parameters. Any parameter may be given per scale as a table, e.g.
``n_labels = { tiny = 1000, small = 20000, paper = 205443 }``; unknown keys are a ValueError naming
the key. Every CSV row carries the context the figures print in their footer: experiment, scale,
host_cpu, cores, n_threads, seed.

* ``samplers`` (Fig 4): microseconds per sample of (a) the LSH query alone for the vanilla, top-K and
  hard-threshold samplers (``LSHIndex.query`` on tables built from output-layer-shaped weights; one
  Python call per query is included, the same for every sampler) and (b) a whole training step of the
  engine with each sampler, plus ``random`` and ``full`` as references, on the experiment's data set.
* ``threshold`` (Fig 11): P(hard threshold m of L selects a neuron) against the neuron's per-table
  collision probability p with the query. Neurons are placed at controlled angles to each query; p
  is estimated per (query, neuron) pair from ``L_est`` independent hash functions (hash codes only),
  and selection is measured with the engine's ``query(mode="threshold", min_hits=m)`` on L freshly
  built tables. Pairs are binned by estimated p; the analytic curve is 1 - BinomCDF(m-1; L, p).
* ``insertion`` (Table 3): seconds to insert precomputed codes of every output neuron (FIFO and
  reservoir), to hash them (``hash_rows``), and a full rebuild (hashing + insertion).
* ``reference``: the non-neural reference (omikuji) trained once per ``[data] preset``; see
  ``reference.py``. Writes ``results/summary/reference.csv`` when the experiment is named reference.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .reference import REFERENCE_DEFAULTS, measure_reference

__all__ = ["run_micro", "measure_samplers", "measure_threshold", "measure_insertion", "MEASURES",
           "per_scale", "analytic_rows"]

# ---------------------------------------------------------------------------------------- params

# measure -> {key: default}; every key may also be a {scale: value} table
DEFAULTS: dict[str, dict[str, Any]] = {
    "samplers": {
        "hidden": 128, "n_labels": {"tiny": 1000, "small": 20000, "paper": 205443},
        "family": "dwta", "K": 6, "L": 50, "range_pow": 18, "bucket_size": 128, "active": 0.005,
        "threshold_m": 2, "samplers": ["vanilla", "topk", "threshold"],
        "train_samplers": ["vanilla", "topk", "threshold", "random", "full"],
        "n_queries": {"tiny": 200, "small": 2000, "paper": 5000}, "repeats": 5,
        "batch_size": 128, "warmup_batches": {"tiny": 3, "small": 20, "paper": 20},
        "timed_batches": {"tiny": 4, "small": 15, "paper": 30}, "lr": 1e-3, "train": True,
        "n_clusters": {"tiny": 20, "small": 100, "paper": 1000}, "noise": 0.5,
    },
    "threshold": {
        "family": "simhash", "dim": 64, "K": 4, "L": 10, "L_est": 400, "range_pow": 12,
        "m": [1, 3, 5, 7, 9], "n_trials": {"tiny": 20, "small": 200, "paper": 400},
        "n_neurons": 256, "bins": 20, "analytic_points": 101,
    },
    "insertion": {
        "n_neurons": {"tiny": 20000, "small": 205443, "paper": 205443}, "dim": 128, "family": "dwta",
        "K": 6, "L": 50, "range_pow": 18, "bucket_size": 128, "repeats": {"tiny": 2, "small": 3, "paper": 5},
    },
    "reference": dict(REFERENCE_DEFAULTS),
    "roofline": {"n_labels": [200000], "steps": 4, "repeats": 5},
}


def per_scale(value: Any, scale: str, key: str) -> Any:
    """A parameter given as a scalar/list, or as a {scale: value} table."""
    if isinstance(value, dict):
        if scale not in value:
            raise ValueError(f"[micro] {key}: no value for scale {scale!r} (given for {', '.join(value)})")
        return value[scale]
    return value


def _params(micro: dict[str, Any], measure: str, scale: str) -> dict[str, Any]:
    defaults = DEFAULTS[measure]
    unknown = sorted(set(micro) - set(defaults) - {"measure"})
    if unknown:
        raise ValueError(f"[micro] unknown key {unknown[0]!r} for measure {measure!r} "
                         f"(allowed: {', '.join(sorted(defaults))})")
    out = {}
    for k, d in defaults.items():
        out[k] = per_scale(micro.get(k, d), scale, k)
    return out


def _posint(p: dict, key: str, lo: int = 1) -> int:
    v = p[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"[micro] {key} must be an int >= {lo}, got {v!r}")
    return int(v)


# ---------------------------------------------------------------------------------------- context


def _context(spec: dict, scale: str, n_threads: int, seed: int) -> dict[str, Any]:
    from ._harness import manifest
    h = manifest.host_info()
    return {"experiment": spec.get("experiment", {}).get("name", "?"), "scale": scale,
            "host_cpu": h.get("cpu_model"), "cores": h.get("cores_logical"), "n_threads": int(n_threads),
            "seed": int(seed)}


class _Say:
    def __init__(self, on: bool, name: str):
        self.on, self.name, self.t0 = on, name, time.monotonic()

    def __call__(self, msg: str) -> None:
        if self.on:
            print(f"[micro {self.name} {time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _lsh_index(family: str, dim: int, K: int, L: int, range_pow: int, bucket_size: int,
               insertion: str = "fifo", seed: int = 0):
    from ..engine import LSHIndex  # noqa: the engine's standalone tables (ImportError names the cause)
    return LSHIndex(family, dim, K, L, range_pow, bucket_size, insertion=insertion, seed=seed)


def _timeit(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------------------------ fig4: cost


def measure_samplers(p: dict[str, Any], *, data, n_threads: int, seed: int, say: Callable[[str], None]
                     ) -> list[dict[str, Any]]:
    """Fig 4 rows: LSH query cost per sampler, and training-step cost per sampler."""
    hidden = _posint(p, "hidden")
    n_labels = _posint(p, "n_labels", 2)
    K, L = _posint(p, "K"), _posint(p, "L")
    n_q, reps = _posint(p, "n_queries"), _posint(p, "repeats")
    active = float(p["active"])
    target = int(round(active * n_labels)) if active < 1 else int(active)
    target = max(target, 1)
    m = _posint(p, "threshold_m")
    for s in p["samplers"]:
        if s not in ("vanilla", "topk", "threshold"):
            raise ValueError(f"[micro] samplers: {s!r} is not an LSH sampler (vanilla, topk, threshold)")
    rows: list[dict[str, Any]] = []
    base = {"n_labels": n_labels, "hidden": hidden, "family": p["family"], "K": K, "L": L,
            "range_pow": p["range_pow"], "bucket_size": p["bucket_size"], "target": target, "min_hits": m}
    # (a) query cost on tables of output-layer-shaped weights with cluster structure (as trained
    # output layers have: neurons of related labels point the same way) and ReLU'd queries near a
    # cluster; with structureless random weights nearly every lookup would come back empty
    rng = np.random.default_rng(seed)
    nc = _posint(p, "n_clusters")
    noise = float(p["noise"])
    C = rng.standard_normal((nc, hidden)).astype(np.float32)
    W = C[rng.integers(0, nc, n_labels)] + noise * rng.standard_normal((n_labels, hidden)).astype(np.float32)
    H = np.maximum(C[rng.integers(0, nc, n_q)] + noise * rng.standard_normal((n_q, hidden)), 0).astype(np.float32)
    idx = _lsh_index(p["family"], hidden, K, L, p["range_pow"], p["bucket_size"], seed=seed)
    idx.build(W, n_threads=n_threads)
    say(f"tables built: {n_labels} neurons, {p['family']} K={K} L={L}")
    # reference: hashing the query alone (every LSH sampler pays it), one Python call per sample
    def hash_only():
        for i in range(n_q):
            idx.hash(H[i:i + 1])
    hash_only()
    ts = np.array(_timeit(hash_only, reps)) / n_q * 1e6
    rows.append(dict(base, sampler="hash only", what="query", us_per_sample=float(np.median(ts)),
                     us_per_sample_min=float(ts.min()), us_per_sample_max=float(ts.max()), repeats=reps,
                     n_measured=n_q, active_mean=float("nan")))
    say(f"hash only: {np.median(ts):.2f} us/sample")
    for s in p["samplers"]:
        sizes = []

        def run(s=s, sizes=sizes):
            sizes.clear()
            for i in range(n_q):
                ids, _ = idx.query(H[i], mode=s, target=target, min_hits=m)
                sizes.append(len(ids))
        run()  # warm-up
        ts = np.array(_timeit(run, reps)) / n_q * 1e6
        rows.append(dict(base, sampler=s, what="query", us_per_sample=float(np.median(ts)),
                         us_per_sample_min=float(ts.min()), us_per_sample_max=float(ts.max()), repeats=reps,
                         n_measured=n_q, active_mean=float(np.mean(sizes))))
        say(f"query {s}: {np.median(ts):.2f} us/sample, {np.mean(sizes):.0f} candidates")
    # (a') the same in the compiled kernels alone: hashing the whole query batch in one call, and
    # LSHIndex.time_queries (lsh_query back to back on precomputed keys: no Python, no hashing)
    if hasattr(idx, "time_queries"):
        def hash_batch():
            return idx.hash(H)
        keys = np.asarray(hash_batch())
        ts = np.array(_timeit(hash_batch, reps)) / n_q * 1e6
        rows.append(dict(base, sampler="hash only", what="kernel", us_per_sample=float(np.median(ts)),
                         us_per_sample_min=float(ts.min()), us_per_sample_max=float(ts.max()), repeats=reps,
                         n_measured=n_q, active_mean=float("nan")))
        for s in p["samplers"]:
            idx.time_queries(keys, mode=s, target=target, min_hits=m)      # warm-up
            res = [idx.time_queries(keys, mode=s, target=target, min_hits=m) for _ in range(reps)]
            ts = np.array([r[0] for r in res]) * 1e6
            rows.append(dict(base, sampler=s, what="kernel", us_per_sample=float(np.median(ts)),
                             us_per_sample_min=float(ts.min()), us_per_sample_max=float(ts.max()), repeats=reps,
                             n_measured=n_q, active_mean=float(res[0][1])))
            say(f"kernel {s}: {np.median(ts):.2f} us/sample")
    # (b) whole training step per sampler on the experiment's data
    if p["train"]:
        if data is None:
            raise ValueError("[micro] train = true needs a [data] table (preset) for the training steps")
        from ..engine import Network
        bs = _posint(p, "batch_size")
        warm, timed = _posint(p, "warmup_batches", 0), _posint(p, "timed_batches")
        for s in p["train_samplers"]:
            params = {"hidden": [hidden], "sampler": s, "hash": p["family"], "K": K, "L": L,
                      "range_pow": p["range_pow"], "bucket_size": p["bucket_size"], "active": p["active"],
                      "threshold_m": m, "lr": p["lr"]}
            net = Network.from_params(data.n_features, data.n_labels, params, seed=seed, n_threads=n_threads)
            stream = data.batches(bs, seed)
            for _ in range(warm):
                b = stream.next_batch()
                net.train_batch(b.X, b.Y)
            c0 = net.counters()
            per = []
            for _ in range(timed):
                b = stream.next_batch()
                t0 = time.perf_counter()
                net.train_batch(b.X, b.Y)
                per.append((time.perf_counter() - t0) / b.X.shape[0] * 1e6)
            c1 = net.counters()
            n0, n1 = c0["samples"], c1["samples"]
            act = (c1["mean_active_out"] * n1 - c0["mean_active_out"] * n0) / max(n1 - n0, 1)
            per = np.array(per)
            rows.append(dict(base, n_labels=data.n_labels, sampler=s, what="train",
                             us_per_sample=float(np.median(per)), us_per_sample_min=float(per.min()),
                             us_per_sample_max=float(per.max()), repeats=timed, n_measured=timed * bs,
                             active_mean=float(act), dataset=data.name, batch_size=bs))
            say(f"train {s}: {np.median(per):.1f} us/sample, {act:.0f} active output neurons")
    return rows


# ------------------------------------------------------------------------- fig11: hard threshold


def analytic_rows(L: int, ms: list[int], n_points: int) -> list[dict[str, Any]]:
    from .plots import hard_threshold_prob
    ps = np.linspace(0.0, 1.0, n_points)
    rows = []
    for m in ms:
        pr = hard_threshold_prob(ps, L, m)
        rows += [{"source": "analytic", "m": int(m), "L": int(L), "p": float(a), "prob": float(b),
                  "n_pairs": 0} for a, b in zip(ps, pr)]
    return rows


def _neurons_at_angles(q: np.ndarray, thetas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at exact angles ``thetas`` to q (random orthogonal directions)."""
    d = q.shape[0]
    qn = q / np.linalg.norm(q)
    R = rng.standard_normal((len(thetas), d))
    R -= np.outer(R @ qn, qn)
    R /= np.linalg.norm(R, axis=1, keepdims=True)
    return (np.cos(thetas)[:, None] * qn[None, :] + np.sin(thetas)[:, None] * R).astype(np.float32)


def measure_threshold(p: dict[str, Any], *, n_threads: int, seed: int, say: Callable[[str], None]
                      ) -> list[dict[str, Any]]:
    """Fig 11 rows: analytic curves and measured (binned) selection probabilities."""
    dim, K, L, L_est = _posint(p, "dim"), _posint(p, "K"), _posint(p, "L"), _posint(p, "L_est")
    ms = [int(m) for m in p["m"]]
    for m in ms:
        if not 1 <= m <= L:
            raise ValueError(f"[micro] m: every m must be in 1..L={L}, got {m}")
    T, N, nb = _posint(p, "n_trials"), _posint(p, "n_neurons", 2), _posint(p, "bins")
    rng = np.random.default_rng(seed)
    p_est_all, sel_all, agree = [], {m: [] for m in ms}, []
    for t in range(T):
        q = np.abs(rng.standard_normal(dim)).astype(np.float32)   # ReLU-like query
        # angles drawn so that the SimHash collision probability (1 - theta/pi)^K is uniform on
        # [0, 1] (other families get a similar spread); p itself is estimated below, not assumed
        thetas = np.pi * (1.0 - rng.uniform(0.0, 1.0, N) ** (1.0 / K))
        W = _neurons_at_angles(q, thetas, rng)
        s_est = int(rng.integers(1, 2 ** 58)) * 16
        s_sel = int(rng.integers(1, 2 ** 58)) * 16 + 15
        # p per pair from L_est independent hash functions, in indices of at most 200 tables each
        hits = np.zeros(N)
        for j, chunk in enumerate(range(0, L_est, 200)):
            Lc = min(200, L_est - chunk)
            est = _lsh_index(p["family"], dim, K, Lc, p["range_pow"], max(N, 1), seed=s_est + j)
            cq = np.asarray(est.hash(q[None, :]))
            cw = np.asarray(est.hash_rows(W, n_threads=n_threads))
            hits += (cw == cq).sum(axis=1)
        p_est = hits / L_est
        sel = _lsh_index(p["family"], dim, K, L, p["range_pow"], max(N, 1), seed=s_sel)
        sel.build(W, n_threads=n_threads)
        counts_codes = (np.asarray(sel.hash_rows(W, n_threads=n_threads)) == np.asarray(sel.hash(q[None, :]))).sum(axis=1)
        p_est_all.append(p_est)
        for m in ms:
            ids, _ = sel.query(q, mode="threshold", target=N, min_hits=m)
            chosen = np.zeros(N, dtype=bool)
            chosen[np.asarray(ids, dtype=np.int64)] = True
            sel_all[m].append(chosen)
            agree.append(float(np.mean(chosen == (counts_codes >= m))))
        if (t + 1) % max(1, T // 5) == 0:
            say(f"trial {t + 1}/{T}")
    pe = np.concatenate(p_est_all)
    edges = np.linspace(0.0, 1.0, nb + 1)
    which = np.clip(np.digitize(pe, edges) - 1, 0, nb - 1)
    rows = analytic_rows(L, ms, _posint(p, "analytic_points", 2))
    agree_rate = float(np.mean(agree))
    for m in ms:
        s = np.concatenate(sel_all[m])
        for b in range(nb):
            mask = which == b
            n = int(mask.sum())
            if n < 20:
                continue
            rows.append({"source": "measured", "m": m, "L": L, "p": float(pe[mask].mean()),
                         "prob": float(s[mask].mean()), "n_pairs": n, "p_lo": float(edges[b]),
                         "p_hi": float(edges[b + 1]), "agree_with_codes": agree_rate})
    say(f"{len(pe)} (query, neuron) pairs; query/threshold agrees with code counts on {agree_rate:.4f}")
    for r in rows:
        r.update({"family": p["family"], "K": K, "dim": dim, "L_est": L_est})
    return rows


# --------------------------------------------------------------------------- tab3: insertion time


def measure_insertion(p: dict[str, Any], *, n_threads: int, seed: int, say: Callable[[str], None]
                      ) -> list[dict[str, Any]]:
    n, dim = _posint(p, "n_neurons"), _posint(p, "dim")
    K, L, reps = _posint(p, "K"), _posint(p, "L"), _posint(p, "repeats")
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, dim)).astype(np.float32)
    base = {"n_neurons": n, "dim": dim, "family": p["family"], "K": K, "L": L, "range_pow": p["range_pow"],
            "bucket_size": p["bucket_size"]}
    idx = {ins: _lsh_index(p["family"], dim, K, L, p["range_pow"], p["bucket_size"], insertion=ins, seed=seed)
           for ins in ("fifo", "reservoir")}
    codes = np.asarray(idx["fifo"].hash_rows(W, n_threads=n_threads))       # warm-up + the codes to insert
    rows = []

    def add(op: str, ts: list[float]):
        a = np.array(ts)
        rows.append(dict(base, operation=op, seconds_median=float(np.median(a)), seconds_min=float(a.min()),
                         seconds_max=float(a.max()), repeats=len(a)))
        say(f"{op}: {np.median(a):.3f} s (median of {len(a)})")

    add("hash_rows", _timeit(lambda: idx["fifo"].hash_rows(W, n_threads=n_threads), reps))
    for ins in ("fifo", "reservoir"):
        idx[ins].insert(codes, n_threads=n_threads)   # warm-up (allocates the tables)
        add(f"insert_{ins}", _timeit(lambda i=idx[ins]: i.insert(codes, n_threads=n_threads), reps))
    for ins in ("fifo", "reservoir"):
        add(f"rebuild_{ins}", _timeit(lambda i=idx[ins]: i.build(W, n_threads=n_threads), reps))
    return rows


def measure_roofline(p: dict[str, Any], *, n_threads: int, seed: int, say: Callable[[str], None]
                     ) -> list[dict[str, Any]]:
    """The dense baseline's roofline (experiments/roofline.toml): tuned TF full softmax's output-layer
    GFLOP/s next to numpy SGEMM's on the same shapes, each label count in its own subprocess with the
    OpenBLAS pins unset (slidebench.baselines.roofline; TensorFlow is imported only there)."""
    from ..baselines import roofline
    rows = []
    for n in p["n_labels"]:
        say(f"roofline at {n:,} labels, {n_threads} threads")
        r = roofline.measure(int(n), n_threads, steps=int(p["steps"]), repeats=int(p["repeats"]))
        say(f"TF {r['tf_gflops']} GFLOP/s vs SGEMM {r['sgemm_gflops']} GFLOP/s ({r['fraction']:.0%}, "
            f"OpenBLAS {r['openblas_coretype']}, load {r['load_avg_1min']})")
        rows.append({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    return rows


MEASURES = {"samplers": measure_samplers, "threshold": measure_threshold, "insertion": measure_insertion,
            "reference": measure_reference, "roofline": measure_roofline}


def run_micro(spec: dict[str, Any], *, scale: str, n_threads: int, out_csv: str | Path,
              progress: bool = True) -> Path:
    """Run the measurement named by ``spec["micro"]["measure"]`` and write ``out_csv``."""
    if not isinstance(spec, dict):
        raise ValueError(f"spec must be the parsed experiment file as a dict, got {type(spec).__name__}")
    micro = spec.get("micro")
    if not isinstance(micro, dict):
        raise ValueError("micro experiment needs a [micro] table with measure = "
                         f"{' | '.join(repr(m) for m in MEASURES)}")
    measure = micro.get("measure")
    if measure not in MEASURES:
        raise ValueError(f"[micro] measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    from ..data import SCALES          # the data module's scales (a new one, e.g. medium, needs no change here)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError(f"n_threads must be an int >= 1, got {n_threads!r}")
    params = _params(micro, measure, scale)
    seeds = spec.get("run", {}).get("seeds", [0]) or [0]
    seed = int(seeds[0])
    name = spec.get("experiment", {}).get("name", measure)
    say = _Say(progress, name)
    say(f"measure={measure} scale={scale} threads={n_threads} seed={seed}")
    ctx = _context(spec, scale, n_threads, seed)
    if measure == "reference":          # one row per [data] preset, trained on the run's threads
        d = spec.get("data") or {}
        if "preset" not in d:
            raise ValueError("[micro] measure = 'reference' needs [data] preset")
        from ..data import load_dataset
        presets = d["preset"] if isinstance(d["preset"], list) else [d["preset"]]
        data_list = [load_dataset(pr, scale, data_dir=d.get("data_dir"), seed=int(d.get("seed", 0)),
                                  progress=progress) for pr in presets]
        rows = measure_reference(params, data_list=data_list, n_threads=n_threads, seed=seed, say=say)
    elif measure == "samplers":
        data = None
        if params["train"]:
            d = spec.get("data") or {}
            if "preset" not in d:
                raise ValueError("[micro] train = true needs [data] preset")
            preset = d["preset"][0] if isinstance(d["preset"], list) else d["preset"]
            from ..data import load_dataset
            data = load_dataset(preset, scale, data_dir=d.get("data_dir"), seed=int(d.get("seed", 0)),
                                progress=progress)
        rows = measure_samplers(params, data=data, n_threads=n_threads, seed=seed, say=say)
    else:
        rows = MEASURES[measure](params, n_threads=n_threads, seed=seed, say=say)
    df = pd.DataFrame([dict(ctx, **r) for r in rows])
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_suffix(f".csv.tmp-{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, out_csv)
    say(f"wrote {out_csv} ({len(df)} rows)")
    return out_csv
