"""The paper's figures, drawn from the tidy summaries in results/summary/ (never from raw logs).

``make_figures(results_dir, experiments)`` reads, per experiment,

* training experiments: ``<exp>_curves.csv`` (one row per evaluation), ``<exp>_runs.csv`` (one row
  per run) and ``<exp>_ttt.csv`` (time to target per group), written by ``slidebench summarize``;
* micro experiments (fig4, fig11, tab3): ``<exp>.csv`` written by ``slidebench.micro.run_micro``;

and writes ``results/figures/<exp>[_<part>].png`` and ``.pdf``. Every figure carries a footer with
the machine (CPU model, cores), threads, protocol, scale and seeds taken from the same CSVs, so a
figure cannot be separated from the conditions it was measured under. Seed spread is drawn as a
band: each run's curve is interpolated on a common grid (log-spaced in time, linear in steps), the
line is the median over seeds and the band spans min..max over the seeds that cover that grid point
(a run that stopped early, e.g. on reaching the target, is not extrapolated).

Missing summaries are skipped with a message (``make_figures`` returns only what it wrote); the
report says which experiments are missing.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .style import Style, apply_rc, style_for, variant_style

__all__ = ["make_figures", "load_summary", "footer_text", "seed_band", "KNOWN_EXPERIMENTS",
           "MICRO_EXPERIMENTS", "Summary", "available_experiments", "hard_threshold_prob"]

# the order figures and report sections appear in
KNOWN_EXPERIMENTS: tuple[str, ...] = ("fig5", "fig7", "fig8", "fig9", "fig4", "fig11", "tab3",
                                      "ablation", "protocol")
MICRO_EXPERIMENTS: frozenset[str] = frozenset({"fig4", "fig11", "tab3"})

# ------------------------------------------------------------------------------------------ data


@dataclass
class Summary:
    """Everything the summaries hold for one experiment (None where the file does not exist)."""

    name: str
    curves: pd.DataFrame | None = None
    runs: pd.DataFrame | None = None
    ttt: pd.DataFrame | None = None
    micro: pd.DataFrame | None = None

    @property
    def present(self) -> bool:
        return any(d is not None and len(d) > 0 for d in (self.curves, self.runs, self.micro))

    @property
    def is_micro(self) -> bool:
        return self.micro is not None


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as e:  # a corrupt summary is reported, not fatal for the other figures
        raise ValueError(f"cannot read summary {path}: {e}") from e
    return df


def load_summary(results_dir: str | Path, name: str) -> Summary:
    """Read the summary CSVs of experiment ``name`` under ``results_dir``/summary."""
    sdir = Path(results_dir) / "summary"
    s = Summary(name)
    s.curves = _read_csv(sdir / f"{name}_curves.csv")
    s.runs = _read_csv(sdir / f"{name}_runs.csv")
    s.ttt = _read_csv(sdir / f"{name}_ttt.csv")
    s.micro = _read_csv(sdir / f"{name}.csv")
    if name == "protocol":
        _add_fair_counterpart(s, Path(results_dir))
    if s.curves is not None and s.runs is not None and "device" in s.runs.columns \
            and "device" not in s.curves.columns and "run_id" in s.curves.columns:
        dev = s.runs.drop_duplicates("run_id").set_index("run_id")["device"]
        s.curves = s.curves.assign(device=s.curves["run_id"].map(dev))
    return s


# protocol.toml holds one protocol per file (the schema's [experiment] protocol); its runs use the
# same labels and configurations as fig5, so the fair side of the comparison is fig5's matching runs.
PROTOCOL_FAIR_SOURCE = "fig5"


def _add_fair_counterpart(s: Summary, results_dir: Path) -> None:
    """Append the matching runs of the other protocol from PROTOCOL_FAIR_SOURCE (same label, dataset,
    seed, threads, batch size) when the protocol experiment itself has only one protocol."""
    if s.runs is None or len(s.runs) == 0 or "protocol" not in s.runs.columns:
        return
    if s.runs["protocol"].nunique() > 1:
        return
    src = load_summary(results_dir, PROTOCOL_FAIR_SOURCE)
    if src.runs is None or src.curves is None or len(src.runs) == 0:
        return
    keys = [c for c in ("label", "dataset", "seed", "n_threads", "batch_size") if c in s.runs.columns
            and c in src.runs.columns]
    want = set(map(tuple, _strframe(s.runs[keys]).itertuples(index=False, name=None)))
    have = _strframe(src.runs[keys]).apply(tuple, axis=1)
    other = src.runs[have.isin(want) & (src.runs["protocol"] != s.runs["protocol"].iloc[0])]
    if len(other) == 0:
        return
    other = other.assign(experiment=s.name, source_experiment=PROTOCOL_FAIR_SOURCE)
    cur = src.curves[src.curves["run_id"].isin(set(other["run_id"]))].assign(
        experiment=s.name, source_experiment=PROTOCOL_FAIR_SOURCE)
    s.runs = pd.concat([s.runs, other], ignore_index=True)
    s.curves = pd.concat([s.curves, cur], ignore_index=True) if s.curves is not None else cur


def available_experiments(results_dir: str | Path) -> list[str]:
    """Known experiments first (in figure order), then any other summaries found (e.g. smoke)."""
    sdir = Path(results_dir) / "summary"
    found: set[str] = set()
    if sdir.is_dir():
        for p in sdir.glob("*.csv"):
            stem = p.stem
            for suf in ("_curves", "_runs", "_ttt"):
                if stem.endswith(suf):
                    stem = stem[: -len(suf)]
                    break
            found.add(stem)
    extra = sorted(found - set(KNOWN_EXPERIMENTS))
    return list(KNOWN_EXPERIMENTS) + extra


# --------------------------------------------------------------------------------------- helpers


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


@dataclass
class Group:
    key: tuple
    display: str
    style: Style
    df: pd.DataFrame


def curve_groups(df: pd.DataFrame, split: Sequence[str] = ()) -> list[Group]:
    """Split rows into curves: one per label and per value of every varying param_/run dimension.

    ``split`` names columns that are *not* part of a curve's identity because the caller draws them
    in separate panels (e.g. dataset, batch_size). Curves of one label that differ in swept params,
    thread count, batch size or protocol get distinct colours and a suffix in the legend.
    """
    dims = ["label"] + [c for c in _varying(df, _param_cols(df) + ["n_threads", "batch_size", "protocol"])
                        if c not in split]
    groups: list[Group] = []
    keys = _strframe(df[dims]).drop_duplicates().itertuples(index=False, name=None) if len(df) else []
    n_variants = 0
    label_variants = df.groupby("label")[dims[1:]].apply(lambda g: len(_strframe(g).drop_duplicates())) \
        if len(dims) > 1 and len(df) else None
    for key in keys:
        mask = np.ones(len(df), dtype=bool)
        for c, v in zip(dims, key):
            mask &= (_strcol(df[c]) == v).to_numpy()
        sub = df[mask]
        if len(sub) == 0:
            continue
        first = sub.iloc[0].to_dict()
        base = style_for(first)
        label = str(first.get("label"))
        suffix = ", ".join(f"{c.removeprefix('param_')}={_val(first[c])}" for c in dims[1:]
                           if label_variants is not None and label_variants.get(label, 1) > 1)
        display = f"{base.display} ({suffix})" if suffix else base.display
        if label_variants is not None and label_variants.get(label, 1) > 1:
            st = variant_style(base, n_variants, display)
            n_variants += 1
        else:
            st = Style(base.color, base.marker, base.linestyle, base.order, display)
        groups.append(Group(tuple(key), display, st, sub))
    groups.sort(key=lambda g: (g.style.order, g.display))
    return groups


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


def _finish(fig, footer: str, title: str, out_dir: Path, stem: str) -> list[Path]:
    import matplotlib.pyplot as plt
    import textwrap
    fig.suptitle(title, fontsize=11)
    wrapped = "\n".join(textwrap.wrap(footer, width=int(fig.get_figwidth() * 19)))
    fig.text(0.01, 0.005, wrapped, fontsize=6.5, color="#444444", ha="left", va="bottom")
    nlines = wrapped.count("\n") + 1
    fig.tight_layout(rect=(0, 0.025 * nlines + 0.01, 1, 0.95))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out_dir / f"{stem}.{ext}"
        fig.savefig(p, metadata={"Subject": footer} if ext == "pdf" else None)
        paths.append(p)
    (out_dir / f"{stem}.caption.txt").write_text(footer + "\n")
    plt.close(fig)
    return paths


def _curves_panel(ax, df: pd.DataFrame, x: str, log: bool, split: Sequence[str], target: float | None,
                  title: str) -> int:
    n = 0
    for g in curve_groups(df, split):
        if _draw_band(ax, g.df, x, "p_at_1", g.style, log):
            n += 1
    if log:
        ax.set_xscale("log")
    if target is not None:
        ax.axhline(target, color="#555555", lw=0.8, ls=":", label=f"target P@1 {target:g}")
    ax.set_xlabel(XLABEL.get(x, x))
    ax.set_ylabel("P@1 (eval subset)")
    ax.set_title(title)
    if n:
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no evaluations", transform=ax.transAxes, ha="center", va="center")
    return n


def fig_curves(s: Summary, out_dir: Path, title: str, split_cols: Sequence[str] = ("dataset",),
               xs: Sequence[tuple[str, bool]] = (("train_time_s", True), ("step", False)),
               stem: str | None = None) -> list[Path]:
    """P@1 against time (log) and iterations; one row per value of the split columns."""
    df = s.curves
    if df is None or len(df) == 0:
        return []
    split_cols = [c for c in split_cols if c in df.columns]
    panels = df[split_cols].drop_duplicates().sort_values(split_cols).itertuples(index=False, name=None) \
        if split_cols else [()]
    panels = list(panels)
    fig, axes = _new_fig(len(panels), len(xs))
    for i, pv in enumerate(panels):
        sub = df
        for c, v in zip(split_cols, pv):
            sub = sub[sub[c] == v]
        target = _target(s, dict(zip(split_cols, pv)).get("dataset"))
        ptitle = ", ".join(f"{_val(v)}" if c == "dataset" else f"{c}={_val(v)}" for c, v in zip(split_cols, pv))
        for j, (x, log) in enumerate(xs):
            if x not in sub.columns:
                raise ValueError(f"{s.name}_curves.csv has no column {x!r}")
            _curves_panel(axes[i][j], sub, x, log, split_cols, target,
                          f"{ptitle}: P@1 vs {'time' if x == 'train_time_s' else x}" if ptitle else f"P@1 vs {x}")
    return _finish(fig, footer_text(s.runs if s.runs is not None else s.curves), title, out_dir,
                   stem or s.name)


def fig_batch(s: Summary, out_dir: Path) -> list[Path]:
    """Fig 8: one column per batch size, P@1 vs time (top) and vs iterations (bottom), per data set."""
    df = s.curves
    if df is None or len(df) == 0:
        return []
    paths = []
    datasets = _uniq(df, "dataset") or [None]
    for ds in datasets:
        sub = df if ds is None else df[df["dataset"] == ds]
        bss = _uniq(sub, "batch_size")
        fig, axes = _new_fig(2, max(1, len(bss)), w=3.6)
        target = _target(s, ds)
        for j, bs in enumerate(bss):
            b = sub[sub["batch_size"] == bs]
            _curves_panel(axes[0][j], b, "train_time_s", True, ["dataset", "batch_size"], target,
                          f"batch {int(bs)}: P@1 vs time")
            _curves_panel(axes[1][j], b, "step", False, ["dataset", "batch_size"], target,
                          f"batch {int(bs)}: P@1 vs iterations")
        runs = s.runs if s.runs is None or ds is None else s.runs[s.runs["dataset"] == ds]
        stem = s.name if len(datasets) == 1 else f"{s.name}_{ds}"
        paths += _finish(fig, footer_text(runs), f"Fig 8: effect of batch size ({ds})", out_dir, stem)
    return paths


def _throughput(runs: pd.DataFrame) -> pd.Series:
    with np.errstate(all="ignore"):
        return runs["samples_seen"].astype(float) / runs["train_time_s"].astype(float)


def fig_threads(s: Summary, out_dir: Path) -> list[Path]:
    """Fig 9: time to target against threads (olympic mean, min..max), speedup over each baseline,
    and training throughput (samples/s, always available even where the target was not reached)."""
    if s.runs is None or len(s.runs) == 0:
        return []
    runs = s.runs.copy()
    runs["throughput"] = _throughput(runs)
    fig, axes = _new_fig(1, 3, w=3.8)
    ax_t, ax_s, ax_p = axes[0]
    ttt = s.ttt if s.ttt is not None else pd.DataFrame()
    drew_ttt = False
    slide_ttt: dict[tuple, float] = {}
    base_ttt: dict[str, tuple[Style, dict[tuple, float]]] = {}
    for g in curve_groups(runs, split=("n_threads", "dataset")):
        st = g.style
        # throughput per thread count, median and range over seeds
        th = g.df.groupby("n_threads")["throughput"].agg(["median", "min", "max"]).sort_index()
        ax_p.errorbar(th.index, th["median"], yerr=[th["median"] - th["min"], th["max"] - th["median"]],
                      color=st.color, marker=st.marker, ls=st.linestyle, label=st.display, capsize=3)
        if len(ttt) and "label" in ttt.columns:
            t = ttt[ttt["label"] == g.df["label"].iloc[0]]
            for c in _param_cols(g.df):
                if c in t.columns and _strcol(g.df[c]).nunique() == 1:
                    t = t[_strcol(t[c]) == _val(g.df[c].iloc[0])]
            t = t[t["n_reached"] > 0] if "n_reached" in t.columns else t
            t = t.dropna(subset=["ttt_olympic_mean_s"]).sort_values("n_threads")
            if len(t):
                ax_t.errorbar(t["n_threads"], t["ttt_olympic_mean_s"],
                              yerr=[t["ttt_olympic_mean_s"] - t["ttt_min_s"], t["ttt_max_s"] - t["ttt_olympic_mean_s"]],
                              color=st.color, marker=st.marker, ls=st.linestyle, label=st.display, capsize=3)
                drew_ttt = True
                d = {(int(r.n_threads),): float(r.ttt_olympic_mean_s) for r in t.itertuples()}
                if str(g.df["system"].iloc[0]) == "slide":
                    slide_ttt.update(d)
                else:
                    base_ttt[st.display] = (st, d)
    ax_t.set_xscale("log", base=2)
    ax_t.set_yscale("log")
    ax_t.set_xlabel("threads")
    ax_t.set_ylabel("time to target P@1 (s)")
    tgt = _target(s)
    ax_t.set_title(f"time to target{'' if tgt is None else f' P@1 {tgt:g}'}")
    if drew_ttt:
        ax_t.legend()
    else:
        ax_t.text(0.5, 0.5, "target not reached\nby any group", transform=ax_t.transAxes, ha="center")
    drew_s = False
    for name, (st, d) in base_ttt.items():
        ks = sorted(set(d) & set(slide_ttt))
        if ks:
            ax_s.plot([k[0] for k in ks], [d[k] / slide_ttt[k] for k in ks], marker=st.marker,
                      color=st.color, ls=st.linestyle, label=f"{name} / SLIDE")
            drew_s = True
    ax_s.axhline(1.0, color="#555555", lw=0.8, ls=":")
    ax_s.set_xscale("log", base=2)
    ax_s.set_xlabel("threads")
    ax_s.set_ylabel("speedup of SLIDE (baseline ttt / SLIDE ttt)")
    ax_s.set_title("speedup of SLIDE")
    if drew_s:
        ax_s.legend()
    else:
        ax_s.text(0.5, 0.5, "needs SLIDE and a baseline\nreaching the target", transform=ax_s.transAxes,
                  ha="center")
    ax_p.set_xscale("log", base=2)
    ax_p.set_xlabel("threads")
    ax_p.set_ylabel("training throughput (samples/s)")
    ax_p.set_title("throughput (median, min..max over seeds)")
    ax_p.legend()
    for ax in (ax_t, ax_s, ax_p):
        ticks = sorted(int(v) for v in runs["n_threads"].dropna().unique())
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
    return _finish(fig, footer_text(s.runs), "Fig 9: time to convergence against threads", out_dir, s.name)


def _variant_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant (label + varying params): final P@1 and throughput over seeds."""
    runs = runs.copy()
    runs["throughput"] = _throughput(runs)
    groups = curve_groups(runs, split=("dataset",))
    rows = []
    for g in groups:
        fp = g.df["final_p_at_1"].astype(float)
        tp = g.df["throughput"].astype(float)
        rows.append({"variant": g.display, "color": g.style.color, "order": g.style.order,
                     "p1_mean": fp.mean(), "p1_min": fp.min(), "p1_max": fp.max(),
                     "tp_mean": tp.median(), "tp_min": tp.min(), "tp_max": tp.max(), "n": len(g.df)})
    return pd.DataFrame(rows)


