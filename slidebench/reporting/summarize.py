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

from ._harness import PARTIAL_SUFFIX, find_logs, read_log
from .speedup import level_times, speedup_table
from .tables import olympic_mean  # noqa: F401  (one definition for summaries and report)

CURVE_COLS = ["experiment", "run_id", "label", "system", "config", "seed", "n_threads", "batch_size", "protocol",
              "scale", "dataset", "step", "samples_seen", "epoch", "train_time_s", "eval_time_s", "wall_time_s",
              "train_loss", "p_at_1", "p_at_3", "p_at_5", "n_eval"]
EXTRA_CURVE_COLS = ["subset", "reason", "complete"]
RUN_COLS = ["experiment", "run_id", "label", "system", "config", "seed", "n_threads", "batch_size", "protocol",
            "scale", "dataset", "n_features", "n_labels", "n_train", "device", "status", "complete", "steps", "samples_seen", "epochs", "train_time_s",
            "time_to_target_s", "target_p_at_1", "final_p_at_1", "final_p_at_3", "final_p_at_5", "best_p_at_1",
            "host_cpu", "cores"]
EXTRA_RUN_COLS = ["init_time_s", "n_evals", "reused_from", "error", "params", "path"]
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
    desc = rs.get("describe") or {}
    man = rs.get("manifest") or {}
    ds = rs.get("dataset") or {}
    budget = rs.get("budget") or {}
    last = log.evals[-1] if log.evals else {}
    row = {
        "experiment": exp, "run_id": f"{exp}/{label}/{stem}", "label": label, "system": rs.get("system"),
        "config": rs.get("config"), "seed": rs.get("seed"), "n_threads": rs.get("n_threads"),
        "batch_size": rs.get("batch_size"), "protocol": rs.get("protocol"),
        "scale": ds.get("scale", (rs.get("identity") or {}).get("data", {}).get("scale")),
        "dataset": ds.get("name"), "n_features": ds.get("n_features"), "n_labels": ds.get("n_labels"),
        "n_train": ds.get("n_train"), "device": desc.get("device") if isinstance(desc, dict) else None,
        "status": log.status, "complete": log.complete,
        "steps": st.get("steps", last.get("step")), "samples_seen": st.get("samples_seen", last.get("samples_seen")),
        "epochs": st.get("epoch", last.get("epoch")), "train_time_s": st.get("train_time_s", last.get("train_time_s")),
        "time_to_target_s": st.get("time_to_target_s") if st else _ttt_from_evals(log.evals, budget),
        "target_p_at_1": budget.get("target_p_at_1"),
        "final_p_at_1": st.get("final_p_at_1"), "final_p_at_3": st.get("final_p_at_3"),
        "final_p_at_5": st.get("final_p_at_5"),
        "best_p_at_1": st.get("best_p_at_1") if st else _best(log.evals),
        "host_cpu": man.get("cpu_model"), "cores": man.get("cores_logical"),
        "init_time_s": rs.get("init_time_s"), "n_evals": len(log.evals), "reused_from": rs.get("reused_from"),
        "error": (st.get("error") or "").strip().splitlines()[-1] if st.get("error") else st.get("reason"),
        "params": json.dumps(rs.get("params"), sort_keys=True, default=str) if rs.get("params") else None,
        "path": str(p),
    }
    for k, v in (rs.get("sweep") or {}).items():
        row[f"param_{k}"] = v
    return row


def _best(evals) -> float | None:
    v = [e.get("p_at_1") for e in evals if e.get("p_at_1") is not None]
    return max(v) if v else None


def _ttt_from_evals(evals, budget) -> float | None:
    t = budget.get("target_p_at_1")
    if t is None:
        return None
    for e in evals:
        if e.get("p_at_1") is not None and e["p_at_1"] >= t:
            return e.get("train_time_s")
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
            c = {k: row[k] for k in CURVE_COLS[:11]}
            c.update({k: e.get(k) for k in CURVE_COLS[11:]})
            c.update(subset=e.get("subset"), reason=e.get("reason"), complete=row["complete"], **params)
            curves.append(c)
    for msg in problems:
        print(f"summarize: skipped unreadable log {msg}", flush=True)
    runs_df = pd.DataFrame(runs)
    param_cols = sorted({k for r in runs for k in r if k.startswith("param_")})
    runs_df = runs_df.reindex(columns=RUN_COLS + param_cols + EXTRA_RUN_COLS)
    curves_df = pd.DataFrame(curves).reindex(columns=CURVE_COLS + param_cols + EXTRA_CURVE_COLS)
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
    if write:
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
        summarize_experiment(e, results_dir)
        out = Path(results_dir) / "summary"
        written += [out / f"{e}_{k}.csv" for k in ("curves", "runs", "ttt", "levels", "speedup")]
    return written
