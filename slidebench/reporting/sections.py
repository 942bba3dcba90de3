"""Report sections beyond the per-experiment ones: the verdict table, SLIDE's speedup at every accuracy
level, the non-neural reference and the dense baseline's roofline. Markdown strings from summaries."""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from .catalogue import CLAIMS, PAPER_CLAIMS, REFERENCE_IN, TIMING_DRIFT, TITLES
from .speedup import speedup_text
from .summaries import Summary
from .verdict import verdict_table

__all__ = ["verdict_md", "speedup_levels_md", "reference_md", "roofline_md"]


def _esc(x) -> str:
    return str(x).replace("|", "/").replace("\n", " ")


def verdict_md(sums: Mapping[str, Summary]) -> str:
    """The table the report opens with: each claim, what this run measured, the rule's outcome."""
    t = verdict_table(sums, CLAIMS)
    lines = ["## Verdict", "",
             "Each of the paper's claims against this run. The outcome is decided by the rules in "
             "`slidebench/reporting/verdict.py` (tested), from the summaries below: a speedup measured "
             f"from both systems' times holds when it exceeds {TIMING_DRIFT:g}x in every seed and does not "
             f"hold when it is below 1/{TIMING_DRIFT:g} in every seed ({TIMING_DRIFT:g}x is how far a ratio of "
             "two times moved between a reference and its rerun of the same code on this machine, beyond "
             "its seeds' spread: `TIMING_DRIFT` in `slidebench/reporting/catalogue.py`); a bound (one system "
             "never reached the level) decides at 1. SLIDE never reaching the baseline's accuracy does not "
             "hold; a claim holds only under the paper's protocol when it holds "
             "against the 2019 release's configuration of the baseline and does not hold against the tuned one "
             "(inconclusive against the tuned one stays inconclusive). "
             "Speedups are baseline time / SLIDE time to the highest accuracy level the baseline reached "
             "in every seed (median [min, max] over seeds; `>`: lower bound, the baseline did not reach it "
             "within its budget; `<`: upper bound, SLIDE did not).", "",
             "| claim (paper) | this run measured | verdict |", "|---|---|---|"]
    for r in t.itertuples():
        lines.append(f"| {_esc(r.paper)} | {_esc(r.measured)} | **{_esc(r.verdict)}** |")
    return "\n".join(lines) + "\n"


def speedup_levels_md(sp: pd.DataFrame | None) -> str:
    """SLIDE's speedup over each baseline at every accuracy level: one row per (data set, SLIDE,
    baseline), one column per level."""
    if sp is None or len(sp) == 0:
        return ""
    levels = sorted(sp["level_frac"].astype(float).unique())
    method = str(sp["method"].iloc[0]) if "method" in sp.columns else "interpolate"
    how = ("interpolated linearly in train time between the evaluations around the level"
           if method == "interpolate" else "the first evaluation at or over the level")
    head = ["data set", "SLIDE", "baseline"] + [f"{f:.0%}" for f in levels]
    lines = [f"SLIDE's speedup at every accuracy level (baseline time / SLIDE time to a fraction of the "
             f"best P@1 a system reached (its median over seeds of each run's best); time to a level {how}; "
             "median [min, max] over seeds; "
             "`>` lower bound: the baseline did not reach the level within its budget in some seed; "
             "`<` upper bound: SLIDE did not; `neither reached`):", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    keys = [c for c in ("dataset", "slide", "baseline") if c in sp.columns]
    for key, g in sp.groupby(keys, sort=True):
        g = g.set_index(g["level_frac"].astype(float))
        cells = [speedup_text(g.loc[f]) if f in g.index else "-" for f in levels]
        lines.append("| " + " | ".join(_esc(k) for k in key) + " | " + " | ".join(cells) + " |")
    best = sp.groupby("dataset")["level_p1"].max() if "dataset" in sp.columns else pd.Series(dtype=float)
    if len(best):
        lines += ["", "Best P@1 (evaluation subset) reached by any system: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in best.items()) + "."]
    return "\n".join(lines) + "\n"


def reference_md(ref: pd.DataFrame | None, sums: Mapping[str, Summary]) -> str:
    """The non-neural reference per data set beside the best final P@1 of the neural systems."""
    lines = [f"## {TITLES['reference']}", ""]
    if ref is None or len(ref) == 0:
        return "\n".join(lines + ["**MISSING**: no `summary/reference.csv` (run `python -m slidebench run "
                                  "experiments/reference.toml`; needs the `reference` extra: omikuji).", ""])
    best: dict[str, tuple[str, float]] = {}
    for s in (sums[n] for n in REFERENCE_IN if n in sums):
        if s.runs is None or len(s.runs) == 0 or "final_p_at_1" not in s.runs.columns:
            continue
        g = s.runs.groupby(["dataset", "label"])["final_p_at_1"].mean().dropna()
        for (ds, lab), v in g.items():
            if ds not in best or v > best[ds][1]:
                best[ds] = (lab, float(v))
    lines += ["Trained once per data set on the same training split, scored on the full test set. It says "
              "what accuracy the data allows; its training time is not comparable with the budgets above "
              "(another algorithm, its own threads).", "",
              "| data set | features | labels | train points | library | P@1 | P@3 | P@5 | train s | "
              f"best final P@1 in {'/'.join(REFERENCE_IN)} (label) | params |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ref.itertuples():
        b = best.get(str(r.dataset))
        lines.append(f"| {r.dataset} | {int(r.n_features):,} | {int(r.n_labels):,} | {int(r.n_train):,} | "
                     f"{r.library} {r.version} | {r.p_at_1:.3f} | {r.p_at_3:.3f} | {r.p_at_5:.3f} | "
                     f"{r.train_seconds:.1f} | {f'{b[1]:.3f} ({b[0]})' if b else '-'} | {_esc(r.params)} |")
    lines += ["", f"Paper context: {PAPER_CLAIMS['reference']}", ""]
    return "\n".join(lines)


def roofline_md(roof: pd.DataFrame | None) -> str:
    """The dense baseline's achieved FLOP rate on the output layer against SGEMM of the same shape."""
    if roof is None or len(roof) == 0:
        return ""
    lines = [f"## {TITLES['roofline']}", "",
             "TF full softmax's achieved FLOP rate on the output layer against numpy SGEMM on the same "
             "shape, measured in the same run: a baseline near its roofline is an honest one.", "",
             "| labels | threads | TF GFLOP/s | SGEMM GFLOP/s | fraction of SGEMM | OPENBLAS_CORETYPE |",
             "|---|---|---|---|---|---|"]
    for r in roof.itertuples():
        ct = "-" if pd.isna(r.openblas_coretype) or str(r.openblas_coretype) == "" else r.openblas_coretype
        lines.append(f"| {int(r.n_labels):,} | {int(r.threads)} | {r.tf_gflops:.0f} | {r.sgemm_gflops:.0f} | "
                     f"{r.fraction:.0%} | {ct} |")
    low = roof[roof["fraction"].astype(float) < 0.6]
    if len(low):
        lines += ["", f"Below 60% of SGEMM at {', '.join(f'{int(n):,}' for n in low['n_labels'])} labels."]
    return "\n".join(lines) + "\n"