def fig_ablation(s: Summary, out_dir: Path) -> list[Path]:
    """Ablation: final P@1 (full test set) and throughput per variant, and P@1 against time."""
    if s.runs is None or len(s.runs) == 0:
        return []
    paths = []
    datasets = _uniq(s.runs, "dataset") or [None]
    for ds in datasets:
        runs = s.runs if ds is None else s.runs[s.runs["dataset"] == ds]
        tab = _variant_table(runs)
        if len(tab) == 0:
            continue
        fig, axes = _new_fig(1, 3, w=4.4, h=max(3.0, 0.28 * len(tab) + 1.2))
        ax1, ax2, ax3 = axes[0]
        y = np.arange(len(tab))
        ax1.barh(y, tab["p1_mean"], xerr=[tab["p1_mean"] - tab["p1_min"], tab["p1_max"] - tab["p1_mean"]],
                 color=tab["color"], capsize=2)
        ax1.set_yticks(y)
        ax1.set_yticklabels(tab["variant"], fontsize=7)
        ax1.invert_yaxis()
        ax1.set_xlabel("final P@1 (full test set)")
        ax2.barh(y, tab["tp_mean"], xerr=[tab["tp_mean"] - tab["tp_min"], tab["tp_max"] - tab["tp_mean"]],
                 color=tab["color"], capsize=2)
        ax2.set_yticks(y)
        ax2.set_yticklabels([])
        ax2.invert_yaxis()
        ax2.set_xlabel("training throughput (samples/s)")
        if s.curves is not None and len(s.curves):
            cur = s.curves if ds is None else s.curves[s.curves["dataset"] == ds]
            _curves_panel(ax3, cur, "train_time_s", True, ["dataset"], _target(s), "P@1 vs time")
            ax3.legend(fontsize=6)
        stem = s.name if len(datasets) == 1 else f"{s.name}_{ds}"
        paths += _finish(fig, footer_text(runs), f"Ablation: hash family, K/L, random active set ({ds})",
                         out_dir, stem)
    return paths


