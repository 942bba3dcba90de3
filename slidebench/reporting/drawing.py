"""Drawing helpers shared by the figure modules: curve groups and their styles, seed bands, panels,
axes in plain numbers, and writing a figure with its footer and caption."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .catalogue import SYSTEM_NAMES, VARIANT_PARAMS, param_phrase
from .formatting import _param_cols, _strcol, _strframe, _val, _varying
from .style import Style, describe, style_for, variant_style
from .summaries import Summary, run_params

def seed_band(runs: Iterable[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> dict[str, np.ndarray]:
    """Median, min and max over runs of y(x) interpolated on ``grid``.

    ``runs`` is an iterable of (x, y) arrays, one per seed (x increasing). A run contributes to a
    grid point only inside its own x range (no extrapolation). Returns arrays over ``grid`` with NaN
    where no run covers the point, plus ``n`` (how many runs cover each point).
    """
    grid = np.asarray(grid, dtype=float)
    rows = []
    for x, y in runs:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x) == 0:
            continue
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        yi = np.interp(grid, x, y)
        yi[(grid < x[0]) | (grid > x[-1])] = np.nan
        rows.append(yi)
    if not rows:
        nan = np.full(grid.shape, np.nan)
        return {"median": nan, "min": nan, "max": nan, "n": np.zeros(grid.shape, dtype=int)}
    m = np.vstack(rows)
    n = np.sum(np.isfinite(m), axis=0)
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(m, axis=0)
            lo = np.nanmin(m, axis=0)
            hi = np.nanmax(m, axis=0)
    return {"median": med, "min": lo, "max": hi, "n": n}


@dataclass
class Group:
    key: tuple
    display: str
    style: Style
    df: pd.DataFrame


def _differs(params: dict, base: dict) -> list[str]:
    keys = [k for k in VARIANT_PARAMS if k in params or k in base]
    keys += sorted(k for k in set(params) | set(base) if k not in VARIANT_PARAMS and k not in ("lr", "device"))
    out = []
    for k in keys:
        v, b = params.get(k), base.get(k)
        if v is not None and str(v) != str(b):
            if k == "sampler" and str(v) == "random":
                return [param_phrase(k, v)]          # the hash settings of a random active set mean nothing
            out.append(param_phrase(k, v))
    return out


def variant_display(row: dict, dims: Sequence[str], base_params: dict | None) -> str:
    """A legend text a stranger reads: the label, or for a variant of a system what makes it one
    ("SLIDE: SimHash", "SLIDE: K=8", "SLIDE: random active set (no LSH)")."""
    label = str(row.get("label"))
    parts: list[str] = []
    for c in dims:
        v = row.get(c)
        if c.startswith("param_"):
            if _val(v) != "-":
                parts.append(param_phrase(c.removeprefix("param_"), v))
        elif c == "n_threads":
            parts.append(f"{_val(v)} threads")
        elif c == "batch_size":
            parts.append(f"batch {_val(v)}")
        elif c == "protocol":
            parts.append(f"{_val(v)} protocol")
    if base_params is not None:
        own = run_params(row)
        diff = _differs(own, base_params)
        parts = [p for p in parts if p not in diff] + diff if diff else parts
        sysname = SYSTEM_NAMES.get(str(row.get("system")), str(row.get("system")))
        if not diff and set(base_params) - set(own) - {"lr", "device"}:
            # it leaves to its config what the base run sets by hand: it is that config, not the base
            parts.append(f"the engine's '{own.get('config', row.get('config'))}' config as shipped")
        if parts:
            return f"{sysname}: {', '.join(dict.fromkeys(parts))}"
        desc = ", ".join(param_phrase(k, base_params[k]) for k in VARIANT_PARAMS if k in base_params
                         and not (k == "sampler" and base_params[k] == "vanilla"))
        return f"{sysname} ({desc})" if desc else label
    what = describe(row.get("system"), row.get("config"), row.get("device"))
    text = label if what == label or label == what.split(",")[0] else f"{label}: {what}"
    return f"{text} ({', '.join(parts)})" if parts else text


def curve_groups(df: pd.DataFrame, split: Sequence[str] = ()) -> list[Group]:
    """Split rows into curves: one per label and per value of every varying param_/run dimension.

    ``split`` names columns that are *not* part of a curve's identity because the caller draws them
    in separate panels (e.g. dataset, batch_size). Every curve gets its own colour and marker: the
    first curve of a (system, config, device) keeps the system's look, the others (variants of one
    system, members of a sweep) get distinct palette colours and markers. Where a system has several
    variants, the legend says what makes each one (its params against the system's base run).
    """
    dims = ["label"] + [c for c in _varying(df, _param_cols(df) + ["n_threads", "batch_size", "protocol"])
                        if c not in split]
    if not len(df):
        return []
    keys = list(_strframe(df[dims]).drop_duplicates().itertuples(index=False, name=None))
    found = []
    for key in keys:
        mask = np.ones(len(df), dtype=bool)
        for c, v in zip(dims, key):
            mask &= (_strcol(df[c]) == v).to_numpy()
        sub = df[mask]
        if len(sub):
            found.append((tuple(key), sub, sub.iloc[0].to_dict()))
    # systems with more than one curve: name each by what differs from the system's base run
    per_look = Counter(_look(style_for(first)) for _, _, first in found)
    base_of: dict[tuple, dict] = {}
    for _, _, first in sorted(found, key=lambda f: (len(str(f[2].get("label"))), str(f[2].get("label")))):
        lk = _look(style_for(first))
        if per_look[lk] > 1 and lk not in base_of and all(_val(first.get(c)) == "-" for c in dims[1:]
                                                            if c.startswith("param_")):
            base_of[lk] = run_params(first)
    groups: list[Group] = []
    for key, sub, first in found:
        base = style_for(first)
        lk = _look(base)
        display = variant_display(first, dims[1:], base_of.get(lk) if per_look[lk] > 1 else None)
        groups.append(Group(key, display, replace(base, display=display), sub))
    groups.sort(key=lambda g: (g.style.order, len(str(g.df["label"].iloc[0])), g.display))
    seen: Counter = Counter()
    n_variants = 0
    for g in groups:
        lk = _look(g.style)
        if seen[lk]:
            g.style = variant_style(g.style, n_variants, g.display)
            n_variants += 1
        seen[lk] += 1
    return groups


def _look(st: Style) -> tuple:
    return (st.color, st.marker, st.linestyle)


def _runs_xy(sub: pd.DataFrame, x: str, y: str) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    rid = "run_id" if "run_id" in sub.columns else "seed"
    for _, r in sub.groupby(rid):
        r = r.sort_values(x)
        out.append((r[x].to_numpy(dtype=float), r[y].to_numpy(dtype=float)))
    return out


def _grid(df: pd.DataFrame, x: str, log: bool, n: int = 120) -> np.ndarray:
    xs = df[x].to_numpy(dtype=float)
    xs = xs[np.isfinite(xs)]
    if log:
        xs = xs[xs > 0]
    if len(xs) == 0:
        return np.array([])
    lo, hi = float(xs.min()), float(xs.max())
    if hi <= lo:
        return np.array([lo])
    return np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n)


def _draw_band(ax, sub: pd.DataFrame, x: str, y: str, st: Style, log: bool) -> bool:
    runs = _runs_xy(sub, x, y)
    if not runs:
        return False
    n_runs = len(runs)
    if n_runs == 1:
        xx, yy = runs[0]
        ax.plot(xx, yy, **st.line_kwargs())
        return True
    grid = _grid(sub, x, log)
    if len(grid) < 2:
        return False
    b = seed_band(runs, grid)
    kw = st.line_kwargs()
    kw["label"] = f"{st.display} [{n_runs} seeds]"
    ax.plot(grid, b["median"], **kw)
    ax.fill_between(grid, b["min"], b["max"], color=st.color, alpha=0.18, linewidth=0)
    return True


def _target(s: Summary, dataset: Any = None) -> float | None:
    """The target P@1 of the runs (of one data set when given: targets may differ per preset)."""
    if s.runs is not None and "target_p_at_1" in s.runs.columns:
        runs = s.runs if dataset is None or "dataset" not in s.runs.columns else s.runs[s.runs["dataset"] == dataset]
        t = runs["target_p_at_1"].dropna()
        if len(t):
            return float(t.iloc[0])
    return None


# ---------------------------------------------------------------------------------------- figures

XLABEL = {"train_time_s": "train time (s, log scale)", "step": "iterations (batches)",
          "samples_seen": "samples seen", "epoch": "epochs"}


def _new_fig(nrows: int, ncols: int, w: float = 4.2, h: float = 3.0):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows + 0.6), squeeze=False)
    return fig, axes


def shared_legend(fig, axes) -> float:
    """One legend for the whole figure under its title (curves repeat across panels); returns the
    fraction of the figure height it takes."""
    seen: dict[str, Any] = {}
    for ax in np.ravel(axes):
        h, lab = ax.get_legend_handles_labels()
        for hi, li in zip(h, lab):
            seen.setdefault(li, hi)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if not seen:
        return 0.0
    # as many columns as the longest entry allows (7.5 pt text: ~0.057 in a character, plus the handle),
    # so long labels wrap into more rows instead of running off the figure's edges
    entry_in = max(len(k) for k in seen) * 0.057 + 0.7
    ncol = max(1, min(3, len(seen), int(fig.get_figwidth() * 0.97 // entry_in)))
    rows = -(-len(seen) // ncol)
    frac = (0.17 * rows + 0.1) / fig.get_figheight()
    fig.legend(list(seen.values()), list(seen), loc="upper center", ncol=ncol, fontsize=7.5,
               bbox_to_anchor=(0.5, 0.935), frameon=False)
    return frac


def _finish(fig, footer: str, title: str, out_dir: Path, stem: str, legend_frac: float = 0.0) -> list[Path]:
    import matplotlib.pyplot as plt
    import textwrap
    fig.suptitle(title, fontsize=11)
    wrapped = "\n".join(textwrap.wrap(footer, width=int(fig.get_figwidth() * 19)))
    fig.text(0.01, 0.005, wrapped, fontsize=6.5, color="#444444", ha="left", va="bottom")
    nlines = wrapped.count("\n") + 1
    fig.tight_layout(rect=(0, 0.025 * nlines + 0.01, 1, 0.95 - legend_frac))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out_dir / f"{stem}.{ext}"
        fig.savefig(p, metadata={"Subject": footer} if ext == "pdf" else None)
        paths.append(p)
    (out_dir / f"{stem}.caption.txt").write_text(footer + "\n")
    plt.close(fig)
    return paths


PLAIN_SUBS = (1.0, 2.0, 5.0)
DENSE_SUBS = (1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 7.0)


def plain_log_locator(dense: bool):
    """A base-10 log locator at 1, 2, 5 x 10^k; with ``dense``, also at 1.2, 1.5, 3 and 7 while the axis
    spans at most a factor of 10 (so a narrow range still shows a number besides 1), and back to 1, 2, 5
    over a wider one, where the dense set would print labels on top of each other (Table 3's axis spans
    0.07-20 s). Decided when the axis is drawn, from its final limits."""
    from matplotlib.ticker import LogLocator

    class _Plain(LogLocator):
        def tick_values(self, vmin, vmax):
            lo, hi = sorted((vmin, vmax))
            self._subs = np.array(DENSE_SUBS if dense and lo > 0 and hi / lo <= 10 else PLAIN_SUBS)
            return super().tick_values(vmin, vmax)

    return _Plain(base=10, subs=DENSE_SUBS if dense else PLAIN_SUBS)


def plain_log_axis(ax, axis: str = "x") -> None:
    """Log scale ticked in plain numbers (1, 2, 5, 10, 20, 50 ...), not 6x10^0. The y axis (speedups, often
    spanning less than a factor of 2) also gets 1.2, 1.5, 3 and 7 while it spans at most a factor of 10
    (plain_log_locator)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    a.set_major_locator(plain_log_locator(dense=axis != "x"))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


def _curves_panel(ax, df: pd.DataFrame, x: str, log: bool, split: Sequence[str], target: float | None,
                  title: str, reference: tuple[str, float] | None = None, legend: bool = True) -> int:
    n = 0
    for g in curve_groups(df, split):
        if _draw_band(ax, g.df, x, "p_at_1", g.style, log):
            n += 1
    if log:
        plain_log_axis(ax, "x")
    # per-panel lines are labelled on the panel, not in the (shared) legend: their values differ by data set
    if target is not None:
        ax.axhline(target, color="#555555", lw=0.8, ls=":")
        ax.annotate(f"target {target:g}", (0.99, target), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=6.5, color="#555555")
    if reference is not None:
        name, value = reference
        ax.axhline(value, color="#000000", lw=1.0, ls="-.")
        ax.annotate(f"{name}, full test set: {value:.2f}", (0.01, value), xycoords=("axes fraction", "data"),
                    ha="left", va="bottom", fontsize=6.5)
        ax.set_ylim(top=max(ax.get_ylim()[1], value * 1.08))
    ax.set_xlabel(XLABEL.get(x, x))
    ax.set_ylabel("P@1 (eval subset)")
    ax.set_title(title)
    if n:
        if legend:
            ax.legend(loc="best", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no evaluations", transform=ax.transAxes, ha="center", va="center")
    return n

