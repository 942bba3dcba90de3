"""Speed of the SLIDE engine on the suite's comparison shape (a script, not an asv benchmark).

Shape `200k` (default): 200,000 sparse input features (~75 nonzeros per sample), hidden 128, 50,000
outputs, batch 128, DWTA K=6 L=50, range_pow 18, bucket size 128, 0.5% of the outputs active.

Shape `670k` (--shape 670k): the Amazon-670K output layer: 135,909 features (~75 nonzeros), hidden
128, 670,091 outputs, batch 128, 1,000 and 3,000 active neurons per sample, 90% of them from LSH
(vanilla DWTA, K = "auto", L = 50) and a 10% random block, rehash_every = "auto" (the interval at
which a rehash is modelled to cost 8% of training time); prints samples/s, the rehash share under
that schedule (and under the release's 6,400 samples), the STREAM fraction (the whole step's, and the
update phase's alone) and 2-thread scaling.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/engine_shape.py [--threads 1 2] [--chunks 5]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/engine_shape.py --shape 670k
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/engine_shape.py --out-pass row   # the row-ordered step

Prints, for the LSH sampler and for the `full` (and `random`) sampler as in-session references:
samples/s at each thread count (median of timed chunks after warm-up), the bytes one step moves
under a stated model and that rate as a fraction of a STREAM-style triad measured in the same run,
hash-table bytes, and the rehash cost as a fraction of training time on the release's schedule.
Random data (seeded); no planted structure is needed for speed.

Nothing here is named time_*/peakmem_*/track_* because asv imports every module in benchmarks/.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import scipy.sparse as sp

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHAPE = dict(n_features=200_000, nnz=75, hidden=128, n_labels=50_000, batch=128, labels_per_sample=5)
LSH_PARAMS = {"hidden": [128], "sampler": "vanilla", "hash": "dwta", "K": 6, "L": 50, "range_pow": 18,
              "bucket_size": 128, "active": 0.005, "lr": 1e-4, "rehash_every": 6400, "rebuild_every": 128000}
SHAPES = {
    "200k": (SHAPE, {"vanilla": LSH_PARAMS, "random": dict(LSH_PARAMS, sampler="random"),
                     "topk": dict(LSH_PARAMS, sampler="topk"), "threshold": dict(LSH_PARAMS, sampler="threshold"),
                     "full": dict(LSH_PARAMS, sampler="full"),
                     # the 1,000-active comparison point: 900 LSH (K auto) + 100 uniform; uniform 1,000
                     "lsh1000": dict(LSH_PARAMS, K="auto", active=1000, lsh_active=0.9, random_active=0.1,
                                     rehash_every="auto", batch_size=128),
                     "random1000": dict(LSH_PARAMS, sampler="random", active=1000)}),
    "670k": (dict(n_features=135_909, nnz=75, hidden=128, n_labels=670_091, batch=128, labels_per_sample=5),
             {f"lsh{a}": {"hidden": [128], "sampler": "vanilla", "hash": "dwta", "K": "auto", "L": 50,
                          "range_pow": 18, "bucket_size": 128, "active": a, "lsh_active": 0.9,
                          "random_active": 0.1, "lr": 1e-4, "rehash_every": "auto", "rebuild_every": 10**9,
                          "batch_size": 128}
              for a in (1000, 3000)}),
    # the amazon headline's dimensions (amazon-medium: 135,909 features, 200k labels) with SLIDE's
    # `default` configuration (slidebench/trainers/slide.py: 1,000 uniform neurons, corrected)
    "amazon": (dict(n_features=135_909, nnz=75, hidden=128, n_labels=200_000, batch=128, labels_per_sample=5),
               {"default": {"hidden": [128], "optimizer": "adam", "lr": 3e-3, "sampler": "random", "active": 1000,
                            "correction": "logq"}}),
}


def make_data(n_rows: int, seed: int = 0):
    """Random CSR features (75 nnz of 200k, power-law-ish feature popularity) and labels."""
    rng = np.random.default_rng(seed)
    F, C, nnz, ly = SHAPE["n_features"], SHAPE["n_labels"], SHAPE["nnz"], SHAPE["labels_per_sample"]
    pop = 1.0 / np.arange(1, F + 1) ** 0.6
    pop /= pop.sum()
    perm = rng.permutation(F)
    cdf = np.cumsum(pop)
    ind = np.empty((n_rows, nnz), np.int32)
    draws = np.minimum(np.searchsorted(cdf, rng.random((n_rows, 4 * nnz))), F - 1)
    for i in range(n_rows):
        u, first = np.unique(draws[i], return_index=True)      # distinct features, in draw order
        pick = u[np.argsort(first)][:nnz]
        if len(pick) < nnz:                                    # (practically never) top up uniformly
            extra = np.setdiff1d(rng.choice(F, 4 * nnz, replace=False), pick)[:nnz - len(pick)]
            pick = np.concatenate([pick, extra])
        ind[i] = np.sort(perm[pick])
    X = sp.csr_matrix((rng.uniform(0.1, 1.0, n_rows * nnz).astype(np.float32), ind.ravel(),
                       np.arange(0, n_rows * nnz + 1, nnz, dtype=np.int32)), shape=(n_rows, F))
    lab = np.sort(rng.integers(0, C, (n_rows, ly)).astype(np.int32), axis=1)
    Y = sp.csr_matrix((np.ones(n_rows * ly, np.float32), lab.ravel(),
                       np.arange(0, n_rows * ly + 1, ly, dtype=np.int32)), shape=(n_rows, C))
    Y.sum_duplicates()
    for M in (X, Y):
        M.indices = M.indices.astype(np.int32)
        M.indptr = M.indptr.astype(np.int32)
    return X, Y


def bytes_per_step(net, X, Y, rows, touched_out: float, mean_active: float, out_pass: str = "sample") -> dict[str, float]:
    """Bytes one training step moves (model, float32):
    forward+backward per sample: the W0 rows of its nonzeros read once (nnz*h*4) and its active output
    rows read once (active*h*4; the backward re-read hits cache); with out_pass "row" each touched
    output row is read once a batch (touched*h*4; the backward reads it again inside the update, which
    the update's own bytes count); hash tables: L bucket lookups of one
    64-byte line for the offsets and one for the ids (when LSH sampling);
    update: every touched row of W0 (distinct features in the batch) and of the output layer reads and
    writes weight, m and v (6*row*4 bytes) plus the same for touched biases."""
    cfg = net.cfg
    h = cfg.hidden[0]
    Xb = X[rows]
    nnz = Xb.nnz
    distinct_in = len(np.unique(Xb.indices))
    b = len(rows)
    n_mats = 6 if cfg.optimizer == "adam" else 2
    fwd = nnz * h * 4 + (touched_out if out_pass == "row" else b * mean_active) * h * 4
    tables = b * cfg.L * 128 if cfg.uses_tables() else 0
    upd = n_mats * 4 * (distinct_in * h + touched_out * (h + 1) + h)
    return {"forward_backward": fwd, "tables": tables, "update": upd, "total": fwd + tables + upd,
            "distinct_features": distinct_in}


def measure(sampler: str, n_threads: int, X, Y, *, n_chunks: int, chunk_batches: int, warmup: int,
            seed: int = 0, progress=print, params: dict | None = None, out_pass: str = "sample"):
    from slidebench.engine import Network
    params = dict(LSH_PARAMS, sampler=sampler) if params is None else params
    t0 = time.perf_counter()
    net = Network.from_params(SHAPE["n_features"], SHAPE["n_labels"], params, seed=seed, n_threads=n_threads,
                              out_pass=out_pass)
    init_s = time.perf_counter() - t0
    b = SHAPE["batch"]
    n = X.shape[0]
    pos = 0

    def next_rows():
        nonlocal pos
        if pos + b > n:
            pos = 0
        r = np.arange(pos, pos + b)
        pos += b
        return r

    for _ in range(warmup):
        r = next_rows()
        net.train_batch(X[r], Y[r])
    rates, step_s = [], []
    c0 = net.counters()
    last_rows = None
    for ci in range(n_chunks):
        batches = []
        for _ in range(chunk_batches):
            r = next_rows()
            batches.append((X[r], Y[r]))
            last_rows = r
        t = time.perf_counter()
        for Xb, Yb in batches:
            net.train_batch(Xb, Yb)
        dt = time.perf_counter() - t
        rates.append(chunk_batches * b / dt)
        step_s.append(dt / chunk_batches)
        progress(f"    [{sampler} t={n_threads}] chunk {ci + 1}/{n_chunks}: {rates[-1]:,.0f} samples/s")
    c1 = net.counters()
    steps = c1["steps"] - c0["steps"]
    fb = (c1["time_forward_backward_s"] - c0["time_forward_backward_s"]) / steps
    up = (c1["time_update_s"] - c0["time_update_s"]) / steps
    touched_out = c1["frac_out_touched"] * SHAPE["n_labels"]
    model = bytes_per_step(net, X, Y, last_rows, touched_out, c1["mean_active_out"], out_pass)
    res = {"sampler": sampler, "n_threads": n_threads, "out_pass": out_pass, "samples_per_s_median": statistics.median(rates),
           "samples_per_s_all": rates, "step_ms_median": 1e3 * statistics.median(step_s),
           "phase_forward_backward_ms": 1e3 * fb, "phase_update_ms": 1e3 * up,
           "mean_active_out": c1["mean_active_out"], "frac_out_touched": c1["frac_out_touched"],
           "mean_lsh_candidates": c1["mean_lsh_candidates"], "table_bytes": net.table_bytes(),
           "bytes_per_step": model, "init_s": init_s}
    if net._tabled:
        reps = []
        for _ in range(3):
            t = time.perf_counter()
            for l in net._tabled:
                net._core.build(l, n_threads)
            reps.append(time.perf_counter() - t)
        rehash_s = statistics.median(reps)
        res["rehash_s"] = rehash_s
        res["rehash_every_samples"] = net.rehash_interval
        per = net.rehash_interval / b * statistics.median(step_s)
        res["rehash_fraction"] = rehash_s / (per + rehash_s)
        per = 6400 / b * statistics.median(step_s)
        res["rehash_fraction_release"] = rehash_s / (per + rehash_s)
        res["lsh_K"] = net.describe()["K"]
        res["active_lsh"] = c1["active_lsh"]
        res["active_random"] = c1["active_random"]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shape", choices=list(SHAPES), default="200k")
    ap.add_argument("--samplers", nargs="+", default=None,
                    help="200k: vanilla random full (default), topk, threshold, lsh1000, random1000; "
                         "670k: lsh1000 lsh3000; amazon: default")
    ap.add_argument("--chunks", type=int, default=5)
    ap.add_argument("--chunk-batches", type=int, default=10)
    ap.add_argument("--full-chunk-batches", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rows", type=int, default=128 * 40)
    ap.add_argument("--out-pass", choices=["sample", "row"], default="sample",
                    help="the training step's pass order (Network(out_pass=...)); row: one hidden layer, "
                         "sampled output only")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    shape, configs = SHAPES[args.shape]
    shape = dict(shape)          # (the 200k entry is SHAPE itself)
    SHAPE.clear()
    SHAPE.update(shape)          # make_data / bytes_per_step read the global shape
    if args.samplers is None:
        args.samplers = ["vanilla", "random", "full"] if args.shape == "200k" else list(configs)

    from slidebench.engine import build_info, parallel_capacity, triad_bandwidth
    print("engine:", json.dumps(build_info()))
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}  cores={os.cpu_count()}  out_pass={args.out_pass}")
    print(f"shape: {SHAPE}")
    t = time.perf_counter()
    X, Y = make_data(args.rows)
    print(f"data: {args.rows} rows generated in {time.perf_counter() - t:.1f}s")
    triad = {nt: triad_bandwidth(1 << 25, nt, 5) for nt in args.threads}
    for nt, bw in triad.items():
        print(f"STREAM-style triad (float32, 3 x 128 MiB, best of 5), {nt} thread(s): {bw / 1e9:.2f} GB/s")
    cap = {nt: parallel_capacity(nt) for nt in args.threads if nt > 1}
    for nt, c in cap.items():
        print(f"parallel capacity (pure compute, {nt} threads vs 1): {c:.2f}x "
              f"(about {nt} on an idle machine; lower = other processes hold the cores)")
    results = []
    for sampler in args.samplers:
        for nt in args.threads:
            cb = args.full_chunk_batches if sampler == "full" else args.chunk_batches
            try:
                r = measure(sampler, nt, X, Y, n_chunks=args.chunks, chunk_batches=cb, warmup=args.warmup,
                            params=configs[sampler], out_pass=args.out_pass)
            except Exception as e:     # reported, not hidden: e.g. LSH kernels not implemented yet
                print(f"  {sampler:8s} t={nt}: FAILED: {type(e).__name__}: {e}")
                results.append({"sampler": sampler, "n_threads": nt, "error": f"{type(e).__name__}: {e}"})
                continue
            bw = r["bytes_per_step"]["total"] * r["samples_per_s_median"] / SHAPE["batch"]
            r["bytes_per_s"] = bw
            r["fraction_of_triad"] = bw / triad[nt]
            # the update phase alone (its counting sorts included): its bytes over its own time
            r["update_fraction_of_triad"] = (r["bytes_per_step"]["update"] / (1e-3 * r["phase_update_ms"])
                                             / triad[nt])
            results.append(r)
            line = (f"  {sampler:8s} t={nt}: {r['samples_per_s_median']:9,.0f} samples/s "
                    f"({r['step_ms_median']:.1f} ms/batch; fwd+bwd {r['phase_forward_backward_ms']:.1f} ms, "
                    f"update {r['phase_update_ms']:.1f} ms)  active/sample {r['mean_active_out']:.0f}, "
                    f"out rows touched {100 * r['frac_out_touched']:.1f}%  "
                    f"(moves {r['bytes_per_step']['total'] / 1e6:.1f} MB/step = {bw / 1e9:.2f} GB/s "
                    f"= {100 * r['fraction_of_triad']:.0f}% of triad; update phase "
                    f"{r['bytes_per_step']['update'] / 1e6:.1f} MB = {100 * r['update_fraction_of_triad']:.0f}% of triad)")
            if "rehash_s" in r:
                line += (f"  tables {r['table_bytes'] / 2**20:.1f} MiB, rehash {1e3 * r['rehash_s']:.0f} ms "
                         f"= {100 * r['rehash_fraction']:.1f}% of time every {r['rehash_every_samples']} samples "
                         f"({100 * r['rehash_fraction_release']:.1f}% every 6400), K={r['lsh_K']}, "
                         f"active LSH/random per sample {r['active_lsh']:.0f}/{r['active_random']:.0f}")
            print(line, flush=True)
    by = {(r["sampler"], r["n_threads"]): r for r in results if "error" not in r}
    print("ratios (same session):")
    for nt in args.threads:
        full = by.get(("full", nt))
        for s in args.samplers:
            if s != "full" and (s, nt) in by and full:
                print(f"  {s} / full at {nt} thread(s): {by[(s, nt)]['samples_per_s_median'] / full['samples_per_s_median']:.1f}x")
    for s in args.samplers:
        if (s, 1) in by and (s, 2) in by:
            print(f"  {s}: 2 threads / 1 thread: {by[(s, 2)]['samples_per_s_median'] / by[(s, 1)]['samples_per_s_median']:.2f}x")
    print("note: timings on a shared machine are noisy; compare the ratios.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"triad_bytes_per_s": triad, "parallel_capacity": cap, "results": results,
                       "build": build_info()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