def fig_protocol(s: Summary, out_dir: Path) -> list[Path]:
    """Protocol: P@1 vs time under each protocol side by side (same y range), and per run the last
    intermediate P@1 (what that protocol shows while training) next to the final full-test P@1."""
    if s.curves is None or len(s.curves) == 0:
        return []
    df = s.curves
    protos = _uniq(df, "protocol") or ["?"]
    datasets = _uniq(df, "dataset") or [None]
    fig, axes = _new_fig(len(datasets), len(protos) + 1, w=3.8)
    for i, ds in enumerate(datasets):
        sub = df if ds is None else df[df["dataset"] == ds]
        for j, pr in enumerate(protos):
            _curves_panel(axes[i][j], sub[sub["protocol"] == pr] if "protocol" in sub else sub,
                          "train_time_s", True, ["dataset", "protocol"], _target(s),
                          f"{ds}: protocol '{pr}'")
        ymax = max(a.get_ylim()[1] for a in axes[i][: len(protos)])
        for a in axes[i][: len(protos)]:
            a.set_ylim(0, ymax)
        ax = axes[i][len(protos)]
        if s.runs is not None and len(s.runs):
            runs = s.runs if ds is None else s.runs[s.runs["dataset"] == ds]
            last = sub.sort_values("train_time_s").groupby("run_id").tail(1).set_index("run_id")["p_at_1"]
            r = runs.assign(last_eval=runs["run_id"].map(last))
            agg = r.groupby(["label", "protocol"]).agg(last_eval=("last_eval", "mean"),
                                                       final=("final_p_at_1", "mean"),
                                                       system=("system", "first"),
                                                       config=("config", "first")).reset_index()
            xlab = [f"{a}\n{b}" for a, b in zip(agg["label"], agg["protocol"])]
            x = np.arange(len(agg))
            cols = [style_for({"system": a, "config": b}).color for a, b in zip(agg["system"], agg["config"])]
            ax.bar(x - 0.2, agg["last_eval"], 0.4, color=cols, alpha=0.5, label="last eval (protocol's subset)")
            ax.bar(x + 0.2, agg["final"], 0.4, color=cols, label="final, full test set")
            ax.set_xticks(x)
            ax.set_xticklabels(xlab, fontsize=6)
            ax.set_ylabel("P@1 (mean over seeds)")
            ax.set_title("what the protocol reports vs full test")
            ax.legend(fontsize=6)
    return _finish(fig, footer_text(s.runs if s.runs is not None else df),
                   "Protocol: fair vs the 2019 release's protocol", out_dir, s.name)


