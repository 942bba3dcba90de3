"""Tidy CSV summaries of run logs (pandas): results/summary/<exp>_curves.csv, _runs.csv, _ttt.csv.

* ``<exp>_curves.csv``: one row per eval record.
* ``<exp>_runs.csv``: one row per run (a final log, or a ``.partial`` log when no final exists: an
  errored or killed run, marked ``complete = False``; status ``incomplete`` when it has no run_stop).
* ``<exp>_speedup.csv``: SLIDE's speedup over every baseline at every accuracy level (fractions of the
  best P@1 any system reached), median/min/max over seeds, bounds marked (``speedup.py``);
  ``<exp>_levels.csv``: the time each run needed to reach each level (interpolated between evaluations).
* ``<exp>_ttt.csv``: per (dataset, label, n_threads, batch_size, param_*) group over seeds: time-to-target
  olympic mean (drop the fastest and the slowest when at least 3 runs reached the target; over the
  runs that reached it), min, max, and the final full-test P@1 mean and std over complete runs.

Experiment and label are taken from the log's location (results/raw/<exp>/<label>/...), so a log
reused from another experiment is attributed to the experiment it was copied into.
"""
from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._harness import EVAL_FIELDS, PARTIAL_SUFFIX, START_FIELDS, STOP_FIELDS, find_logs, read_log, select
from .speedup import level_times, speedup_table
from .tables import olympic_mean  # noqa: F401  (one definition for summaries and report)

# The run-log fields read here, by record type. The records are defined once, in harness/runlog.py; every
# field named below goes through runlog.select, which refuses (at import) a field the records do not have.
#: run_start: the run's identity, copied into both CSVs after experiment, run_id and label
START_ID = select(START_FIELDS, "system", "config", "seed", "n_threads", "batch_size", "protocol")
#: run_start: copied into the runs CSV (after the swept params)
INIT_TIME, REUSED_FROM = select(START_FIELDS, "init_time_s", "reused_from")
#: run_start: nested records and the run's params, read by name in ``_run_row``
DATASET, IDENTITY, DESCRIBE, MANIFEST, BUDGET, PARAMS, SWEEP = select(
    START_FIELDS, "dataset", "identity", "describe", "manifest", "budget", "params", "sweep")
#: eval: copied into the curves CSV, and the two copied after the swept params
EVAL_CURVE = select(EVAL_FIELDS, "step", "samples_seen", "epoch", "train_time_s", "eval_time_s", "wall_time_s",
                    "train_loss", "p_at_1", "p_at_3", "p_at_5", "n_eval")
EVAL_EXTRA = select(EVAL_FIELDS, "subset", "reason")
#: eval: the training-subset evaluation (optional), flattened into the curves CSV as TRAIN_P1
(TRAIN_EVAL,) = select(EVAL_FIELDS, "train_eval")
TRAIN_P1 = "train_p_at_1"
#: run_stop: copied into the runs CSV
STOP_FINAL = select(STOP_FIELDS, "final_p_at_1", "final_p_at_3", "final_p_at_5")
#: runs-CSV column: (its run_stop field, the last evaluation's field for a run that has no run_stop)
PROGRESS = dict(zip(("steps", "samples_seen", "epochs", "train_time_s"),
                    zip(select(STOP_FIELDS, "steps", "samples_seen", "epoch", "train_time_s"),
                        select(EVAL_FIELDS, "step", "samples_seen", "epoch", "train_time_s"))))
#: run_stop: read by name in ``_run_row`` (time to target and best P@1 fall back to the evaluations)
TO_TARGET, BEST_P1, ERROR, REASON = select(STOP_FIELDS, "time_to_target_s", "best_p_at_1", "error", "reason")
#: eval: what the fallbacks read
EVAL_TIME, EVAL_P1 = select(EVAL_FIELDS, "train_time_s", "p_at_1")

#: Columns of both CSVs: where the run is, who ran it, on which data set.
ID_COLS = ["experiment", "run_id", "label", *START_ID, "scale", "dataset"]
CURVE_COLS = ID_COLS + list(EVAL_CURVE)
EXTRA_CURVE_COLS = [*EVAL_EXTRA, "complete"]
RUN_COLS = ID_COLS + ["n_features", "n_labels", "n_train", "device", "status", "complete", *PROGRESS,
                      "time_to_target_s", "target_p_at_1", *STOP_FINAL, "best_p_at_1", "host_cpu", "cores"]
EXTRA_RUN_COLS = [INIT_TIME, "n_evals", REUSED_FROM, "error", "params", "path"]
TTT_COLS = ["dataset", "label", "n_threads", "batch_size", "n_seeds", "n_reached", "ttt_olympic_mean_s", "ttt_min_s",
            "ttt_max_s", "final_p_at_1_mean", "final_p_at_1_std"]


