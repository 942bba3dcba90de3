"""The headline's plateau check: did the run last long enough that the fastest system stopped learning?

Criterion (docs/figures.md, "The default run and its time budget"): per data set, the *fastest system*
is the label with the highest median (over seeds) peak P@1 on the evaluation subset. For each of its seeds, the rise over the last quarter of the train-time budget is
``(P@1 at the end - P@1 at 75% of the budget) / P@1 at the end`` (P@1 at 75% interpolated linearly in
train time between the two evaluations around it). The run *plateaued* when the median rise over seeds
lies within +-``PLATEAU_RISE`` (5%); above it the system is *still rising* (the budget is short),
below -5% it *declined* (it peaked earlier and lost accuracy: not a plateau either, and worth a
reader's attention). 5% and not less: on a 1,000-point subset one point is 0.1% of P@1
and at P@1 ~0.2 two evaluations of one model on the same points already differ by a few points.

Reads curves (a summary) only; returns a DataFrame the report prints and a test checks.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["PLATEAU_RISE", "PLATEAU_FRACTION", "plateau_table", "plateau_md"]

PLATEAU_RISE = 0.05          # median relative rise over the last quarter below which the run has plateaued
PLATEAU_FRACTION = 0.75      # the last quarter starts at 75% of the budget


def _rise(curve: pd.DataFrame) -> tuple[float, float, float]:
    """(P@1 at the end, P@1 at 75% of the run's train time, relative rise) for one run's curve."""
    c = curve.sort_values("train_time_s")
    t = c["train_time_s"].to_numpy(float)
    p = c["p_at_1"].to_numpy(float)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if len(t) < 2 or t[-1] <= 0:
        return float("nan"), float("nan"), float("nan")
    end = float(p[-1])
    mid = float(np.interp(PLATEAU_FRACTION * t[-1], t, p))
    rise = (end - mid) / end if end > 0 else float("nan")
    return end, mid, rise


def plateau_table(curves: pd.DataFrame | None) -> pd.DataFrame:
    """One row per data set: the fastest label, its median final subset P@1, the median rise over the
    last quarter, its seeds' range and whether it plateaued (median rise < PLATEAU_RISE)."""
    cols = ["dataset", "label", "p_end", "p_peak", "rise_median", "rise_min", "rise_max", "n_seeds", "plateaued",
            "state"]
    if curves is None or len(curves) == 0 or "p_at_1" not in curves:
        return pd.DataFrame(columns=cols)
    rows = []
    for ds, dcur in curves.groupby("dataset"):
        per_run = []
        for (label, run_id), c in dcur.groupby(["label", "run_id"]):
            end, mid, rise = _rise(c)
            per_run.append({"label": label, "run_id": run_id, "end": end, "rise": rise,
                            "peak": float(c["p_at_1"].max())})
        pr = pd.DataFrame(per_run)
        if not len(pr):
            continue
        best = pr.groupby("label")["peak"].median().sort_values(ascending=False)
        label = best.index[0]
        mine = pr[pr["label"] == label]["rise"].dropna()
        med = float(mine.median()) if len(mine) else float("nan")
        flat = bool(np.isfinite(med) and abs(med) < PLATEAU_RISE)
        state = ("plateaued" if flat else "still rising" if np.isfinite(med) and med >= PLATEAU_RISE
                 else "declined" if np.isfinite(med) else "unknown")
        rows.append({"dataset": ds, "label": label, "p_end": float(pr[pr["label"] == label]["end"].median()),
                     "p_peak": float(best.iloc[0]), "rise_median": med,
                     "rise_min": float(mine.min()) if len(mine) else float("nan"),
                     "rise_max": float(mine.max()) if len(mine) else float("nan"),
                     "n_seeds": int(len(mine)), "plateaued": flat, "state": state})
    return pd.DataFrame(rows, columns=cols)


def plateau_md(curves: pd.DataFrame | None) -> str:
    """Markdown: the plateau check of one experiment's curves (empty string without curves)."""
    t = plateau_table(curves)
    if not len(t):
        return ""
    lines = [f"Plateau check (the fastest system, the one with the highest peak P@1, changes by less than "
             f"{PLATEAU_RISE:.0%} of its final value over the last quarter of the budget, median over seeds):", "",
             "| data set | fastest system | peak / final subset P@1 (median) | change over the last quarter, "
             "median [min, max] | plateaued |", "|---|---|---|---|---|"]
    verdict = {"plateaued": "yes", "still rising": "**no**: still rising, the budget is short",
               "declined": "**no**: it peaked earlier and declined", "unknown": "unknown"}
    for r in t.itertuples():
        lines.append(f"| {r.dataset} | {r.label} | {r.p_peak:.3f} / {r.p_end:.3f} | {r.rise_median:+.1%} "
                     f"[{r.rise_min:+.1%}, {r.rise_max:+.1%}] | {verdict[r.state]} |")
    return "\n".join(lines)