def _micro_frame(s: Summary, need: set[str]) -> pd.DataFrame | None:
    """A micro-experiment's table, or None when there is none; a ValueError names missing columns."""
    df = s.micro
    if df is None or len(df) == 0:
        return None
    if not need <= set(df.columns):
        raise ValueError(f"{s.name}.csv lacks columns {sorted(need - set(df.columns))}")
    return df


def fig_samplers(s: Summary, out_dir: Path) -> list[Path]:
    """Fig 4: cost per sample of the samplers (query cost and training-step cost)."""
    df = _micro_frame(s, {"sampler", "what", "us_per_sample", "us_per_sample_min", "us_per_sample_max"})
    if df is None:
        return []
    order = {"kernel": 0, "query": 1, "train": 2}
    whats = sorted(_uniq(df, "what"), key=lambda w: (order.get(w, 9), w))
    fig, axes = _new_fig(1, len(whats), w=4.0)
    for j, w in enumerate(whats):
        ax = axes[0][j]
        d = df[df["what"] == w].reset_index(drop=True)
        x = np.arange(len(d))
        ax.bar(x, d["us_per_sample"], yerr=[d["us_per_sample"] - d["us_per_sample_min"],
                                           d["us_per_sample_max"] - d["us_per_sample"]],
               color=[style_for("slide").color if sm in ("vanilla", "topk", "threshold") else "#7f7f7f"
                      for sm in d["sampler"]], capsize=3)
        labels = [str(sm) for sm in d["sampler"]]
        if "active_mean" in d.columns:
            labels = [f"{a}\n{b:.0f} active" if np.isfinite(b) else a for a, b in zip(labels, d["active_mean"])]
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7)
        pos = d["us_per_sample"][d["us_per_sample"] > 0]
        if len(pos) and pos.max() / pos.min() > 20:      # e.g. the full sampler next to LSH ones
            ax.set_yscale("log")
        ax.set_ylabel("microseconds per sample (median, min..max)")
        ax.set_title({"query": "LSH query via Python, per call", "kernel": "compiled kernels alone",
                      "train": "whole training step"}.get(w, w))
    shape = ""
    if "n_labels" in df.columns:
        r = df.iloc[0]
        shape = f"output {int(r['n_labels'])} neurons, {r.get('family', '?')} K={_val(r.get('K'))} L={_val(r.get('L'))}"
    return _finish(fig, footer_text(df, shape), "Fig 4: cost of the sampling strategies", out_dir, s.name)


