"""Figures of the micro-experiments: samplers (fig4), hard threshold (fig11), insertion (tab3)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .catalogue import OPERATION_NAMES, TAB3_PAPER
from .drawing import _finish, _new_fig, plain_log_axis
from .formatting import _uniq, _val, footer_text
from .style import style_for
from .summaries import Summary

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
            plain_log_axis(ax, "y")
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
    ax.set_xticklabels([OPERATION_NAMES.get(o, o) for o in d["operation"]], fontsize=7)
    plain_log_axis(ax, "y")
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


