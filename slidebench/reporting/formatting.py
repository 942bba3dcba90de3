"""Small formatting and table helpers shared by figures and report (no drawing, no files)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["footer_text", "hard_threshold_prob"]


def _uniq(df: pd.DataFrame | None, col: str) -> list:
    if df is None or col not in df.columns:
        return []
    vals = [v for v in df[col].dropna().unique().tolist()]
    try:
        return sorted(vals)
    except TypeError:
        return vals


def _fmt_list(vals: Sequence, none: str = "n/a") -> str:
    if not vals:
        return none
    out = []
    for v in vals:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(str(v))
    return ",".join(out)


def footer_text(df: pd.DataFrame | None, extra: str | None = None) -> str:
    """Machine, threads, protocol, scale, seeds (and data) of the rows in ``df`` as one line.

    Works on a runs CSV (host_cpu, cores, n_threads, protocol, scale, seed, dataset) and on a micro
    CSV (same column names where they apply). Columns that are absent read "n/a".
    """
    cpu = _fmt_list(_uniq(df, "host_cpu"))
    cores = _fmt_list(_uniq(df, "cores"))
    parts = [f"machine: {cpu} ({cores} cores)",
             f"threads: {_fmt_list(_uniq(df, 'n_threads'))}",
             f"protocol: {_fmt_list(_uniq(df, 'protocol'))}",
             f"scale: {_fmt_list(_uniq(df, 'scale'))}",
             f"seeds: {_fmt_list(_uniq(df, 'seed'))}"]
    data = _uniq(df, "dataset")
    if data:
        parts.append(f"data: {_fmt_list(data)}")
    dev = [d for d in _uniq(df, "device") if str(d).lower() != "cpu"]
    if dev:
        parts.append(f"devices: cpu,{_fmt_list(dev)}")
    if extra:
        parts.append(extra)
    return " | ".join(parts)


def hard_threshold_prob(p: np.ndarray | float, L: int, m: int) -> np.ndarray:
    """P(selected by hard threshold m of L tables) = P(Binom(L, p) >= m) = 1 - BinomCDF(m-1; L, p)."""
    from scipy.stats import binom
    if L < 1 or m < 1 or m > L:
        raise ValueError(f"need 1 <= m <= L, got m={m}, L={L}")
    return binom.sf(m - 1, L, np.asarray(p, dtype=float))


def _param_cols(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("param_")]


def _strcol(s: pd.Series) -> pd.Series:
    """Column as plain strings with missing values as "-" (pandas' str dtype keeps NaN missing)."""
    return pd.Series([_val(v) for v in s.tolist()], index=s.index, dtype=object)


def _strframe(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: _strcol(df[c]) for c in df.columns}, index=df.index)


def _varying(df: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    return [c for c in cols if c in df.columns and _strcol(df[c]).nunique() > 1]


def _val(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v.is_integer():
            return str(int(v))
        return f"{v:g}"
    return str(v)