def fig_threshold(s: Summary, out_dir: Path) -> list[Path]:
    """Fig 11: P(selected by hard threshold m of L) against collision probability p."""
    df = _micro_frame(s, {"source", "m", "L", "p", "prob"})
    if df is None:
        return []
    fig, axes = _new_fig(1, 1, w=5.0, h=3.6)
    ax = axes[0][0]
    ms = _uniq(df, "m")
    L = int(df["L"].iloc[0])
    for i, m in enumerate(ms):
        color = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")[i % 7]
        a = df[(df["source"] == "analytic") & (df["m"] == m)].sort_values("p")
        ax.plot(a["p"], a["prob"], color=color, lw=1.5, label=f"m={int(m)} analytic")
        me = df[(df["source"] == "measured") & (df["m"] == m)].sort_values("p")
        if len(me):
            ax.plot(me["p"], me["prob"], ls="none", marker="o", ms=4, color=color, mfc="none",
                    label=f"m={int(m)} measured")
    ax.set_xlabel("collision probability p of (query, neuron) per table")
    ax.set_ylabel(f"P(selected: hit in >= m of L={L} tables)")
    ax.legend(fontsize=6, ncol=2)
    extra = ""
    if "family" in df.columns:
        r = df.iloc[0]
        me = df[df["source"] == "measured"]
        npairs = int(me[me["m"] == me["m"].iloc[0]]["n_pairs"].sum()) if len(me) and "n_pairs" in df else 0
        extra = f"{r['family']} K={_val(r.get('K'))}, {npairs} measured (query, neuron) pairs"
    return _finish(fig, footer_text(df, extra), "Fig 11: hard-threshold selection probability", out_dir,
                   s.name)


