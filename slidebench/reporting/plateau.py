"""The headline's plateau check: did the run last long enough that the fastest system stopped learning?

Criterion (docs/figures.md, "The default run and its time budget"): per data set, the *fastest system*
is the label with the highest median (over seeds) peak P@1 on the evaluation subset. For each of its seeds, the rise over the last quarter of the train-time budget is
``(P@1 at the end - P@1 at 75% of the budget) / P@1 at the end`` (P@1 at 75% interpolated linearly in
train time between the two evaluations around it). The run *plateaued* when the median rise over seeds
lies within +-``PLATEAU_RISE`` (5%); above it the system is *still rising* (the budget is short),
below -5% it *declined* (it peaked earlier and lost accuracy: not a plateau either, and worth a
reader's attention). 5% and not less: on a 1,000-point subset one point is 0.1% of P@1
and at P@1 ~0.2 two evaluations of one model on the same points already differ by a few points.
A run also *declined* when it fell from an earlier peak: its peak came before the last quarter and its
final P@1 is more than ``PEAK_FALL`` (20%) below that peak (medians over seeds), whatever the last
quarter's slope. Added with the budget check (experiments/long.toml, 120 s): there SLIDE peaked at 43 s,
lost 30% while its training P@1 doubled, and was climbing back slowly in the last quarter, which the
last-quarter rule alone read as "still rising". 20% and not less: late in training the subset P@1 swings
10-20% between neighbouring evaluations, and the peak is the maximum of those swings. It changes no
state in the 40-s headline runs (their SLIDE curves end 0-1% below their peaks).

A decline has two readings: a learning rate too high for the budget, or overfitting (the model keeps
fitting its training points while the test P@1 falls; a longer run cannot raise its best). The check
tells them apart with *evidence*: curves of runs that also scored a fixed sample of training points
(``train_p_at_1``, ``[eval] train_subset_size``; experiments/overfit.toml) of the same data set, system,
configuration and learning rate. The decline is *overfitting* when, in that run, the test P@1 fell by
more than 5% of its peak after the peak while the training P@1 rose by more than 5% over the same
span. The budget is then long enough ("reached its best": plateaued, or peaked and then overfit);
still rising, or a decline without such evidence, is not.

Reads curves (a summary) only; returns a DataFrame the report prints and a test checks.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["PLATEAU_RISE", "PLATEAU_FRACTION", "PEAK_FALL", "plateau_table", "plateau_md", "overfit_evidence"]

PLATEAU_RISE = 0.05          # median relative rise over the last quarter below which the run has plateaued
PLATEAU_FRACTION = 0.75      # the last quarter starts at 75% of the budget
PEAK_FALL = 0.20             # final P@1 this far below an earlier peak (before the last quarter): declined


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


def _lr(c: pd.DataFrame) -> float | None:
    """The learning rate of one run's curve rows (the same on every row)."""
    from .summaries import run_lr
    return run_lr(c.iloc[0]) if len(c) else None


