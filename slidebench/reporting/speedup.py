"""Speedup of SLIDE at every accuracy level (pure computation on a curves table; no files, no drawing).

For each context (data set, threads, batch size, protocol) the accuracy levels are fractions of the
best P@1 (evaluation subset) a system reached in that context: per system, the median over its seeds of
each run's best evaluation, and of those the highest (``anchor_p1``). Not the single highest evaluation
of any run: that is the extreme of a few noisy 1,000-point evaluations, and it moved every level by 2%
between a reference run and its rerun (amazon: 0.234 -> 0.239) while the median moved 0.5%
(0.215 -> 0.216). For each run and
level, the time to the level is **interpolated linearly in train time** between the last evaluation
below the level and the first evaluation at or over it (``method="interpolate"``, the default); with
``method="first"`` it is the train time of the first evaluation at or over the level (what a coarse
cadence quantises to). A run that never reaches a level gets no time: its last train time (its budget)
is kept so a ratio can be bounded, never silently dropped.

SLIDE's speedup over a baseline at a level is baseline time / SLIDE time, per seed (runs paired by
seed), then median, min and max over seeds. Where the baseline did not reach the level in some seed,
that seed's value is ``baseline budget / SLIDE time``, a lower bound, and the row is marked ``>``;
where SLIDE did not, ``baseline time / SLIDE budget``, an upper bound (``<``); where neither did, no
value (``neither``).

In a swept experiment (curves with ``param_*`` columns that vary within a label, e.g. a learning-rate
sweep) every sweep member is its own variant: its label becomes "SLIDE (lr 0.002)", so runs of different
learning rates are never paired as if they were seeds of one system.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .catalogue import ACCURACY_LEVELS, param_phrase

__all__ = ["time_at_level", "level_times", "variant_labels", "speedup_table", "anchor_p1", "CONTEXT", "METHODS"]

CONTEXT: tuple[str, ...] = ("dataset", "n_threads", "batch_size", "protocol")
METHODS = ("interpolate", "first")
LEVEL_COLS = ["run_id", *CONTEXT, "label", "system", "config", "device", "seed", "level_frac", "level_p1",
              "time_s", "reached", "budget_s", "method"]
SPEEDUP_COLS = [*CONTEXT, "slide", "slide_config", "baseline", "baseline_system", "baseline_config", "baseline_device",
                "level_frac", "level_p1", "n_seeds", "n_exact", "speedup_median", "speedup_min",
                "speedup_max", "bound", "slide_time_median_s", "baseline_time_median_s", "slide_reached",
                "baseline_reached", "method"]


def time_at_level(t: Sequence[float], p: Sequence[float], level: float, method: str = "interpolate") -> float:
    """Train time at which the curve (t, p) first reaches ``level``; NaN if it never does.

    ``t`` need not be sorted; evaluations with a missing time or P@1 are ignored.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t = np.asarray(t, dtype=float)
    p = np.asarray(p, dtype=float)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if len(t) == 0:
        return float("nan")
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    hit = np.flatnonzero(p >= level)
    if len(hit) == 0:
        return float("nan")
    i = int(hit[0])
    if method == "first" or i == 0:
        return float(t[i])
    t0, t1, p0, p1 = t[i - 1], t[i], p[i - 1], p[i]
    return float(t0 + (level - p0) / (p1 - p0) * (t1 - t0))     # p0 < level <= p1, so p1 > p0


def _ctx(df: pd.DataFrame) -> list[str]:
    return [c for c in CONTEXT if c in df.columns]


def anchor_p1(g: pd.DataFrame) -> float:
    """The P@1 the levels are fractions of, in one context's curves: per system (label), the median over
    its runs of each run's best evaluation; the highest of those. NaN when there is none."""
    per_run = g.groupby(["label", "run_id"], sort=True)["p_at_1"].max()
    per_sys = per_run.groupby(level="label").median()
    return float(per_sys.max()) if len(per_sys) else float("nan")


def variant_labels(df: pd.DataFrame) -> pd.Series:
    """Each row's label, with the ``param_*`` values that vary within its label appended (a sweep's
    members: "SLIDE (lr 0.002)"); the plain label where nothing varies."""
    pcols = [c for c in df.columns if c.startswith("param_")]
    out = df["label"].astype(str).copy()
    for lab, g in df.groupby("label", sort=False):
        vary = [c for c in pcols if g[c].dropna().astype(str).nunique() > 1]
        if not vary:
            continue
        out.loc[g.index] = [f"{lab} ({', '.join(param_phrase(c.removeprefix('param_'), r[c]) for c in vary if pd.notna(r[c]))})"
                            for _, r in g.iterrows()]
    return out


def level_times(curves: pd.DataFrame, levels: Iterable[float] = ACCURACY_LEVELS,
                method: str = "interpolate") -> pd.DataFrame:
    """One row per (run, level): the time the run needed to reach the level (NaN if never)."""
    if curves is None or len(curves) == 0:
        return pd.DataFrame(columns=LEVEL_COLS)
    df = curves.dropna(subset=["p_at_1", "train_time_s"])
    if "device" not in df.columns:
        df = df.assign(device="cpu")
    df = df.assign(label=variant_labels(df))
    ctx = _ctx(df)
    rows = []
    for key, g in (df.groupby(ctx, dropna=False, sort=True) if ctx else [((), df)]):
        key = key if isinstance(key, tuple) else (key,)
        best = anchor_p1(g)
        if not np.isfinite(best) or best <= 0:
            continue
        for rid, r in g.groupby("run_id", sort=True):
            first = r.iloc[0]
            t, p = r["train_time_s"].to_numpy(float), r["p_at_1"].to_numpy(float)
            for f in levels:
                lv = f * best
                tl = time_at_level(t, p, lv, method)
                rows.append({"run_id": rid, **dict(zip(ctx, key)), "label": first["label"],
                             "system": first["system"], "config": first.get("config"),
                             "device": first.get("device") if pd.notna(first.get("device")) else "cpu",
                             "seed": first["seed"], "level_frac": float(f), "level_p1": lv, "time_s": tl,
                             "reached": bool(np.isfinite(tl)), "budget_s": float(np.nanmax(t)),
                             "method": method})
    return pd.DataFrame(rows).reindex(columns=LEVEL_COLS)


