"""A/B of two builds of the engine on one machine, interleaved finely enough to survive a noisy VM.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/engine_ab.py --old ../clean-clone --new . \
        [--samplers random1000 lsh1000] [--threads 1 2] [--shape 200k] [--pairs 30] [--chunk 8]
        [--old-pass sample] [--new-pass row]

`--old-pass` / `--new-pass` choose each side's training pass order (`Network(out_pass=...)`: the
per-sample pass or the row-ordered one), so `--old . --new . --new-pass row` compares the two orders
in one build.

Each side is a checkout with its own built engine and `.venv` (e.g. a clean clone of the commit
before a change, after `make build`). For each (sampler, threads) one worker process per side loads
its own build, builds the same network on the same random data as `benchmarks/engine_shape.py`
(same shape, same configs, same seed), warms up, and then the two take turns: `--chunk` training
batches on one side, then on the other (the order alternates every pair), `--pairs` times. On a
shared VM whose speed moves by 1.5x within minutes, back-to-back runs of whole benchmarks compare
the machine's moods; chunks a second apart compare the builds. Prints the median step time and
phase split of each side and the median of the per-pair ratios old / new with its quartiles.

A script, not an asv benchmark (nothing here is named time_*/peakmem_*/track_*).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(sampler: str, n_threads: int, shape_name: str, out_pass: str = "sample") -> int:
    """Child: train on this checkout's build, `n` batches per request line, reply with timings."""
    sys.path.insert(0, str(HERE.parent))
    import engine_shape as es
    from slidebench.engine import Network

    shape, cfgs = es.SHAPES[shape_name]
    es.SHAPE = shape                       # make_data reads the module's shape
    X, Y = es.make_data(40 * shape["batch"])
    b = shape["batch"]
    batches = [(X[i * b:(i + 1) * b], Y[i * b:(i + 1) * b]) for i in range(40)]
    net = Network.from_params(shape["n_features"], shape["n_labels"], cfgs[sampler], seed=0, n_threads=n_threads,
                              out_pass=out_pass)
    for i in range(3):
        net.train_batch(*batches[i])
    print("ready", flush=True)
    k = 3
    for line in sys.stdin:
        n = int(line)
        c0 = net.counters()
        t = time.perf_counter()
        for _ in range(n):
            net.train_batch(*batches[k % 40])
            k += 1
        dt = time.perf_counter() - t
        c1 = net.counters()
        fb = (c1["time_forward_backward_s"] - c0["time_forward_backward_s"]) / n
        up = (c1["time_update_s"] - c0["time_update_s"]) / n
        print(f"{dt / n:.6f} {fb:.6f} {up:.6f}", flush=True)
    return 0


def _start(root: Path, sampler: str, n_threads: int, shape: str, out_pass: str) -> subprocess.Popen:
    py = root / ".venv" / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"engine_ab: {root} has no .venv/bin/python (run `make build` there first)")
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    p = subprocess.Popen([str(py), str(HERE), "--worker", sampler, str(n_threads), shape, out_pass], cwd=root, env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = p.stdout.readline().strip()
    if first != "ready":
        p.kill()
        raise SystemExit(f"engine_ab: the worker in {root} did not start (said {first!r}); is its engine built?")
    return p


def compare(old: Path, new: Path, sampler: str, n_threads: int, shape: str, pairs: int, chunk: int,
            passes: tuple[str, str] = ("sample", "sample")) -> dict:
    procs = {"old": _start(old, sampler, n_threads, shape, passes[0]),
             "new": _start(new, sampler, n_threads, shape, passes[1])}
    res: dict[str, list[list[float]]] = {"old": [], "new": []}
    try:
        for i in range(pairs):
            for side in (("old", "new") if i % 2 == 0 else ("new", "old")):
                p = procs[side]
                p.stdin.write(f"{chunk}\n")
                p.stdin.flush()
                res[side].append([float(v) for v in p.stdout.readline().split()])
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    ratios = [o[0] / n[0] for o, n in zip(res["old"], res["new"])]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3

    def med(side, k):
        return 1e3 * statistics.median(r[k] for r in res[side])
    return {"sampler": sampler, "threads": n_threads, "shape": shape, "pairs": pairs, "chunk": chunk,
            "step_ms": (med("old", 0), med("new", 0)), "fwd_bwd_ms": (med("old", 1), med("new", 1)),
            "update_ms": (med("old", 2), med("new", 2)), "ratio": statistics.median(ratios), "q1": q[0], "q3": q[2]}


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], int(sys.argv[3]), sys.argv[4], *sys.argv[5:6])
    sys.path.insert(0, str(HERE.parent))
    import engine_shape as es
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, type=Path, help="checkout with the reference build")
    ap.add_argument("--new", required=True, type=Path, help="checkout with the build under test")
    ap.add_argument("--shape", default="200k", choices=sorted(es.SHAPES))
    ap.add_argument("--samplers", nargs="+", default=None, help="configs of engine_shape.py for that shape")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--chunk", type=int, default=8, help="training batches per turn")
    ap.add_argument("--old-pass", default="sample", choices=["sample", "row"], help="the old side's out_pass")
    ap.add_argument("--new-pass", default="sample", choices=["sample", "row"], help="the new side's out_pass")
    a = ap.parse_args(argv)
    known = es.SHAPES[a.shape][1]
    samplers = a.samplers or (["random1000", "lsh1000"] if a.shape == "200k" else sorted(known))
    bad = [s for s in samplers if s not in known]
    if bad:
        ap.error(f"unknown sampler(s) {', '.join(bad)} for shape {a.shape}; known: {', '.join(sorted(known))}")
    if a.pairs < 2 or a.chunk < 1 or any(t < 1 for t in a.threads):
        ap.error("--pairs must be >= 2, --chunk and each --threads >= 1")
    print(f"old {a.old.resolve()} ({a.old_pass} pass)  new {a.new.resolve()} ({a.new_pass} pass)  shape {a.shape}; "
          f"load {os.getloadavg()}", flush=True)
    for s in samplers:
        for t in a.threads:
            r = compare(a.old.resolve(), a.new.resolve(), s, t, a.shape, a.pairs, a.chunk, (a.old_pass, a.new_pass))
            print(f"{s:11s} t={t}: step {r['step_ms'][0]:.2f} -> {r['step_ms'][1]:.2f} ms "
                  f"(fwd+bwd {r['fwd_bwd_ms'][0]:.2f} -> {r['fwd_bwd_ms'][1]:.2f}, update {r['update_ms'][0]:.2f} -> "
                  f"{r['update_ms'][1]:.2f}); old/new {r['ratio']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}] "
                  f"over {r['pairs']} pairs of {r['chunk']} batches", flush=True)
    print(f"load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
