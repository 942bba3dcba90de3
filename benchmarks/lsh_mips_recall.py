"""Can LSH find a trained SLIDE network's top outputs if it hashes what the logit is? A retrieval probe.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/lsh_mips_recall.py \
        [--datasets amazon delicious] [--systems random+corr lsh+rand+corr] [--steps 1000] \
        [--K 4 5 6 7 8] [--L 25] [--cap 500] [--rows 256] [--workers 2] [--json out.json]

The engine's SimHash tables hash an output neuron's weight row ``w_j`` and query with the hidden
activation ``h``: a collision says the *angle* between them is small. The logit the softmax ranks by
is ``w_j . h + b_j``, which also depends on ``|w_j|`` and on the bias, so the exact top-10 outputs
need not be the rows nearest in angle (docs/engine.md "Sampling: the evidence": recall@10 of the
500-candidate LSH share was 0.27-0.33 on delicious-small and 0.02-0.03 on amazon-small). This probe
trains a network with the engine (`benchmarks/sampling_evidence.py`'s systems, seed 0, its tuned lr,
one thread), then, on the trained output layer and the hidden activations of `--rows` evaluation
points, builds SimHash tables (`LSHIndex`, the engine's own kernels) four ways and queries each in
the `topk` mode capped at `--cap` candidates:

* ``plain``: rows ``w_j``, queries ``h`` (what the engine does);
* ``bias``: rows ``[w_j, b_j]``, queries ``[h, 1]`` (the bias counted, norms still ignored);
* ``mips``: rows ``[w_j, b_j, sqrt(M^2 - |w_j|^2 - b_j^2)]`` with ``M = max_j |[w_j, b_j]|``, queries
  ``[h, 1, 0]``: every row has norm M, so the angle to a query is a decreasing function of
  ``w_j . h + b_j`` alone (the asymmetric transform of Neyshabur and Srebro, ICML 2015, "simple-LSH");
* ``centered``: as ``mips`` with the queries centred, ``[h - mu, 1, 0]``, and ``w_j . mu`` moved into
  the bias (the logit is unchanged); ``mu`` is the mean hidden activation of 2,000 training points.
  ReLU activations all lie in the positive orthant, so uncentred queries share most SimHash bits.

For each K (and ``--hash-seeds`` independent sets of hash functions, mean and min-max) it prints the
share of the rows a table stores (a SimHash table has 2^K buckets of ``--bucket-size`` slots, so at
small K most rows overflow and are dropped), the mean candidates returned and recall@10 (|candidates & exact top-10| / 10,
the exact top-10 by ``h W^T + b``), beside what ``--cap`` uniform neurons would give
(cap / n_outputs) and, for an LSH-trained network, the engine's own ``Network.lsh_recall`` on the
same rows (a check that ``plain`` measures what the engine measures). The ``cap`` line is each
variant's ceiling: recall@10 of the ``--cap`` rows nearest to the query in angle in that variant's
space, what tables with unlimited hash bits would approach (1 for ``mips`` and ``centered`` by
construction; below 1 for ``plain`` and ``bias`` where the angle and the logit disagree). The ``cos``
line: the mean cosine between a query and its exact top-10 rows, and the median cosine over all rows
(medians over the queries). SimHash's per-bit collision probability is 1 - angle/pi, so two cosines
close together mean tables that hardly tell the targets from the rest. Untimed: retrieval quality
only, no training with the transformed tables. A script, not an asv benchmark (nothing here is named
time_*/peakmem_*/track_*, and importing it does nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the lr sampling_evidence.py's tuning chose for each (dataset, system) (docs/engine.md's table)
TUNED_LR = {("delicious", "random+corr"): 3e-3, ("delicious", "lsh+rand+corr"): 3e-3,
            ("amazon", "random+corr"): 1e-2, ("amazon", "lsh+rand+corr"): 1e-2}
VARIANTS = ("plain", "bias", "mips", "centered")
#: training points whose mean hidden activation centres the queries of ``centered``
MU_ROWS = 2000


def augment(W, b, variant: str, mu=None):
    """Rows to hash ([n, d'] float32) for a variant; W [n, d] neuron-major, b [n]; mu [d] the mean
    hidden activation (``centered`` only)."""
    import numpy as np
    W = np.asarray(W, np.float64)
    b = np.asarray(b, np.float64)[:, None]
    if variant == "plain":
        A = W
    elif variant == "bias":
        A = np.hstack([W, b])
    elif variant in ("mips", "centered"):
        if variant == "centered":          # w.(h - mu) + (b + w.mu) = w.h + b: the logit, unchanged
            b = b + (W @ np.asarray(mu, np.float64))[:, None]
        wb = np.hstack([W, b])
        sq = (wb * wb).sum(1)
        A = np.hstack([wb, np.sqrt(np.maximum(sq.max() - sq, 0.0))[:, None]])
    else:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return np.ascontiguousarray(A, np.float32)


def queries(H, variant: str, mu=None):
    """Query vectors for a variant: h, [h, 1], [h, 1, 0] or [h - mu, 1, 0]."""
    import numpy as np
    H = np.asarray(H, np.float32)
    n = H.shape[0]
    if variant == "plain":
        return np.ascontiguousarray(H)
    one = np.ones((n, 1), np.float32)
    if variant == "bias":
        return np.ascontiguousarray(np.hstack([H, one]))
    if variant == "centered":
        H = H - np.asarray(mu, np.float32)[None, :]
    return np.ascontiguousarray(np.hstack([H, one, np.zeros((n, 1), np.float32)]))


def recall_at(cands, top) -> float:
    import numpy as np
    k = top.shape[1]
    return float(np.mean([np.intersect1d(c, t).size / k for c, t in zip(cands, top)]))


def _hidden(net, X):
    """The trained network's last hidden activations of the rows of X (exact, one thread)."""
    import numpy as np
    X = X.tocsr()
    return net._core.hidden(X.indptr.astype(np.int32), X.indices.astype(np.int32), X.data.astype(np.float32),
                            X.shape[0], 1)


def probe(job: dict) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if str(ROOT / "benchmarks") not in sys.path:        # sampling_evidence.py's systems and data
        sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    import sampling_evidence as se
    from slidebench import metrics
    from slidebench.engine import LSHIndex
    from slidebench.trainers import get_trainer

    data = se._load(job["dataset"])
    system, params = se.SYSTEMS[job["system"]]
    params = dict(params, lr=TUNED_LR[(job["dataset"], job["system"])])
    tr = get_trainer(system)()
    tr.setup(data, params, seed=0, n_threads=1)
    tr.train_steps(job["steps"])
    sub = metrics.eval_subset(data.X_test.shape[0], se.EVAL_SIZE, se.DATA_SEED)[: job["rows"]]
    Xe = data.X_test[sub]
    net = tr.net
    H = _hidden(net, Xe)
    # the centring vector from training points (never the evaluation rows it is scored on)
    mu = _hidden(net, data.X_train[:MU_ROWS]).mean(0)
    W = np.asarray(net._core.W[1])
    b = np.asarray(net._core.b[1])
    logits = H.astype(np.float64) @ W.T.astype(np.float64) + b
    top = np.argsort(-logits, axis=1, kind="stable")[:, :10]
    engine_top = net.predict_topk(Xe, 10, mode="exact")
    out = {"dataset": job["dataset"], "system": job["system"], "steps": job["steps"], "rows": len(sub),
           "n_outputs": int(W.shape[0]), "cap": job["cap"], "L": job["L"],
           "top10_agrees_with_engine": recall_at(list(engine_top), top),
           "uniform_recall": job["cap"] / W.shape[0], "results": []}
    if net._tabled:
        out["engine_lsh_recall"] = net.lsh_recall(Xe, 10)
        out["engine_K"] = net.describe()["K"]
    for variant in VARIANTS:
        A = augment(W, b, variant, mu)
        Q = queries(H, variant, mu)
        # the variant's ceiling: its cap rows nearest in angle (what infinitely many hash bits would rank)
        cos = (Q.astype(np.float64) @ A.T.astype(np.float64)) / np.maximum(
            np.linalg.norm(A, axis=1)[None, :] * np.linalg.norm(Q, axis=1)[:, None], 1e-30)
        near = np.argpartition(-cos, job["cap"] - 1, axis=1)[:, :job["cap"]]
        out.setdefault("angle_ceiling", {})[variant] = recall_at(list(near), top)
        # how far apart in angle the targets are from the rest: the mean cosine of a query's exact
        # top-10 rows and the median cosine over all rows (medians over the queries)
        out.setdefault("cos_top10", {})[variant] = float(np.median(np.take_along_axis(cos, top, 1).mean(1)))
        out.setdefault("cos_median", {})[variant] = float(np.median(np.median(cos, axis=1)))
        for K in job["K"]:
            n_c, rec, st = [], [], []
            for hs in range(job.get("hash_seeds", 1)):       # independent hash functions
                idx = LSHIndex("simhash", A.shape[1], K, job["L"], 18, job.get("bucket_size", 128),
                               insertion="reservoir", seed=1000 * hs + K)
                idx.build(A, 1)
                # share of the rows a table holds (a SimHash table has 2^K buckets of bucket_size slots:
                # at small K most rows overflow and are not stored at all)
                st.append(float(idx.bucket_sizes().sum(1).mean()) / A.shape[0])
                indptr, ids, _ = idx.query_many(Q, mode="topk", target=job["cap"], max_out=job["cap"])
                cands = [ids[indptr[i]:indptr[i + 1]] for i in range(Q.shape[0])]
                n_c.append(float(np.mean([len(c) for c in cands])))
                rec.append(recall_at(cands, top))
            out["results"].append({"variant": variant, "K": K, "candidates": float(np.mean(n_c)),
                                   "stored": float(np.mean(st)),
                                   "recall_at_10": float(np.mean(rec)), "recall_min": min(rec),
                                   "recall_max": max(rec)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["amazon", "delicious"], choices=["amazon", "delicious"])
    ap.add_argument("--systems", nargs="+", default=["random+corr", "lsh+rand+corr"],
                    choices=sorted({s for _, s in TUNED_LR}))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--K", type=int, nargs="+", default=[4, 5, 6, 7, 8])
    ap.add_argument("--L", type=int, default=25)
    ap.add_argument("--cap", type=int, default=500)
    ap.add_argument("--bucket-size", type=int, default=128,
                    help="slots per bucket (128 as in sampling_evidence.py); a SimHash table has only 2^K buckets")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--hash-seeds", type=int, default=3, help="independent sets of hash functions per K (mean reported)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    from slidebench.engine._lsh_config import MAX_TABLES
    if min(a.steps, a.cap, a.rows, a.L, a.hash_seeds, a.bucket_size) < 1 or any(k < 1 or k > 30 for k in a.K):
        ap.error("--steps, --cap, --rows, --L, --hash-seeds and --bucket-size must be >= 1 and each --K in 1..30")
    if a.L > MAX_TABLES:                # checked before any training: the tables count hits in a byte
        ap.error(f"--L must be at most {MAX_TABLES} (the engine's table limit), got {a.L}")
    jobs = [{"dataset": d, "system": s, "steps": a.steps, "K": a.K, "L": a.L, "cap": a.cap, "rows": a.rows,
             "hash_seeds": a.hash_seeds, "bucket_size": a.bucket_size}
            for d in a.datasets for s in a.systems]
    print(f"{len(jobs)} trainings of {a.steps} steps on {a.workers} worker(s), then SimHash tables "
          f"(L={a.L}, K in {a.K}, bucket {a.bucket_size}, top-{a.cap}) over the trained output layer", flush=True)
    with ProcessPoolExecutor(max_workers=max(1, a.workers)) as pool:
        res = list(pool.map(probe, jobs))
    for r in res:
        eng = (f"; the engine's own recall@10 {r['engine_lsh_recall']:.3f} (K={r['engine_K']})"
               if "engine_lsh_recall" in r else "")
        print(f"\n{r['dataset']}-small, trained by {r['system']} for {r['steps']} steps ({r['n_outputs']:,} outputs, "
              f"{r['rows']} evaluation rows; top-10 agrees with the engine's exact predict "
              f"{r['top10_agrees_with_engine']:.3f}); {r['cap']} uniform neurons: recall@10 "
              f"{r['uniform_recall']:.3f}{eng}")
        print(f"  {'K':>3} " + "  ".join(f"{v + ': stored, cands, recall@10 [min-max]':>44}" for v in VARIANTS))
        print(f"  {'cap':>3} " + "  ".join(f"{'nearest in angle: ' + format(r['angle_ceiling'][v], '.3f'):>44}"
                                           for v in VARIANTS))
        print(f"  {'cos':>3} " + "  ".join(f"{'top-10 ' + format(r['cos_top10'][v], '.3f') + ', median ' + format(r['cos_median'][v], '.3f'):>44}"
                                           for v in VARIANTS))
        for K in sorted({x["K"] for x in r["results"]}):
            cells = []
            for v in VARIANTS:
                x = next(x for x in r["results"] if x["K"] == K and x["variant"] == v)
                cells.append(f"{x['stored']:>4.0%}, {x['candidates']:>5.0f}, {x['recall_at_10']:.3f} "
                             f"[{x['recall_min']:.3f}-{x['recall_max']:.3f}]")
            print(f"  {K:>3} " + "  ".join(f"{c:>44}" for c in cells))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
