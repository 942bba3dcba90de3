"""Figures of the training experiments: P@1 curves (fig5, fig7), batch sizes (fig8), threads (fig9),
ablation, protocol, and SLIDE's speedup at every accuracy level."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .catalogue import SPEEDUP_TITLE, TIMING_DRIFT, TITLES
from .drawing import _curves_panel, _finish, _new_fig, _target, curve_groups, plain_log_axis, shared_legend
from .formatting import _param_cols, _strcol, _uniq, _val, footer_text
from .style import Style, style_for
from .summaries import Summary, run_lr

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
        ds = dict(zip(split_cols, pv)).get("dataset")
        target = _target(s, ds)
        ref = _reference_line(s.reference, ds)
        ptitle = ", ".join(f"{_val(v)}" if c == "dataset" else f"{c}={_val(v)}" for c, v in zip(split_cols, pv))
        for j, (x, log) in enumerate(xs):
            if x not in sub.columns:
                raise ValueError(f"{s.name}_curves.csv has no column {x!r}")
            what = {"train_time_s": "train time", "step": "iterations"}.get(x, x)
            _curves_panel(axes[i][j], sub, x, log, split_cols, target,
                          f"{ptitle}: P@1 vs {what}" if ptitle else f"P@1 vs {what}", ref)
    n_seeds = int(df.groupby(["label", "dataset"] if "dataset" in df.columns else ["label"])["seed"].nunique().max())
    band = "line: median over seeds, band: min..max over seeds" if n_seeds > 1 else "one seed: no band"
    frac = shared_legend(fig, axes)
    return _finish(fig, footer_text(s.runs if s.runs is not None else s.curves, band), title, out_dir,
                   stem or s.name, frac)


def _reference_line(ref: pd.DataFrame | None, dataset) -> tuple[str, float] | None:
    """(library, P@1) of the non-neural reference on ``dataset``, or None."""
    if ref is None or len(ref) == 0 or dataset is None:
        return None
    r = ref[ref["dataset"].astype(str) == str(dataset)]
    if len(r) == 0 or not np.isfinite(float(r["p_at_1"].iloc[0])):
        return None
    return str(r["library"].iloc[0]), float(r["p_at_1"].iloc[0])


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
                          f"batch {int(bs)}: P@1 vs train time")
            _curves_panel(axes[1][j], b, "step", False, ["dataset", "batch_size"], target,
                          f"batch {int(bs)}: P@1 vs iterations")
        runs = s.runs if s.runs is None or ds is None else s.runs[s.runs["dataset"] == ds]
        stem = s.name if len(datasets) == 1 else f"{s.name}_{ds}"
        paths += _finish(fig, footer_text(runs), f"Fig 8: effect of batch size ({ds})", out_dir, stem,
                         shared_legend(fig, axes))
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
        one = bool((g.df.groupby("n_threads").size() <= 1).all())      # no error bars from one seed
        ax_p.errorbar(th.index, th["median"], yerr=None if one else [th["median"] - th["min"], th["max"] - th["median"]],
                      color=st.color, marker=st.marker, ls=st.linestyle, label=st.display, capsize=3)
        if len(ttt) and "label" in ttt.columns:
            t = ttt[ttt["label"] == g.df["label"].iloc[0]]
            for c in _param_cols(g.df):
                if c in t.columns and _strcol(g.df[c]).nunique() == 1:
                    t = t[_strcol(t[c]) == _val(g.df[c].iloc[0])]
            t = t[t["n_reached"] > 0] if "n_reached" in t.columns else t
            t = t.dropna(subset=["ttt_olympic_mean_s"]).sort_values("n_threads")
            if len(t):
                one_t = bool((t["n_reached"] <= 1).all()) if "n_reached" in t.columns else False
                ax_t.errorbar(t["n_threads"], t["ttt_olympic_mean_s"],
                              yerr=None if one_t else [t["ttt_olympic_mean_s"] - t["ttt_min_s"],
                                                       t["ttt_max_s"] - t["ttt_olympic_mean_s"]],
                              color=st.color, marker=st.marker, ls=st.linestyle, label=st.display, capsize=3)
                drew_ttt = True
                d = {(int(r.n_threads),): float(r.ttt_olympic_mean_s) for r in t.itertuples()}
                if str(g.df["system"].iloc[0]) == "slide":
                    slide_ttt.update(d)
                else:
                    base_ttt[st.display] = (st, d)
    ax_t.set_xscale("log", base=2)
    plain_log_axis(ax_t, "y")
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
    ax_s.set_ylabel("SLIDE's speedup (baseline / SLIDE time to target)")
    ax_s.set_title("speedup of SLIDE")
    if drew_s:
        ax_s.legend()
    else:
        ax_s.text(0.5, 0.5, "needs SLIDE and a baseline\nreaching the target", transform=ax_s.transAxes,
                  ha="center")
    ax_p.set_xscale("log", base=2)
    ax_p.set_xlabel("threads")
    ax_p.set_ylabel("training throughput (samples/s)")
    ax_p.set_title("throughput (median over seeds)")
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
        one = bool((tab["n"] <= 1).all())       # no error bars from one seed
        ax1.barh(y, tab["p1_mean"], xerr=None if one else [tab["p1_mean"] - tab["p1_min"],
                                                            tab["p1_max"] - tab["p1_mean"]],
                 color=tab["color"], capsize=2)
        for yi, v in zip(y, tab["p1_mean"]):
            ax1.text(v, yi, f" {v:.3f}", va="center", fontsize=6)
        ax1.set_yticks(y)
        ax1.set_yticklabels(tab["variant"], fontsize=7)
        ax1.invert_yaxis()
        ax1.set_xlabel("final P@1 (full test set)" + ("" if one else ", mean, min..max"))
        ax2.barh(y, tab["tp_mean"], xerr=None if one else [tab["tp_mean"] - tab["tp_min"],
                                                            tab["tp_max"] - tab["tp_mean"]],
                 color=tab["color"], capsize=2)
        ax2.set_yticks(y)
        ax2.set_yticklabels([])
        ax2.invert_yaxis()
        ax2.set_xlabel("training throughput (samples/s)")
        if s.curves is not None and len(s.curves):
            cur = s.curves if ds is None else s.curves[s.curves["dataset"] == ds]
            # no legend: the bars name every variant, and a legend here hides curves
            _curves_panel(ax3, cur, "train_time_s", True, ["dataset"], _target(s),
                          "P@1 vs train time (colours as in the bars)", legend=False)
        stem = s.name if len(datasets) == 1 else f"{s.name}_{ds}"
        paths += _finish(fig, footer_text(runs), f"{TITLES['ablation']} ({ds})",
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
            xlab = [f"{a}\n{b} protocol" for a, b in zip(agg["label"], agg["protocol"])]
            x = np.arange(len(agg))
            cols = [style_for({"system": a, "config": b}).color for a, b in zip(agg["system"], agg["config"])]
            ax.bar(x - 0.2, agg["last_eval"], 0.4, color=cols, alpha=0.5, label="last eval (protocol's subset)")
            ax.bar(x + 0.2, agg["final"], 0.4, color=cols, label="final, full test set")
            ax.set_xticks(x)
            ax.set_xticklabels(xlab, fontsize=6)
            ax.set_ylabel("P@1 (mean over seeds)")
            ax.set_title("what the protocol reports vs full test")
            top = float(np.nanmax(agg[["last_eval", "final"]].to_numpy(float))) if len(agg) else 1.0
            ax.set_ylim(0, top * 1.3 if np.isfinite(top) and top > 0 else 1.0)   # room for the legend
            ax.legend(fontsize=6, loc="upper center", ncol=2)
    # the curve panels share one legend above them (inside a panel it sat on TF's fair-protocol line)
    frac = shared_legend(fig, [row[: len(protos)] for row in axes])
    return _finish(fig, footer_text(s.runs if s.runs is not None else df),
                   "Protocol: fair vs the 2019 release's protocol", out_dir, s.name, frac)




def fig_speedup(s: Summary, out_dir: Path) -> list[Path]:
    """SLIDE's speedup over each baseline against accuracy level (fraction of the best P@1 a system
    reached, ``speedup.anchor_p1``): median over seeds, band min..max (none from one seed); open markers where the value is
    a lower bound (the baseline did not reach the level within its budget in some seed); a grey zone
    from 1/TIMING_DRIFT to TIMING_DRIFT, inside which a measured ratio decides no verdict."""
    sp = s.speedup
    if sp is None or len(sp) == 0:
        return []
    sp = sp[sp["bound"].fillna("").astype(str) != "neither"]
    if len(sp) == 0:
        return []
    datasets = _uniq(sp, "dataset") or [None]
    slides = _uniq(sp, "slide")
    fig, axes = _new_fig(1, len(datasets), w=4.6, h=3.4)
    for j, ds in enumerate(datasets):
        ax = axes[0][j]
        d = sp if ds is None else sp[sp["dataset"] == ds]
        drawn = 0
        for k, ((sl, bl), g) in enumerate(d.groupby(["slide", "baseline"], sort=True)):
            g = g.sort_values("level_frac")
            row = g.iloc[0]
            st = style_for({"system": row["baseline_system"], "config": row["baseline_config"],
                            "device": row["baseline_device"], "label": bl})
            ls = ":" if len(slides) > 1 and sl != slides[0] else st.linestyle
            name = f"{sl} over {bl}" if len(slides) > 1 else f"SLIDE over {bl}"
            x, m = g["level_frac"].to_numpy(float), g["speedup_median"].to_numpy(float)
            ax.plot(x, m, color=st.color, ls=ls, lw=1.6, label=name)
            bound = g["bound"].fillna("").astype(str).to_numpy()
            for b, mk, size in (("", st.marker, 5), (">", "^", 7), ("<", "v", 7), ("mixed", "d", 6)):
                sel = bound == b
                if sel.any():
                    ax.plot(x[sel], m[sel], ls="none", marker=mk, color=st.color, ms=size,
                            mfc=st.color if st.filled or b else "white")
            if int(g["n_seeds"].max()) > 1:
                ax.fill_between(x, g["speedup_min"].to_numpy(float), g["speedup_max"].to_numpy(float),
                                color=st.color, alpha=0.15, lw=0)
            drawn += 1
        ax.axhline(1.0, color="#555555", lw=0.8, ls=":")
        # the verdict's parity zone: a ratio of two measured times inside it decides nothing
        ax.axhspan(1 / TIMING_DRIFT, TIMING_DRIFT, color="#888888", alpha=0.10, lw=0,
                   label=f"run-to-run drift (1/{TIMING_DRIFT:g}x..{TIMING_DRIFT:g}x)")
        plain_log_axis(ax, "y")
        ax.set_xlabel("accuracy level (fraction of the best P@1 reached)")
        ax.set_ylabel("SLIDE's speedup (baseline time / SLIDE time)")
        best = (d["level_p1"] / d["level_frac"]).max() if len(d) else float("nan")
        ax.set_title(f"{ds}: 100% = P@1 {best:.3f}" if ds is not None else "")
        if drawn:
            if (d["bound"].fillna("").astype(str) == ">").any():
                ax.plot([], [], ls="none", marker="^", color="#555555",
                        label="at least (baseline short of the level)")
            if (d["bound"].fillna("").astype(str) == "<").any():
                ax.plot([], [], ls="none", marker="v", color="#555555",
                        label="at most (SLIDE short of the level)")
            if (d["bound"].fillna("").astype(str) == "mixed").any():
                ax.plot([], [], ls="none", marker="d", color="#555555",
                        label="bounds both ways (each system short in some seed)")
            ax.legend(fontsize=6.5)
    method = str(sp["method"].iloc[0]) if "method" in sp.columns else "interpolate"
    how = ("time to a level interpolated linearly between evaluations" if method == "interpolate"
           else "time to a level = first evaluation at or over it")
    n_seeds = int(sp["n_seeds"].max())
    extra = (f"{how}; median over {n_seeds} seeds, band min..max" if n_seeds > 1
             else f"{how}; one seed: no band")
    return _finish(fig, footer_text(s.runs if s.runs is not None else s.curves, extra),
                   f"{SPEEDUP_TITLE} ({TITLES.get(s.name, s.name).split(':')[0]})", out_dir, f"{s.name}_speedup")


def fig_overfit(s: Summary, out_dir: Path) -> list[Path]:
    """Overfit check (and the budget check, `long`): per run, P@1 on the evaluation subset (solid) and on
    the fixed training points (dashed) against train time and against epochs (epoch ends dotted); a
    marker at each test peak. One colour per learning rate when one system runs at several; one colour
    and marker per system (the suite's styles) when each system runs at one lr. One seed: no bands."""
    if s.curves is None or len(s.curves) == 0 or "train_p_at_1" not in s.curves.columns:
        return []
    import matplotlib.pyplot as plt
    df = s.curves.copy()
    df["lr"] = df.apply(run_lr, axis=1).astype(float)
    datasets = _uniq(df, "dataset") or [None]
    lrs = sorted(df["lr"].dropna().unique(), reverse=True)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.8, max(1, len(lrs))))
    by_system = df["label"].nunique() > 1 and int(df.groupby("label")["lr"].nunique().max()) == 1
    fig, axes = _new_fig(len(datasets), 2, w=4.6)
    for i, ds in enumerate(datasets):
        sub = df if ds is None else df[df["dataset"] == ds]
        for j, x in enumerate(("train_time_s", "epoch")):
            ax = axes[i][j]
            for lr, col in zip(lrs, colors):
                for _, c in sub[sub["lr"] == lr].groupby("run_id"):
                    c = c.sort_values(x)
                    st = style_for(c.iloc[0].to_dict())
                    cc, mk = (st.color, st.marker) if by_system else (col, "o")
                    lab = f"{c['label'].iloc[0]}, lr {lr:g}"
                    ax.plot(c[x], c["p_at_1"], color=cc, lw=1.6, label=f"{lab}: test (eval subset)")
                    ax.plot(c[x], c["train_p_at_1"], color=cc, lw=1.2, ls="--",
                            label=f"{lab}: training points")
                    k = int(np.argmax(c["p_at_1"].to_numpy(float)))
                    ax.plot(c[x].iloc[k], c["p_at_1"].iloc[k], mk, color=cc, ms=5)
            if x == "epoch":
                for e in range(1, int(np.floor(float(sub["epoch"].max()))) + 1):
                    ax.axvline(e, color="#999999", lw=0.7, ls=":")
            ax.set_xlabel("train time (s)" if x == "train_time_s" else "epochs (passes over the training set)")
            ax.set_ylabel("P@1")
            ax.set_title(f"{ds}: P@1 against {'train time' if x == 'train_time_s' else 'epochs'}")
            ax.set_ylim(bottom=0)
    frac = shared_legend(fig, axes)
    return _finish(fig, footer_text(s.runs if s.runs is not None else df), TITLES.get(s.name, s.name),
                   out_dir, s.name, legend_frac=frac)

