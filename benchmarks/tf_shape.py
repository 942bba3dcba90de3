"""Steps per second of the TensorFlow baselines on the suite's comparison shape.

Shape: 200,000 features, ~75 nonzeros per sample, hidden 128, 50,000 labels, batch 128 (random
sparse data: speed does not depend on what is learned). Each (system, config, threads) runs in its
own subprocess because TensorFlow's thread pools are fixed per process. In each child: setup, a
warm-up (tracing/XLA compilation), then ``--chunks`` timed calls of ``train_steps(--chunk)``; the
median chunk gives steps/s. The parent prints a table and the ratio tuned/paper per system and
thread count.

This is a script, not an asv benchmark (asv imports every module under benchmarks/; nothing here is
named time_*/peakmem_*/track_*, and importing it does nothing):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/tf_shape.py [--threads 1 2] [--quick]
    .venv/bin/python benchmarks/tf_shape.py --variant tuned:xla=false    # a configuration with overrides
    .venv/bin/python benchmarks/tf_shape.py --interleave --systems tf_full_softmax --threads 1 \
        --variant paper tuned:xla=false tuned --chunks 10 --chunk 2     # one-process A/B, interleaved
        # (--n-labels 200000: the same at the headline's output size)
    .venv/bin/python benchmarks/tf_shape.py --roofline [--labels 200000] [--threads 2]
        # tuned TF full softmax's output-layer GFLOP/s next to numpy SGEMM's on the same 128 x 128 x N
        # shapes, measured in one subprocess with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset; writes
        # results/summary/roofline.csv (slidebench/baselines/roofline.py explains the measure)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPE = {"n_features": 200_000, "nnz": 75, "hidden": 128, "n_labels": 50_000, "batch_size": 128,
         "labels_per_sample": 5}


def make_dataset(n_rows: int, seed: int = 0):
    import numpy as np
    import scipy.sparse as sp
    from slidebench.contract import Dataset

    rng = np.random.default_rng(seed)

    def csr(n, dim, per, values):
        counts = np.clip(rng.poisson(per, n), 1, None).astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        idx = np.concatenate([np.sort(rng.choice(dim, c, replace=False)) for c in counts]).astype(np.int32)
        data = (rng.random(len(idx)).astype(np.float32) if values else np.ones(len(idx), np.float32))
        return sp.csr_matrix((data, idx, indptr), shape=(n, dim))

    X = csr(n_rows, SHAPE["n_features"], SHAPE["nnz"], True)
    Y = csr(n_rows, SHAPE["n_labels"], SHAPE["labels_per_sample"], False)
    return Dataset("tf_shape", X, Y, X[:256], Y[:256])


def parse_overrides(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, _, val = item.partition("=")
        v: object
        low = val.strip().lower()
        if low in ("true", "false"):
            v = low == "true"
        elif low in ("none", "null"):
            v = None
        else:
            try:
                v = json.loads(val)
            except json.JSONDecodeError:
                v = val
        out[key.strip()] = v
    return out


def child(system: str, variant: str, threads: int, chunk: int, chunks: int, warmup: int) -> dict:
    from slidebench.trainers import get_trainer

    config, _, over = variant.partition(":")
    ds = make_dataset(SHAPE["batch_size"] * 64)
    params = {"config": config, "batch_size": SHAPE["batch_size"], "hidden": [SHAPE["hidden"]], **parse_overrides(over)}
    tr = get_trainer(system)()
    t0 = time.perf_counter()
    tr.setup(ds, params, seed=0, n_threads=threads)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr.train_steps(warmup)
    warm_s = time.perf_counter() - t0
    rates = []
    for _ in range(chunks):
        t0 = time.perf_counter()
        tr.train_steps(chunk)
        rates.append(chunk / (time.perf_counter() - t0))
    d = tr.describe()
    return {"system": system, "variant": variant, "threads": threads, "steps_per_s": statistics.median(rates),
            "rates": rates, "setup_s": setup_s, "warmup_s": warm_s, "traces": d["traces"], "xla": d["xla"],
            "intra": d["intra_op_threads"], "inter": d["inter_op_threads"]}


def interleaved(system: str, variants: list[str], threads: int, reps: int, chunk: int) -> None:
    """All variants in ONE process (same thread pools), their chunks interleaved round-robin, so machine
    load hits every variant alike: the fairest A/B on a shared machine. Variants must not differ in thread
    settings (inter_op_threads), which are per process."""
    from slidebench.trainers import get_trainer

    ds = make_dataset(SHAPE["batch_size"] * 64)
    trainers = []
    for v in variants:
        config, _, over = v.partition(":")
        tr = get_trainer(system)()
        tr.setup(ds, {"config": config, "batch_size": SHAPE["batch_size"], "hidden": [SHAPE["hidden"]],
                      **parse_overrides(over)}, seed=0, n_threads=threads)
        tr.train_steps(2)
        trainers.append(tr)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(reps):
        for v, tr in zip(variants, trainers):
            t0 = time.perf_counter()
            tr.train_steps(chunk)
            times[v].append((time.perf_counter() - t0) / chunk)
        print(f"[tf_shape] round {r + 1}/{reps}", file=sys.stderr, flush=True)
    ref = statistics.median(times[variants[0]])
    print(f"{system}, {threads} thread(s), {SHAPE['n_labels']:,} labels, one process, {reps} interleaved rounds of "
          f"{chunk} steps (median):")
    for v in variants:
        m = statistics.median(times[v])
        print(f"  {v:50s} {m * 1e3:8.1f} ms/step  {ref / m:5.2f}x vs {variants[0]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="+", default=["tf_full_softmax", "tf_sampled_softmax"])
    ap.add_argument("--variant", nargs="+", default=["paper", "tuned"],
                    help="config[:key=value,...] (first one is the reference of the ratio)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--chunk", type=int, default=5, help="steps per timed chunk")
    ap.add_argument("--chunks", type=int, default=5, help="timed chunks (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the whole grid this many times, interleaved (the table shows the median of the "
                         "repeats' medians and their range: use it on a shared machine)")
    ap.add_argument("--quick", action="store_true", help="3 chunks of 3 steps")
    ap.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="environment for the children, e.g. TF_ENABLE_ONEDNN_OPTS=0")
    ap.add_argument("--interleave", action="store_true",
                    help="A/B mode: the variants of the first system at the first thread count in one process, "
                         "steps interleaved (--chunks rounds of --chunk steps)")
    ap.add_argument("--n-labels", type=int, default=None,
                    help="--interleave: output labels of the shape instead of 50,000 (e.g. 200000, the headline's)")
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--roofline", action="store_true",
                    help="TF full softmax (tuned) output-layer GFLOP/s vs numpy SGEMM on the same shapes; writes --csv")
    ap.add_argument("--labels", nargs="+", type=int, default=[200_000], help="--roofline: label counts")
    ap.add_argument("--csv", default="results/summary/roofline.csv", help="--roofline: CSV to write")
    ap.add_argument("--child", nargs=3, metavar=("SYSTEM", "VARIANT", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.chunk, a.chunks = 3, 3
    if a.roofline:
        from slidebench.baselines import roofline
        args = ["--labels", *map(str, a.labels), "--threads", str(max(a.threads)), "--csv", a.csv]
        return roofline.main(args)
    if a.child:
        res = child(a.child[0], a.child[1], int(a.child[2]), a.chunk, a.chunks, a.warmup)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if a.n_labels is not None and not a.interleave:
        ap.error("--n-labels goes with --interleave (the grid's child processes use the fixed shape)")
    if a.interleave:
        if a.n_labels is not None:
            SHAPE["n_labels"] = a.n_labels
        interleaved(a.systems[0], a.variant, a.threads[0], max(a.chunks, 3), a.chunk)
        return 0
    env = dict(os.environ)
    for item in a.env:
        key, sep, val = item.partition("=")
        if not sep or not key:
            ap.error(f"--env expects KEY=VALUE, got {item!r}")
        env[key] = val
    runs = []
    grid = [(system, threads, variant) for system in a.systems for threads in a.threads for variant in a.variant]
    for rep_i in range(a.repeat):
        for system, threads, variant in grid:
            print(f"[tf_shape] {system} {variant} threads={threads} (repeat {rep_i + 1}/{a.repeat}) ...",
                  file=sys.stderr, flush=True)
            cmd = [sys.executable, os.path.abspath(__file__), "--child", system, variant, str(threads),
                   "--chunk", str(a.chunk), "--chunks", str(a.chunks), "--warmup", str(a.warmup)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                print(f"[tf_shape] FAILED {system} {variant} threads={threads}:\n{proc.stderr[-3000:]}", file=sys.stderr)
                runs.append({"system": system, "variant": variant, "threads": threads, "error": proc.stderr[-500:]})
                continue
            r = json.loads(line[-1][7:])
            print(f"[tf_shape]   {r['steps_per_s']:.2f} steps/s (chunks {', '.join(f'{x:.2f}' for x in r['rates'])}; "
                  f"setup {r['setup_s']:.1f}s, warm-up {r['warmup_s']:.1f}s, traces {r['traces']})", file=sys.stderr, flush=True)
            runs.append(r)
    results = []
    for system in a.systems:
        for threads in a.threads:
            for variant in a.variant:
                group = [r for r in runs if (r["system"], r["variant"], r["threads"]) == (system, variant, threads)]
                ok = [r["steps_per_s"] for r in group if "error" not in r]
                if not ok:
                    results.append(group[0])
                    continue
                results.append({"system": system, "variant": variant, "threads": threads,
                                "steps_per_s": statistics.median(ok), "min": min(ok), "max": max(ok), "n": len(ok)})
    print(f"shape: {SHAPE}; median of {a.chunks} chunks x {a.chunk} steps after {a.warmup} warm-up steps"
          + (f"; env {' '.join(a.env)}" if a.env else ""))
    print(f"{'system':20s} {'variant':32s} {'thr':>3s} {'steps/s':>8s} {'ms/step':>8s} {'ratio':>6s}  range (n)")
    for r in results:
        if "error" in r:
            print(f"{r['system']:20s} {r['variant']:32s} {r['threads']:3d} {'FAILED':>8s}")
            continue
        ref = next((q for q in results if q["system"] == r["system"] and q["threads"] == r["threads"]
                    and q["variant"] == a.variant[0] and "error" not in q), None)
        ratio = f"{r['steps_per_s'] / ref['steps_per_s']:.2f}" if ref else "-"
        print(f"{r['system']:20s} {r['variant']:32s} {r['threads']:3d} {r['steps_per_s']:8.2f} "
              f"{1000 / r['steps_per_s']:8.1f} {ratio:>6s}  {r['min']:.2f}-{r['max']:.2f} ({r['n']})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": results, "runs": runs}, f, indent=1)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