def overfit_evidence(evidence: pd.DataFrame | None, dataset: str, system: str, config: str,
                     lr: float | None) -> dict | None:
    """What the runs in ``evidence`` (curves with ``train_p_at_1``) of this data set, system, config and
    learning rate say about overfitting, or None without such a run. Per run: the test P@1 at its peak and
    at the end, the training P@1 at the test peak and at the end; ``overfit`` when the test fell by more
    than PLATEAU_RISE of its peak while the training P@1 rose by more than PLATEAU_RISE (median over runs
    of the decision's two changes)."""
    if evidence is None or not len(evidence) or "train_p_at_1" not in evidence.columns or lr is None:
        return None
    ev = evidence[(evidence["dataset"] == dataset) & (evidence["system"] == system)
                  & (evidence["config"] == config)]
    per, others = [], []             # runs at this lr; the same system at the evidence's other lrs
    for run_id, c in ev.groupby("run_id"):
        rlr = _lr(c)
        if rlr is None:
            continue
        if not np.isclose(rlr, lr, rtol=1e-6, atol=0):
            c = c.sort_values("train_time_s").dropna(subset=["p_at_1"])
            if len(c):
                i = int(np.argmax(c["p_at_1"].to_numpy(float)))
                others.append({"lr": rlr, "test_peak": float(c["p_at_1"].iloc[i]),
                               "t_peak": float(c["train_time_s"].iloc[i]), "at_end": i == len(c) - 1})
            continue
        c = c.sort_values("train_time_s").dropna(subset=["p_at_1", "train_p_at_1"])
        if len(c) < 2:
            continue
        i = int(np.argmax(c["p_at_1"].to_numpy(float)))
        test_pk, test_end = float(c["p_at_1"].iloc[i]), float(c["p_at_1"].iloc[-1])
        tr_pk, tr_end = float(c["train_p_at_1"].iloc[i]), float(c["train_p_at_1"].iloc[-1])
        per.append({"run_id": run_id, "t_peak": float(c["train_time_s"].iloc[i]), "test_peak": test_pk,
                    "test_end": test_end, "train_at_peak": tr_pk, "train_end": tr_end,
                    "test_fall": (test_end - test_pk) / test_pk if test_pk > 0 else float("nan"),
                    "train_rise": (tr_end - tr_pk) / tr_pk if tr_pk > 0 else float("nan")})
    if not per:
        return None
    d = pd.DataFrame(per)
    med = d.median(numeric_only=True)
    out = {k: float(med[k]) for k in ("t_peak", "test_peak", "test_end", "train_at_peak", "train_end",
                                      "test_fall", "train_rise")}
    out["n_runs"] = len(d)
    out["lr"] = float(lr)
    out["others"] = sorted(others, key=lambda o: -o["lr"])
    out["overfit"] = bool(out["test_fall"] < -PLATEAU_RISE and out["train_rise"] > PLATEAU_RISE)
    return out