def _logs_for(results_dir: Path, experiment: str) -> list:
    """Final logs, plus partial logs of runs that have no final log."""
    paths = find_logs(results_dir, experiment)
    finals = {p for p in paths if not p.name.endswith(PARTIAL_SUFFIX)}
    chosen = []
    for p in paths:
        if p.name.endswith(PARTIAL_SUFFIX):
            f = p.with_name(p.name[: -len(PARTIAL_SUFFIX)])
            if f in finals:
                continue
        chosen.append(p)
    return chosen


def _run_row(exp: str, p: Path, log) -> dict[str, Any]:
    rs, st = log.run_start or {}, log.run_stop or {}
    label = p.parent.name
    stem = p.name.split(".jsonl")[0]
    desc = rs.get(DESCRIBE) or {}
    man = rs.get(MANIFEST) or {}
    ds = rs.get(DATASET) or {}
    budget = rs.get(BUDGET) or {}
    last = log.evals[-1] if log.evals else {}
    row = {
        "experiment": exp, "run_id": f"{exp}/{label}/{stem}", "label": label, **{k: rs.get(k) for k in START_ID},
        "scale": ds.get("scale", (rs.get(IDENTITY) or {}).get("data", {}).get("scale")),
        "dataset": ds.get("name"), "n_features": ds.get("n_features"), "n_labels": ds.get("n_labels"),
        "n_train": ds.get("n_train"), "device": desc.get("device") if isinstance(desc, dict) else None,
        "status": log.status, "complete": log.complete,
        **{col: st.get(stop, last.get(ev)) for col, (stop, ev) in PROGRESS.items()},
        "time_to_target_s": st.get(TO_TARGET) if st else _ttt_from_evals(log.evals, budget),
        "target_p_at_1": budget.get("target_p_at_1"),
        **{k: st.get(k) for k in STOP_FINAL},
        "best_p_at_1": st.get(BEST_P1) if st else _best(log.evals),
        "host_cpu": man.get("cpu_model"), "cores": man.get("cores_logical"),
        INIT_TIME: rs.get(INIT_TIME), "n_evals": len(log.evals), REUSED_FROM: rs.get(REUSED_FROM),
        "error": (st.get(ERROR) or "").strip().splitlines()[-1] if st.get(ERROR) else st.get(REASON),
        "params": json.dumps(rs.get(PARAMS), sort_keys=True, default=str) if rs.get(PARAMS) else None,
        "path": str(p),
    }
    for k, v in (rs.get(SWEEP) or {}).items():
        row[f"param_{k}"] = v
    return row


def _fill_swept(runs: list[dict], curves: list[dict]) -> None:
    """A run without a swept key (run before the experiment file swept it, then reused by --resume) gets
    its value from its own params, so that tables and figures name it like its siblings (the long_sampled
    run at lr 3e-2 came from the file's unswept version)."""
    swept = {k.removeprefix("param_") for r in runs for k in r if k.startswith("param_")}
    filled: dict[str, dict] = {}
    for r in runs:
        params = json.loads(r["params"]) if r.get("params") else {}
        add = {f"param_{k}": params[k] for k in swept if f"param_{k}" not in r and k in params}
        if add:
            r.update(add)
            filled[r["run_id"]] = add
    for c in curves:
        c.update(filled.get(c.get("run_id"), {}))


def _best(evals) -> float | None:
    v = [e.get(EVAL_P1) for e in evals if e.get(EVAL_P1) is not None]
    return max(v) if v else None


def _ttt_from_evals(evals, budget) -> float | None:
    t = budget.get("target_p_at_1")
    if t is None:
        return None
    for e in evals:
        if e.get(EVAL_P1) is not None and e[EVAL_P1] >= t:
            return e.get(EVAL_TIME)
    return None