def _pair_value(ts: float, bs: float, tb: float, bb: float) -> tuple[float, str]:
    """One seed's speedup (baseline over SLIDE) and its kind: exact, lower, upper or neither."""
    if np.isfinite(ts) and np.isfinite(tb):
        return (tb / ts if ts > 0 else float("nan")), "exact"
    if np.isfinite(ts):
        return (bb / ts if ts > 0 else float("nan")), "lower"
    if np.isfinite(tb):
        return (tb / bs if bs > 0 else float("nan")), "upper"
    return float("nan"), "neither"


def _bound(kinds: list[str]) -> str:
    k = set(kinds) - {"neither"}
    if not k:
        return "neither"
    if k == {"exact"}:
        return ""
    if "lower" in k and "upper" in k:
        return "mixed"
    return ">" if "lower" in k else "<"


def speedup_table(levels: pd.DataFrame) -> pd.DataFrame:
    """SLIDE's speedup over every baseline at every level, per context; see the module docstring."""
    if levels is None or len(levels) == 0:
        return pd.DataFrame(columns=SPEEDUP_COLS)
    ctx = _ctx(levels)
    rows = []
    for key, g in (levels.groupby(ctx, dropna=False, sort=True) if ctx else [((), levels)]):
        key = key if isinstance(key, tuple) else (key,)
        slide = g[g["system"] == "slide"]
        base = g[g["system"] != "slide"]
        for sl, s in slide.groupby("label", sort=True):
            for bl, b in base.groupby("label", sort=True):
                b0 = b.iloc[0]
                for f, sf in s.groupby("level_frac", sort=True):
                    bf = b[b["level_frac"] == f]
                    seeds = sorted(set(sf["seed"]) & set(bf["seed"]))
                    if not seeds:
                        continue
                    vals, kinds = [], []
                    for sd in seeds:
                        a = sf[sf["seed"] == sd].iloc[0]
                        c = bf[bf["seed"] == sd].iloc[0]
                        v, k = _pair_value(a["time_s"], a["budget_s"], c["time_s"], c["budget_s"])
                        kinds.append(k)
                        if np.isfinite(v):
                            vals.append(v)
                    st = sf[sf["seed"].isin(seeds)]
                    bt = bf[bf["seed"].isin(seeds)]
                    rows.append({
                        **dict(zip(ctx, key)), "slide": sl, "slide_config": s["config"].iloc[0], "baseline": bl, "baseline_system": b0["system"],
                        "baseline_config": b0["config"], "baseline_device": b0["device"],
                        "level_frac": float(f), "level_p1": float(sf["level_p1"].iloc[0]),
                        "n_seeds": len(seeds), "n_exact": kinds.count("exact"),
                        "speedup_median": float(np.median(vals)) if vals else float("nan"),
                        "speedup_min": float(np.min(vals)) if vals else float("nan"),
                        "speedup_max": float(np.max(vals)) if vals else float("nan"),
                        "bound": _bound(kinds),
                        "slide_time_median_s": _median(st["time_s"]),
                        "baseline_time_median_s": _median(bt["time_s"]),
                        "slide_reached": f"{int(st['reached'].sum())}/{len(seeds)}",
                        "baseline_reached": f"{int(bt['reached'].sum())}/{len(seeds)}",
                        "method": sf["method"].iloc[0]})
    return pd.DataFrame(rows).reindex(columns=SPEEDUP_COLS)


def _median(s: pd.Series) -> float:
    v = s.astype(float).to_numpy()
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else float("nan")


def bound_str(b) -> str:
    """The speedup table's ``bound`` as text: "", ">", "<", "mixed" or "neither" (a missing value, None
    or NaN as read back from CSV, is "")."""
    return "" if b is None or (isinstance(b, float) and np.isnan(b)) else str(b)


def speedup_text(row) -> str:
    """A ratio as the report prints it: "2.4x [2.1, 2.9]", "> 3.1x", "neither reached"."""
    b = bound_str(row.get("bound", "") if hasattr(row, "get") else "")
    m, lo, hi = (float(row.get(k, float("nan"))) for k in ("speedup_median", "speedup_min", "speedup_max"))
    if b == "neither" or not np.isfinite(m):
        return "neither reached"
    pre = {"": "", ">": "> ", "<": "< ", "mixed": "~ "}.get(b, "")
    spread = f" [{_r(lo)}, {_r(hi)}]" if int(row.get("n_seeds", 1) or 1) > 1 and hi > lo else ""
    return f"{pre}{_r(m)}x{spread}"


def _r(x: float) -> str:
    """A ratio rounded to what it means: about two significant digits."""
    if not np.isfinite(x):
        return "-"
    return f"{x:.2f}" if x < 1 else f"{x:.1f}" if x < 10 else f"{x:.0f}"
