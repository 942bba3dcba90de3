"""Print the values chosen by the tuning experiment (experiments/tune.toml): ``make tune`` runs it first.

For each data set and label, every finished trial's final P@1 on the whole evaluation set (the
validation split carved from the training set, ``[data] validation``), and the chosen trial: the
highest final P@1; ties (to 3 decimals: e.g. every trial still at the majority label, as TF full softmax
is at 200k labels in its first tens of seconds) go to the lower training loss at the last evaluation (the loss of the
system's own objective, compared only between trials of one system on one data set and one batch
order), then to the smaller learning rate. Reads the run logs under
``results/raw/<experiment>/``; never the test set (a trial whose log says it did not evaluate on a
validation split is refused).

    .venv/bin/python benchmarks/tune_pick.py [--results-dir results] [--experiment tune]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TUNED_KEYS = ("lr", "num_sampled")


def collect(results_dir: Path, experiment: str) -> list[dict]:
    from slidebench.harness.runlog import find_logs, read_log
    rows = []
    for path in find_logs(results_dir, experiment):
        log = read_log(path)
        if not log.complete or log.run_start is None:
            continue
        rs, st = log.run_start, log.run_stop
        if st.get("final_p_at_1") is None:
            continue
        rows.append({"dataset": (rs.get("dataset") or {}).get("name", "?"), "label": rs.get("label", path.parent.name),
                     "params": {k: (rs.get("params") or {}).get(k) for k in TUNED_KEYS
                                if (rs.get("params") or {}).get(k) is not None},
                     "validation": _find(rs, "validation"),
                     "final_p_at_1": float(st["final_p_at_1"]), "steps": st.get("steps"), "path": str(path),
                     "train_loss": _last_loss(log.evals)})
    return rows


def _last_loss(evals) -> float:
    """The training loss at the last evaluation that has one (inf when none: never preferred)."""
    for e in reversed(evals or []):
        v = e.get("train_loss")
        if v is not None and v == v:
            return float(v)
    return float("inf")


def _find(obj, key):
    """The first value of ``key`` anywhere in a nested dict/list (the run's data identity carries it)."""
    if isinstance(obj, dict):
        if obj.get(key) is not None:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            got = _find(v, key)
            if got is not None:
                return got
    return None


def choose(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(dataset, label) -> the chosen trial: highest final P@1 (rounded to 3 decimals), then the lower
    last training loss, then the smaller lr."""
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["dataset"], r["label"])
        score = (round(r["final_p_at_1"], 3), -float(r.get("train_loss", float("inf"))),
                 -float(r["params"].get("lr", 0.0)))
        if key not in best or score > best[key]["_score"]:
            best[key] = {**r, "_score": score}
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--experiment", default="tune")
    a = ap.parse_args(argv)
    rows = collect(Path(a.results_dir), a.experiment)
    bad = [r["path"] for r in rows if not r["validation"]]
    if bad:
        print(f"refusing {len(bad)} trial(s) not evaluated on a validation split, e.g. {bad[0]}", file=sys.stderr)
        rows = [r for r in rows if r["validation"]]
    if not rows:
        print(f"no finished trials under {a.results_dir}/raw/{a.experiment}: run `make tune` first", file=sys.stderr)
        return 1
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        counts[(r["dataset"], r["label"])] = counts.get((r["dataset"], r["label"]), 0) + 1
    for (ds, label), c in sorted(counts.items()):
        print(f"{ds:20s} {label:18s} trials {c}")
    if len(set(counts.values())) > 1:
        print("WARNING: the systems have different numbers of finished trials (a trial failed or is missing)")
    print()
    print(f"{'dataset':20s} {'label':18s} {'chosen':32s} {'val P@1':>8s}   all trials (params: val P@1 (last training loss))")
    for (ds, label), b in sorted(choose(rows).items()):
        trials = sorted((r for r in rows if (r["dataset"], r["label"]) == (ds, label)),
                        key=lambda r: tuple(r["params"].get(k, 0) for k in TUNED_KEYS))
        desc = ", ".join(f"{'/'.join(f'{v:g}' for v in r['params'].values())}: {r['final_p_at_1']:.3f}"
                         f" (loss {r['train_loss']:.3g})" for r in trials)
        chosen = ", ".join(f"{k} = {v:g}" for k, v in b["params"].items())
        print(f"{ds:20s} {label:18s} {chosen:32s} {b['final_p_at_1']:8.3f}   {desc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
