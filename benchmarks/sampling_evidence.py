"""What LSH adds to SLIDE's active set: the evidence behind the engine's `default` configuration.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/sampling_evidence.py \
        [--datasets delicious amazon] [--seeds 0 1 2] [--steps 250 500 1000] [--lrs 1e-3 3e-3 1e-2] \
        [--tune-seed 0] [--workers 2] [--no-tf] [--csv results/summary/engine_sampling.csv]

On the synthetic look-alikes `<preset>-small` (50,000 features, 20,000 labels), at an equal active
set of 1,000 output neurons per sample (5%), batch 128, hidden 128, one thread per run, this trains:

* full      every output neuron (the exact objective);
* random    1,000 uniformly random neurons (+ the labels);
* lsh       SimHash top-k LSH only (K = "auto" for a 1,000-neuron share, L = 25), no padding;
* lsh+rand  500 LSH candidates + a guaranteed block of 500 uniform random neurons;
* each sampled one with and without the log-inclusion-probability correction (`correction`);
* paper     the 2019 release's settings (DWTA K=6 L=50, 0.5% active, lr 1e-4), as a reference row;
* tf_full   TensorFlow full softmax (`slidebench.baselines`, config `tuned`) through its Trainer API.

Learning rate: every system is tuned the same way: each of --lrs on --tune-seed, P@1 at the last
step count; the best lr is then run on the other seeds (paper keeps its 1e-4). P@1 on a fixed,
seeded 2,000-point evaluation subset (slidebench.metrics.eval_subset) after each step count,
samples/s from the time inside train_steps only, and the LSH recall@10 at the end. Writes one
CSV row per (dataset, system, seed, lr, step) and prints a table of means and seed spreads.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACTIVE = 1000
SHARE = 500
BASE = {"hidden": [128], "active": ACTIVE, "batch_size": 128, "init_std": 0.01}
LSH = {"sampler": "topk", "hash": "simhash", "K": "auto", "L": 25, "range_pow": 18, "bucket_size": 128}
SYSTEMS: dict[str, tuple[str, dict]] = {
    "full": ("slide", {**BASE, "sampler": "full"}),
    "random": ("slide", {**BASE, "sampler": "random"}),
    "random+corr": ("slide", {**BASE, "sampler": "random", "correction": "logq"}),
    "lsh": ("slide", {**BASE, **LSH, "lsh_active": ACTIVE, "random_active": 0, "min_active": 0}),
    "lsh+corr": ("slide", {**BASE, **LSH, "lsh_active": ACTIVE, "random_active": 0, "min_active": 0,
                           "correction": "logq"}),
    "lsh+rand": ("slide", {**BASE, **LSH, "lsh_active": SHARE, "random_active": ACTIVE - SHARE}),
    "lsh+rand+corr": ("slide", {**BASE, **LSH, "lsh_active": SHARE, "random_active": ACTIVE - SHARE,
                                "correction": "logq"}),
    # the same with room for every neuron in the tables: a SimHash table has only 2^K buckets, and at
    # 128 slots a bucket it stored 10-77% of the rows (benchmarks/lsh_mips_recall.py; not in the default set)
    "lsh+rand+corr/b4096": ("slide", {**BASE, **LSH, "bucket_size": 4096, "lsh_active": SHARE,
                                      "random_active": ACTIVE - SHARE, "correction": "logq"}),
    # a small LSH share beside a large random block (a probe, not in the default set)
    "lsh10%+rand+corr": ("slide", {**BASE, **LSH, "lsh_active": 100, "random_active": ACTIVE - 100,
                                   "correction": "logq"}),
    "paper": ("slide", {"config": "paper", "batch_size": 128}),
    "tf_full": ("tf_full_softmax", {"config": "tuned", "batch_size": 128}),
}
#: systems run only when asked for (--systems)
PROBES = ("lsh10%+rand+corr", "lsh+rand+corr/b4096")
EVAL_SIZE = 2000
DATA_SEED = 0


def _load(preset: str):
    from slidebench.data import load_dataset
    return load_dataset(preset, "small", seed=DATA_SEED)


def run_one(job: dict) -> list[dict]:
    """One training run in this (worker) process; returns one row per step count."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from slidebench import metrics
    from slidebench.trainers import get_trainer

    data = _load(job["dataset"])
    system, params = SYSTEMS[job["system"]]
    params = dict(params)
    if job["lr"] is not None:
        params["lr"] = job["lr"]
    tr = get_trainer(system)()
    tr.setup(data, params, seed=job["seed"], n_threads=1)
    sub = metrics.eval_subset(data.X_test.shape[0], EVAL_SIZE, DATA_SEED)
    Xe, Ye = data.X_test[sub], data.Y_test[sub]
    rows, done, train_s = [], 0, 0.0
    for target in job["steps"]:
        t0 = time.perf_counter()
        st = tr.train_steps(target - done)
        train_s += time.perf_counter() - t0
        done = target
        top = tr.predict_topk(Xe, 1)
        row = {"dataset": job["dataset"], "system": job["system"], "seed": job["seed"],
               "lr": params.get("lr", "config"), "step": target, "p_at_1": metrics.precision_at_k(top, Ye, 1),
               "train_time_s": round(train_s, 3), "samples_per_s": round(target * 128 / train_s, 1),
               "loss": st.loss}
        c = st.counters or {}
        for k in ("active_labels", "active_lsh", "active_random"):
            row[k] = round(c[k], 1) if k in c else ""
        row["lsh_recall_at_10"] = ""
        if target == job["steps"][-1] and hasattr(tr, "eval_metrics"):
            m = tr.eval_metrics(Xe)
            row["lsh_recall_at_10"] = round(m["lsh_recall_at_10"], 4) if m else ""
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["delicious", "amazon"])
    ap.add_argument("--systems", nargs="+", default=[s for s in SYSTEMS if s not in PROBES], choices=list(SYSTEMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", nargs="+", type=int, default=[250, 500, 1000])
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--tune-seed", type=int, default=0)
    ap.add_argument("--tune-datasets", nargs="+", default=None,
                    help="datasets on which each system's lr is tuned (default: all); elsewhere --fixed-lr")
    ap.add_argument("--once", nargs="*", default=["full", "tf_full"],
                    help="systems run on the tune seed of the tune datasets only (the slow exact references)")
    ap.add_argument("--full-lr", type=float, default=3e-3, help="the engine's full sampler is not tuned")
    ap.add_argument("--tf-datasets", nargs="*", default=["delicious"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-tf", action="store_true")
    ap.add_argument("--csv", default=str(ROOT / "results" / "summary" / "engine_sampling.csv"))
    a = ap.parse_args(argv)
    systems = [s for s in a.systems if not (a.no_tf and s == "tf_full")]

    def wanted(d, s):
        return s != "tf_full" or d in a.tf_datasets
    for d in a.datasets:              # generate/cache the data once, before the workers start
        _load(d)
    tune_ds = a.tune_datasets or a.datasets
    rows: list[dict] = []
    t_start = time.time()
    partial = Path(a.csv).with_suffix(".partial.csv")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)

    def progress(r, path):
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(r[0]))
            if new:
                w.writeheader()
            w.writerows(r)
        last = r[-1]
        print(f"[{time.time() - t_start:6.0f}s] {last['dataset']:9s} {last['system']:14s} seed {last['seed']} "
              f"lr {last['lr']}: P@1 " + " ".join(f"{x['p_at_1']:.3f}" for x in r)
              + f"  {last['samples_per_s']:.0f} samples/s", flush=True)
    with ProcessPoolExecutor(max_workers=a.workers) as ex:
        # phase 1: lr tuning on the tune seed (paper keeps its own lr)
        def lrs_for(s):
            return [None] if s == "paper" else [a.full_lr] if s == "full" else a.lrs
        # the slow exact references (once) go last, so the partial CSV fills with the ablation first
        order = [s for s in systems if s not in a.once] + [s for s in systems if s in a.once]
        jobs = [{"dataset": d, "system": s, "seed": a.tune_seed, "lr": lr, "steps": a.steps}
                for d in tune_ds for s in order if wanted(d, s) for lr in lrs_for(s)]
        for r in ex.map(run_one, jobs):
            rows += r
            progress(r, partial)
        best = {}
        for s in systems:
            for d in a.datasets:
                cand = [r for r in rows if r["dataset"] == d and r["system"] == s and r["step"] == a.steps[-1]]
                if cand:
                    best[d, s] = max(cand, key=lambda r: r["p_at_1"])["lr"]
            for d in a.datasets:        # untuned datasets take the first tuned dataset's best lr
                if (d, s) not in best and wanted(d, s):
                    best[d, s] = next((best[t, s] for t in tune_ds if (t, s) in best), None)
        # phase 2: the other seeds (and untuned datasets) at the best lr
        jobs = [{"dataset": d, "system": s, "seed": seed, "lr": None if best[d, s] in ("config", None) else best[d, s],
                 "steps": a.steps}
                for d in a.datasets for s in systems if wanted(d, s) for seed in a.seeds
                if not (d in tune_ds and seed == a.tune_seed) and s not in a.once
                and not (s == "paper" and seed != a.tune_seed)]
        for r in ex.map(run_one, jobs):
            rows += r
            progress(r, partial)
    for r in rows:
        r["best_lr"] = int(r["lr"] == best[r["dataset"], r["system"]])
    out = Path(a.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    partial.unlink(missing_ok=True)
    print_table(rows, a.steps)
    print(f"\nwrote {out} ({len(rows)} rows) in {time.time() - t_start:.0f} s; load: {os.getloadavg()}")
    return 0


def print_table(rows: list[dict], steps: list[int]) -> None:
    import numpy as np
    print("\nP@1 at the best lr (mean over seeds, [min-max]); samples/s (contended if the machine was shared)")
    hdr = f"{'dataset':10s} {'system':14s} {'lr':>7s} " + " ".join(f"{'P@1 @' + str(s):>20s}" for s in steps) \
        + f" {'samples/s':>10s} {'lsh/rand/lab':>16s} {'recall@10':>9s}"
    print(hdr)
    keys = sorted({(r["dataset"], r["system"]) for r in rows}, key=lambda k: (k[0], list(SYSTEMS).index(k[1])))
    for d, s in keys:
        sel = [r for r in rows if r["dataset"] == d and r["system"] == s and r["best_lr"]]
        cells = []
        for st in steps:
            v = np.array([r["p_at_1"] for r in sel if r["step"] == st])
            cells.append(f"{v.mean():.3f} [{v.min():.3f}-{v.max():.3f}]")
        last = [r for r in sel if r["step"] == steps[-1]]
        sps = np.mean([r["samples_per_s"] for r in last])
        comp = "/".join(f"{np.mean([float(r[k]) for r in last]):.0f}" if last[0][k] != "" else "-"
                        for k in ("active_lsh", "active_random", "active_labels"))
        rec = [float(r["lsh_recall_at_10"]) for r in last if r["lsh_recall_at_10"] != ""]
        print(f"{d:10s} {s:14s} {str(last[0]['lr']):>7s} " + " ".join(f"{c:>20s}" for c in cells)
              + f" {sps:10.0f} {comp:>16s} {np.mean(rec) if rec else float('nan'):9.3f}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
