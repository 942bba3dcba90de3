"""The report's tables from summaries: groups of seeds, time-to-target ratios, Markdown rendering."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .formatting import _param_cols, _strcol, _val
from .speedup import variant_labels

__all__ = ["olympic_mean", "group_table", "speedups", "md_table", "fmt"]


def olympic_mean(values) -> float:
    """Mean after dropping the fastest and the slowest value when there are at least 3; NaN if empty."""
    v = sorted(float(x) for x in values if x is not None and np.isfinite(x))
    if not v:
        return float("nan")
    if len(v) >= 3:
        v = v[1:-1]
    return float(np.mean(v))


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(xf):
        return "-"
    if abs(xf) >= 100:
        return f"{xf:.0f}"
    if abs(xf) >= 10:
        return f"{xf:.1f}"
    return f"{xf:.{nd}f}"


def _group_cols(runs: pd.DataFrame) -> list[str]:
    cols = [c for c in ("dataset", "label", "n_threads", "batch_size", "protocol") if c in runs.columns]
    return cols + [c for c in _param_cols(runs) if _strcol(runs[c]).nunique() > 1]


def group_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group of seeds (dataset, label, threads, batch, protocol, varying params)."""
    if runs is None or len(runs) == 0:
        return pd.DataFrame()
    runs = runs.copy()
    for c in ("time_to_target_s", "final_p_at_1", "final_p_at_3", "final_p_at_5", "samples_seen",
              "train_time_s"):
        if c not in runs.columns:
            runs[c] = np.nan
    with np.errstate(all="ignore"):
        runs["_tp"] = runs["samples_seen"].astype(float) / runs["train_time_s"].astype(float)
    gcols = _group_cols(runs)
    rows = []
    for key, g in runs.groupby(gcols, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ttt = g["time_to_target_s"].astype(float)
        reached = ttt[np.isfinite(ttt)]
        row = dict(zip(gcols, key))
        row.update({
            "system": g["system"].iloc[0] if "system" in g else "",
            "config": g["config"].iloc[0] if "config" in g else "",
            "device": g["device"].iloc[0] if "device" in g else "cpu",
            "n_seeds": len(g),
            "n_complete": int(g["complete"].astype(bool).sum()) if "complete" in g else len(g),
            "statuses": ",".join(sorted(set(str(s) for s in g["status"]))) if "status" in g else "",
            "n_reached": len(reached),
            "ttt_olympic_s": olympic_mean(reached) if len(reached) else float("nan"),
            "ttt_min_s": float(reached.min()) if len(reached) else float("nan"),
            "ttt_max_s": float(reached.max()) if len(reached) else float("nan"),
            "p1_mean": g["final_p_at_1"].astype(float).mean(),
            "p1_std": g["final_p_at_1"].astype(float).std(ddof=1) if len(g) > 1 else float("nan"),
            "p3_mean": g["final_p_at_3"].astype(float).mean(),
            "p5_mean": g["final_p_at_5"].astype(float).mean(),
            "throughput": g["_tp"].median(),
            "train_time_s": g["train_time_s"].astype(float).median(),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def speedups(tab: pd.DataFrame) -> pd.DataFrame:
    """Ratios of each baseline's time to target over SLIDE's in the same context (dataset, threads,
    batch, protocol), and, where the target was not reached, the throughput ratio beside it."""
    if tab is None or len(tab) == 0 or "system" not in tab.columns:
        return pd.DataFrame()
    ctx = [c for c in ("dataset", "n_threads", "batch_size", "protocol") if c in tab.columns]
    rows = []
    for key, g in tab.groupby(ctx, dropna=False, sort=True) if ctx else [((), tab)]:
        key = key if isinstance(key, tuple) else (key,)
        slide = g[g["system"] == "slide"]
        base = g[g["system"] != "slide"]
        # runs that never trained (skipped: no GPU; errors before the first step) have nothing to compare
        base = base[base["train_time_s"].astype(float).fillna(0) > 0]
        names = variant_labels(g)          # a sweep's members by their swept params ("SLIDE (lr 0.002)")
        for _, s in slide.iterrows():
            for _, b in base.iterrows():
                r = dict(zip(ctx, key))
                r["slide"] = names[s.name]
                r["baseline"] = names[b.name]
                r["ttt_ratio"] = (b["ttt_olympic_s"] / s["ttt_olympic_s"]
                                  if np.isfinite(b["ttt_olympic_s"]) and np.isfinite(s["ttt_olympic_s"])
                                  and s["ttt_olympic_s"] > 0 else float("nan"))
                # the baseline never reached the target but SLIDE did: a lower bound (its budget / SLIDE's ttt)
                r["ttt_lower_bound"] = (b["train_time_s"] / s["ttt_olympic_s"]
                                        if not np.isfinite(b["ttt_olympic_s"]) and np.isfinite(s["ttt_olympic_s"])
                                        and s["ttt_olympic_s"] > 0 and b.get("n_reached", 0) == 0
                                        else float("nan"))
                r["ttt_ratio_txt"] = (_fmt(r["ttt_ratio"], 2) if np.isfinite(r["ttt_ratio"]) else
                                      f"> {_fmt(r['ttt_lower_bound'], 2)}" if np.isfinite(r["ttt_lower_bound"])
                                      else "neither reached" if not np.isfinite(s["ttt_olympic_s"]) else "-")
                r["throughput_ratio"] = (s["throughput"] / b["throughput"]
                                         if np.isfinite(b["throughput"]) and b["throughput"] > 0 else float("nan"))
                r["p1_diff"] = s["p1_mean"] - b["p1_mean"]
                rows.append(r)
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame, cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for _, h in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    lines = [head, sep]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_cell(r, c) for c, _ in cols) + " |")
    return "\n".join(lines)


def _cell(r: pd.Series, c: str) -> str:
    v = r.get(c)
    if c == "ttt":
        if r.get("n_reached", 0) == 0:
            return f"not reached (0/{int(r['n_seeds'])})"
        n = f"({int(r['n_reached'])}/{int(r['n_seeds'])})"
        if int(r["n_reached"]) == 1:                  # one value: no spread to show
            return f"{_secs(r['ttt_olympic_s'])} {n}"
        return f"{_secs(r['ttt_olympic_s'])} [{_secs(r['ttt_min_s'])}, {_secs(r['ttt_max_s'])}] {n}"
    if c == "p1":
        sd = r.get("p1_std")
        return f"{_fmt(r['p1_mean'])}" + (f" ± {_fmt(sd)}" if sd is not None and np.isfinite(sd) else "")
    if c.startswith("param_") or c in ("n_threads", "batch_size", "n_seeds"):
        return _val(v)
    if isinstance(v, float):
        return _fmt(v)
    return "-" if v is None else str(v).replace("|", "/")



def _secs(x) -> str:
    """Seconds to three significant digits (5.00, 10.0, 120)."""
    x = float(x)
    return "-" if not np.isfinite(x) else f"{x:#.3g}" if x < 100 else f"{x:.0f}"


fmt = _fmt
md_table = _md_table