def summarize_experiment(experiment: str, results_dir: str | Path = "results", *, write: bool = True
                         ) -> dict[str, pd.DataFrame]:
    """Build (and write) the tidy tables of one experiment; returns {"curves", "runs", "ttt", "levels",
    "speedup"}."""
    results_dir = Path(results_dir)
    runs, curves = [], []
    problems = []
    manifest = None
    for p in _logs_for(results_dir, experiment):
        try:
            log = read_log(p)
        except (OSError, ValueError) as e:
            problems.append(f"{p}: {e}")
            continue
        if manifest is None and log.run_start and log.run_start.get("manifest"):
            manifest = log.run_start["manifest"]
        row = _run_row(experiment, p, log)
        runs.append(row)
        params = {k: v for k, v in row.items() if k.startswith("param_")}
        for e in log.evals:
            c = {k: row[k] for k in ID_COLS}
            c.update({k: e.get(k) for k in EVAL_CURVE + EVAL_EXTRA}, complete=row["complete"], **params)
            if e.get(TRAIN_EVAL):                       # [eval] train_subset_size: P@1 on training rows
                c[TRAIN_P1] = e[TRAIN_EVAL].get("p_at_1")
            curves.append(c)
    for msg in problems:
        print(f"summarize: skipped unreadable log {msg}", flush=True)
    _fill_swept(runs, curves)
    runs_df = pd.DataFrame(runs)
    param_cols = sorted({k for r in runs for k in r if k.startswith("param_")})
    runs_df = runs_df.reindex(columns=RUN_COLS + param_cols + EXTRA_RUN_COLS)
    train_cols = [TRAIN_P1] if any(TRAIN_P1 in c for c in curves) else []   # only where a run asked for it
    curves_df = pd.DataFrame(curves).reindex(columns=CURVE_COLS + param_cols + EXTRA_CURVE_COLS + train_cols)
    if not runs_df.empty:
        runs_df = runs_df.sort_values(["dataset", "label", "n_threads", "batch_size", "seed", "run_id"],
                                      kind="stable")
        curves_df = curves_df.sort_values(["label", "n_threads", "batch_size", "seed", "run_id", "step"],
                                          kind="stable")
    ttt_df = time_to_target_table(runs_df, param_cols)
    cur = curves_df.assign(device=curves_df["run_id"].map(runs_df.drop_duplicates("run_id").set_index("run_id")
                                                          ["device"])) if len(curves_df) else curves_df
    levels_df = level_times(cur)
    speedup_df = speedup_table(levels_df)
    if write and not runs_df.empty:     # a micro experiment has no run logs: no header-only CSVs for it
        out = results_dir / "summary"
        out.mkdir(parents=True, exist_ok=True)
        curves_df.to_csv(out / f"{experiment}_curves.csv", index=False)
        runs_df.to_csv(out / f"{experiment}_runs.csv", index=False)
        ttt_df.to_csv(out / f"{experiment}_ttt.csv", index=False)
        levels_df.to_csv(out / f"{experiment}_levels.csv", index=False)
        speedup_df.to_csv(out / f"{experiment}_speedup.csv", index=False)
        if manifest is not None:   # kept beside the CSVs so the report has it where raw logs are not committed
            (out / f"{experiment}_manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True,
                                                                        default=str) + "\n")
    return {"curves": curves_df, "runs": runs_df, "ttt": ttt_df, "levels": levels_df, "speedup": speedup_df}


def time_to_target_table(runs_df: pd.DataFrame, param_cols: list[str]) -> pd.DataFrame:
    cols = TTT_COLS[:4] + param_cols + TTT_COLS[4:]
    if runs_df.empty:
        return pd.DataFrame(columns=cols)
    keys = ["dataset", "label", "n_threads", "batch_size"] + param_cols   # data sets never pooled
    rows = []
    df = runs_df[runs_df["complete"] == True]  # noqa: E712 - incomplete runs do not count
    if df.empty:
        return pd.DataFrame(columns=cols)
    for key, g in df.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ttt = [float(x) for x in g["time_to_target_s"] if pd.notna(x)]
        fin = np.array([float(x) for x in g["final_p_at_1"] if pd.notna(x)])
        rows.append({**dict(zip(keys, key)), "n_seeds": int(g["seed"].nunique()), "n_reached": len(ttt),
                     "ttt_olympic_mean_s": olympic_mean(ttt), "ttt_min_s": min(ttt) if ttt else np.nan,
                     "ttt_max_s": max(ttt) if ttt else np.nan,
                     "final_p_at_1_mean": float(fin.mean()) if fin.size else np.nan,
                     "final_p_at_1_std": float(fin.std(ddof=1)) if fin.size > 1 else np.nan})
    return pd.DataFrame(rows).reindex(columns=cols)


def experiments_with_logs(results_dir: str | Path = "results") -> list[str]:
    raw = Path(results_dir) / "raw"
    return sorted(p.name for p in raw.iterdir() if p.is_dir()) if raw.is_dir() else []


def summarize(experiments: list[str] | None = None, results_dir: str | Path = "results") -> list[Path]:
    """Summarize the given experiments (default: every experiment with logs); returns the CSV paths."""
    exps = experiments or experiments_with_logs(results_dir)
    written = []
    for e in exps:
        if summarize_experiment(e, results_dir)["runs"].empty:
            continue                            # nothing written for it (a micro experiment: no run logs)
        out = Path(results_dir) / "summary"
        written += [out / f"{e}_{k}.csv" for k in ("curves", "runs", "ttt", "levels", "speedup")]
    return written