def plateau_table(curves: pd.DataFrame | None, evidence: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per data set: the fastest label, its median final subset P@1, the median rise over the
    last quarter, its seeds' range, whether it plateaued (|median rise| < PLATEAU_RISE), its state
    (plateaued / still rising / declined / overfit) and whether the budget was long enough (``reached_best``:
    plateaued, or declined with ``evidence`` that the decline is overfitting; see the module docstring)."""
    cols = ["dataset", "label", "p_end", "p_peak", "rise_median", "rise_min", "rise_max", "n_seeds", "plateaued",
            "state", "reached_best", "evidence"]
    if curves is None or len(curves) == 0 or "p_at_1" not in curves:
        return pd.DataFrame(columns=cols)
    rows = []
    for ds, dcur in curves.groupby("dataset"):
        per_run = []
        for (label, run_id), c in dcur.groupby(["label", "run_id"]):
            end, mid, rise = _rise(c)
            pk = c.loc[c["p_at_1"].idxmax()] if c["p_at_1"].notna().any() else None
            peak = float(pk["p_at_1"]) if pk is not None else float("nan")
            early = (pk is not None and float(pk["train_time_s"])
                     < PLATEAU_FRACTION * float(c["train_time_s"].max()))
            per_run.append({"label": label, "run_id": run_id, "end": end, "rise": rise, "peak": peak,
                            "fall": (peak - end) / peak if peak > 0 else float("nan"), "early": early})
        pr = pd.DataFrame(per_run)
        if not len(pr):
            continue
        best = pr.groupby("label")["peak"].median().sort_values(ascending=False)
        label = best.index[0]
        fastest = pr[pr["label"] == label]
        mine = fastest["rise"].dropna()
        med = float(mine.median()) if len(mine) else float("nan")
        flat = bool(np.isfinite(med) and abs(med) < PLATEAU_RISE)
        state = ("plateaued" if flat else "still rising" if np.isfinite(med) and med >= PLATEAU_RISE
                 else "declined" if np.isfinite(med) else "unknown")
        fall = float(fastest["fall"].median()) if fastest["fall"].notna().any() else float("nan")
        if np.isfinite(fall) and fall > PEAK_FALL and bool(fastest["early"].mean() > 0.5):
            state = "declined"                   # fell from an earlier peak (module docstring)
            flat = False
        ev = None
        if state == "declined":
            fc = dcur[dcur["label"] == label]
            first = fc.iloc[0]
            ev = overfit_evidence(evidence, ds, str(first.get("system")), str(first.get("config")), _lr(fc))
            if ev is not None and ev["overfit"]:
                state = "overfit"
        rows.append({"dataset": ds, "label": label, "p_end": float(fastest["end"].median()),
                     "p_peak": float(best.iloc[0]), "rise_median": med,
                     "rise_min": float(mine.min()) if len(mine) else float("nan"),
                     "rise_max": float(mine.max()) if len(mine) else float("nan"),
                     "n_seeds": int(len(mine)), "plateaued": flat, "state": state,
                     "reached_best": state in ("plateaued", "overfit"), "evidence": ev})
    return pd.DataFrame(rows, columns=cols)


def plateau_md(curves: pd.DataFrame | None, evidence: pd.DataFrame | None = None,
               evidence_from: str = "the overfit experiment") -> str:
    """Markdown: the plateau check of one experiment's curves (empty string without curves); ``evidence``:
    curves with training-point P@1 (the overfit experiment's, or the experiment's own) that can show a
    decline is overfitting; ``evidence_from`` names them in the text."""
    t = plateau_table(curves, evidence)
    if not len(t):
        return ""
    lines = [f"Plateau check (is the budget long enough? The fastest system, the one with the highest peak P@1, "
             f"has reached its best when it changes by less than {PLATEAU_RISE:.0%} of its final value over the "
             "last quarter of the budget (median over seeds), or when it declined (over the last quarter, or "
             f"by more than {PEAK_FALL:.0%} from a peak before it) and a run that also scored "
             "training points shows the decline is overfitting: the training P@1 kept rising):", "",
             "| data set | fastest system | peak / final subset P@1 (median) | change over the last quarter, "
             "median [min, max] | reached its best |", "|---|---|---|---|---|"]
    verdict = {"plateaued": "yes: plateaued", "still rising": "**no**: still rising, the budget is short",
               "declined": "**no**: it peaked earlier and declined (no run with training-point P@1 at its "
                           "learning rate tells whether it overfit)",
               "overfit": "yes: it peaked inside the budget, then overfit", "unknown": "unknown"}
    # a decline that a run at the same lr shows is not overfitting (its training P@1 did not keep rising)
    not_overfit = ("**no**: it peaked earlier and declined, and its training-point P@1 at the same learning "
                   "rate did not keep rising (not overfitting: an lr too high for the budget, or a dip a longer "
                   "run may climb out of)")
    notes = []
    for r in t.itertuples():
        ev = r.evidence
        said = not_overfit if r.state == "declined" and isinstance(ev, dict) else verdict[r.state]
        lines.append(f"| {r.dataset} | {r.label} | {r.p_peak:.3f} / {r.p_end:.3f} | {r.rise_median:+.1%} "
                     f"[{r.rise_min:+.1%}, {r.rise_max:+.1%}] | {said} |")
        if isinstance(ev, dict):
            notes.append(f"{r.dataset}: in {evidence_from} ({r.label}'s system and configuration at its lr "
                         f"{ev['lr']:g}, {ev['n_runs']} run{'s' if ev['n_runs'] > 1 else ''}), the test P@1 peaked "
                         f"at {ev['test_peak']:.3f} at "
                         f"{ev['t_peak']:.0f} s and ended at {ev['test_end']:.3f} ({ev['test_fall']:+.0%}), while "
                         f"the P@1 on training points went from {ev['train_at_peak']:.3f} to {ev['train_end']:.3f} "
                         f"({ev['train_rise']:+.0%}): "
                         + ("overfitting." if ev["overfit"] else "not the signature of overfitting.")
                         + "".join(f" At lr {o['lr']:g} its test P@1 " + (f"was still rising at {o['t_peak']:.0f} s "
                                   f"({o['test_peak']:.3f})." if o["at_end"] else
                                   f"peaked at {o['test_peak']:.3f} at {o['t_peak']:.0f} s.")
                                   for o in ev.get("others", [])))
    if notes:
        lines += [""] + notes
    return "\n".join(lines)