TAB3_PAPER = {"insert_reservoir": 0.371, "insert_fifo": 0.762, "rebuild_fifo": 18.0}


def fig_insertion(s: Summary, out_dir: Path) -> list[Path]:
    """Table 3 as a bar chart: insertion time FIFO vs reservoir and a rebuild with hashing."""
    df = _micro_frame(s, {"operation", "seconds_median", "seconds_min", "seconds_max"})
    if df is None:
        return []
    fig, axes = _new_fig(1, 1, w=5.2, h=3.2)
    ax = axes[0][0]
    d = df.reset_index(drop=True)
    x = np.arange(len(d))
    ax.bar(x - 0.2, d["seconds_median"], 0.4, yerr=[d["seconds_median"] - d["seconds_min"],
                                                 d["seconds_max"] - d["seconds_median"]],
           color=style_for("slide").color, capsize=3, label="this machine (median, min..max)")
    paper = [TAB3_PAPER.get(op, np.nan) for op in d["operation"]]
    ax.bar(x + 0.2, paper, 0.4, color="#7f7f7f", label="paper (44 cores)")
    ax.set_xticks(x)
    ax.set_xticklabels(d["operation"], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    extra = ""
    if "n_neurons" in d.columns:
        r = d.iloc[0]
        extra = (f"{int(r['n_neurons'])} neurons, dim {_val(r.get('dim'))}, {r.get('family', '?')} "
                 f"K={_val(r.get('K'))} L={_val(r.get('L'))} range_pow={_val(r.get('range_pow'))} "
                 f"bucket={_val(r.get('bucket_size'))}")
    return _finish(fig, footer_text(d, extra), "Table 3: inserting every output neuron into the tables",
                   out_dir, s.name)


FIGURES: dict[str, Callable[[Summary, Path], list[Path]]] = {
    "fig5": lambda s, o: fig_curves(s, o, "Fig 5: P@1 against train time and iterations, SLIDE vs TF full softmax"),
    "fig7": lambda s, o: fig_curves(s, o, "Fig 7: SLIDE vs TF sampled softmax"),
    "fig8": fig_batch,
    "fig9": fig_threads,
    "fig4": fig_samplers,
    "fig11": fig_threshold,
    "tab3": fig_insertion,
    "ablation": fig_ablation,
    "protocol": fig_protocol,
}


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[plots] {msg}", file=sys.stderr, flush=True)


def make_figures(results_dir: str | Path = "results", experiments: Sequence[str] | None = None, *,
                 progress: bool = True) -> list[Path]:
    """Draw every figure whose summaries exist; return the written paths (PNG and PDF).

    ``experiments`` limits the set (names as in experiments/*.toml); by default every known
    experiment plus any other summary found. Missing summaries are skipped with a message.
    An experiment whose summary is malformed raises ValueError naming the file.
    """
    import matplotlib
    matplotlib.use("Agg", force=True)
    apply_rc()
    results_dir = Path(results_dir)
    out_dir = results_dir / "figures"
    names = list(experiments) if experiments else available_experiments(results_dir)
    written: list[Path] = []
    for name in names:
        s = load_summary(results_dir, name)
        if not s.present:
            _say(f"{name}: no summary under {results_dir / 'summary'}; skipped", progress)
            continue
        fn = FIGURES.get(name)
        if fn is None:
            fn = (lambda s_, o_: fig_curves(s_, o_, f"{s_.name}: P@1 against train time and iterations")) \
                if s.curves is not None else None
        if fn is None:
            _say(f"{name}: no figure defined for this summary; skipped", progress)
            continue
        paths = fn(s, out_dir)
        _say(f"{name}: wrote {', '.join(p.name for p in paths) or 'nothing (no rows)'}", progress)
        written += paths
    return written
