"""results/REPORT.md, generated from the summaries (results/summary/*.csv) and figures.

Per experiment: what it measures, a table (time to target with spread over seeds, final P@1/P@3/P@5
on the full test set, throughput), speedup ratios of SLIDE over each baseline, the paper's claim next
to this run's measurement, and the figure(s) embedded by relative path. Experiments without a
summary are listed as missing (the report never fails because one experiment did not run).
The report opens with the verdict table (``verdict.py``: rules in code). It reads summaries only:
never results/raw (the run manifest comes from ``summary/<exp>_manifest.json``, kept by summarize).
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .catalogue import DESCRIPTIONS, PAPER_CLAIMS, PLATEAU_EXPERIMENTS, SPEEDUP_EXPERIMENTS, TAB3_PAPER, TITLES
from .formatting import _val, footer_text, hard_threshold_prob
from .plateau import plateau_md
from .sections import reference_md, roofline_md, speedup_levels_md, verdict_md
from .speedup import variant_labels
from .summaries import Summary, available_experiments, load_reference, load_roofline, load_summary
from .tables import _fmt, _group_cols, _md_table, group_table, olympic_mean, speedups  # noqa: F401

__all__ = ["write_report", "render_report", "PAPER_CLAIMS", "TITLES", "group_table", "speedups",
           "olympic_mean"]

# ---------------------------------------------------------------------------------- measurements


def _measurement_train(name: str, tab: pd.DataFrame, sp: pd.DataFrame, has_target: bool = True) -> str:
    """A short summary of what this run measured that corresponds to the paper's claim (the full
    ratios are in the speedup table): primary SLIDE label (first in style order) vs each baseline."""
    if len(tab) == 0:
        return "no finished runs."
    out = []
    if len(sp) and (variant_labels(tab) != tab["label"].astype(str)).any():
        # a sweep: each system's best member by final P@1 (the speedup table pairs them all)
        for sysname, g in tab.groupby("system", sort=True):
            best = g.sort_values("p1_mean", ascending=False).iloc[0]
            params = ", ".join(f"{c.removeprefix('param_')} {_val(best[c])}" for c in tab.columns
                               if c.startswith("param_") and _val(best[c]) != "-")
            out.append(f"{best['label']} at its best {params}: final P@1 {_fmt(best['p1_mean'])}")
        return "highest final P@1 per system: " + "; ".join(out) + "."
    if len(sp):
        from .style import sort_key
        slides = tab[tab["system"] == "slide"]
        prim = sorted(slides.itertuples(), key=lambda r: sort_key(r.system, r.config, r.device))
        prim_label = prim[0].label if prim else None
        for _, r in sp[sp["slide"] == prim_label].iterrows():
            ctx = ", ".join(f"{pre}{_val(r[c])}{suf}" for c, pre, suf in
                            (("dataset", "", ""), ("n_threads", "", " threads"), ("batch_size", "batch ", ""),
                             ("protocol", "protocol ", ""))
                            if c in sp.columns and (c != "protocol" or name == "protocol"))
            if not has_target:
                ttt = "no target P@1 set"
            elif np.isfinite(r["ttt_ratio"]):
                ttt = f"{r['ttt_ratio']:.2f}x time to target"
            elif np.isfinite(r.get("ttt_lower_bound", float("nan"))):
                ttt = f"more than {r['ttt_lower_bound']:.2f}x time to target ({r['baseline']} did not reach it)"
            else:
                ttt = "time to target not measurable (SLIDE did not reach the target)"
            out.append(f"{ctx}: {r['baseline']}/{r['slide']} {ttt}, {_fmt(r['throughput_ratio'], 2)}x throughput, "
                       f"P@1 {r['p1_diff']:+.3f}")
        return "; ".join(out) + "."
    best = tab.sort_values("p1_mean", ascending=False).iloc[0]
    params = ", ".join(f"{c.removeprefix('param_')}={_val(best[c])}" for c in tab.columns
                       if c.startswith("param_") and _val(best[c]) != "-")
    return f"highest final P@1: {best['label']}{' (' + params + ')' if params else ''}: {_fmt(best['p1_mean'])}."


def _micro_section(s: Summary) -> tuple[str, str]:
    """(table markdown, measurement sentence) for a micro experiment."""
    df = s.micro
    if df is None or len(df) == 0:
        return "", "no rows."
    if s.name == "fig4":
        cols = [("what", "cost of"), ("sampler", "sampler"), ("us_per_sample", "us/sample (median)"),
                ("us_per_sample_min", "min"), ("us_per_sample_max", "max")]
        if "active_mean" in df.columns:
            cols.append(("active_mean", "mean active neurons"))
        parts = []
        for what, name in (("kernel", "sampler kernels alone"), ("query", "query via Python"),
                           ("train", "training step")):
            q = df[df["what"] == what].set_index("sampler")["us_per_sample"] if "what" in df else pd.Series()
            if len(q):
                parts.append(f"{name}: " + ", ".join(f"{k} {_fmt(v, 2)} us" for k, v in q.items()))
        return _md_table(df, cols), ("per sample, " + "; ".join(parts) + ".") if parts else ""
    if s.name == "fig11":
        me = df[df["source"] == "measured"].copy()
        if len(me) == 0:
            return "", "no measured points."
        me["analytic"] = [float(hard_threshold_prob(p, int(L), int(m))) for p, L, m in
                          zip(me["p"], me["L"], me["m"])]
        me["abs_err"] = (me["prob"] - me["analytic"]).abs()
        agg = me.groupby("m").agg(points=("p", "size"), pairs=("n_pairs", "sum"),
                                  max_abs_err=("abs_err", "max"), mean_abs_err=("abs_err", "mean")).reset_index()
        tab = _md_table(agg, [("m", "m"), ("points", "p bins"), ("pairs", "(query, neuron) pairs"),
                              ("mean_abs_err", "mean |measured - analytic|"),
                              ("max_abs_err", "max |measured - analytic|")])
        return tab, (f"measured selection probabilities deviate from the analytic curves by at most "
                     f"{me['abs_err'].max():.3f} (mean {me['abs_err'].mean():.3f}) over {len(me)} points.")
    if s.name == "tab3":
        df = df.copy()
        df["paper_s"] = [TAB3_PAPER.get(o, float("nan")) for o in df["operation"]]
        tab = _md_table(df, [("operation", "operation"), ("seconds_median", "seconds (median)"),
                             ("seconds_min", "min"), ("seconds_max", "max"), ("paper_s", "paper (44 cores)")])
        d = df.set_index("operation")["seconds_median"]
        parts = [f"{k} {_fmt(v)} s" for k, v in d.items()]
        n = int(df["n_neurons"].iloc[0]) if "n_neurons" in df else None
        return tab, f"{', '.join(parts)}" + (f" for {n:,} neurons" if n else "") + "."
    cols = [(c, c) for c in df.columns[:10]]
    return _md_table(df, cols), ""


# ------------------------------------------------------------------------------------ manifest


def _manifest_section(results_dir: Path, summaries: list[Summary]) -> str:
    lines = ["## Environment", ""]
    hosts = []
    for s in summaries:
        df = s.runs if s.runs is not None else s.micro
        if df is None or len(df) == 0:
            continue
        for c in ("host_cpu", "cores", "device"):
            if c not in df.columns:
                df = df.assign(**{c: np.nan})
        for (cpu, cores), g in df.groupby(["host_cpu", "cores"], dropna=False):
            hosts.append((s.name, str(cpu), _val(cores), ",".join(sorted(set(map(str, g["device"].dropna()))))
                          or "-"))
    if hosts:
        lines.append("| experiment | CPU | cores | devices |")
        lines.append("|---|---|---|---|")
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in hosts]
        lines.append("")
    man = None
    saved = sorted((results_dir / "summary").glob("*_manifest.json")) if (results_dir / "summary").is_dir() else []
    if saved:
        man = json.loads(saved[0].read_text())
        lines.append(f"Manifest of the runs, kept by `summarize` in `summary/{saved[0].name}`:")
    else:
        try:
            from ._harness import manifest as _m
            fn = getattr(_m, "collect_manifest", None) or getattr(_m, "manifest", None) \
                or getattr(_m, "collect", None)
            man = fn() if callable(fn) else None
        except Exception as e:  # the report still renders; say why the manifest is absent
            lines.append(f"(no run logs and the manifest could not be collected: {type(e).__name__}: {e})")
        if man is not None:
            lines.append("No run manifest in the summaries; manifest of the machine that wrote this report:")
    if man is not None:
        lines += ["", "```json", json.dumps(man, indent=1, sort_keys=True, default=str)[:6000], "```"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- render


def _figures_for(results_dir: Path, name: str, experiments: set[str] | frozenset[str]) -> list[Path]:
    """`name`.png and its companions (`name`_speedup.png), but not the figures of another of
    ``experiments`` whose name extends this one (`long` must not show `long_delicious` or `long_sampled`)."""
    fdir = results_dir / "figures"
    if not fdir.is_dir():
        return []
    longer = [o for o in experiments if o.startswith(name + "_")]

    def mine(stem: str) -> bool:
        if not (stem == name or stem.startswith(name + "_")):
            return False
        return not any(stem == o or stem.startswith(o + "_") for o in longer)

    return sorted(p for p in fdir.glob(f"{name}*.png") if mine(p.stem))


def _experiment_names(results_dir: Path) -> set[str]:
    """Every experiment a figure may belong to: the catalogue's and any with a summary here."""
    return set(TITLES) | set(available_experiments(results_dir))


def _section(results_dir: Path, s: Summary, evidence: pd.DataFrame | None = None,
             experiments: set[str] | frozenset[str] = frozenset()) -> str:
    title = TITLES.get(s.name, s.name)
    lines = [f"## {title}", ""]
    if not s.present:
        lines += [f"**MISSING**: no summary for `{s.name}` under `{results_dir / 'summary'}` "
                  f"(run `python -m slidebench run experiments/{s.name}.toml` then `python -m slidebench "
                  f"summarize {s.name}`).", ""]
        if s.name in PAPER_CLAIMS:
            lines += [f"Paper: {PAPER_CLAIMS[s.name]}", ""]
        return "\n".join(lines)
    if s.name in DESCRIPTIONS:
        lines += [DESCRIPTIONS[s.name], ""]
    df = s.runs if s.runs is not None else s.micro
    lines += [f"*Conditions*: {footer_text(df)}", ""]
    if s.is_micro and s.runs is None:
        tab, meas = _micro_section(s)
        lines += [tab, ""]
    else:
        tab = group_table(s.runs) if s.runs is not None else pd.DataFrame()
        sp = speedups(tab)
        has_target = s.runs is not None and "target_p_at_1" in s.runs and s.runs["target_p_at_1"].notna().any()
        meas = _measurement_train(s.name, tab, sp, has_target)
        if len(tab):
            if "statuses" in tab and (tab["n_complete"] < tab["n_seeds"]).any():
                lines += ["Some runs are incomplete (killed or still running); their last logged state "
                          "is used.", ""]
            cols = [(c, c.removeprefix("param_")) for c in _group_cols(s.runs)]
            cols += [("n_seeds", "seeds"), ("statuses", "status"), ("ttt", "time to target s, olympic mean [min, max] (reached)"),
                     ("p1", "final P@1 (mean ± sd)"), ("p3_mean", "P@3"), ("p5_mean", "P@5"),
                     ("throughput", "samples/s"), ("train_time_s", "train s")]
            if "target_p_at_1" in s.runs:
                tg = s.runs.dropna(subset=["target_p_at_1"])
                per = (tg.groupby("dataset")["target_p_at_1"].first() if "dataset" in tg
                       else pd.Series(dtype=float))
                if len(per) > 1:
                    txt = ", ".join(f"{float(v):g} ({k})" for k, v in per.items())
                elif len(tg):
                    txt = f"{float(tg['target_p_at_1'].iloc[0]):g}"
                else:
                    txt = ""
                if txt:
                    lines += [f"Target P@1: {txt} (evaluation subset). Final P@k on the full test set.", ""]
            lines += [_md_table(tab, cols), ""]
        if len(sp):
            lines += ["Speedup of SLIDE (baseline time to target / SLIDE time to target; throughput ratio "
                      "SLIDE / baseline):", "",
                      _md_table(sp, [(c, c) for c in ("dataset", "n_threads", "batch_size", "protocol")
                                     if c in sp.columns] + [("slide", "SLIDE"), ("baseline", "baseline"),
                                                            ("ttt_ratio_txt", "ttt ratio"),
                                                            ("throughput_ratio", "throughput ratio"),
                                                            ("p1_diff", "P@1 SLIDE - baseline")]), ""]
    if s.name in SPEEDUP_EXPERIMENTS and s.speedup is not None and len(s.speedup):
        lines += [speedup_levels_md(s.speedup), ""]
    if s.name in PLATEAU_EXPERIMENTS:
        # evidence: the experiment's own training-point P@1 when it scored them, else the overfit experiment's
        own = s.curves is not None and "train_p_at_1" in s.curves.columns
        pl = (plateau_md(s.curves, s.curves, evidence_from="this experiment's own runs") if own
              else plateau_md(s.curves, evidence))
        if pl:
            lines += [pl, ""]
    if s.name in PAPER_CLAIMS:
        lines += ["| paper claims | this run measured |", "|---|---|",
                  f"| {PAPER_CLAIMS[s.name]} | {meas.replace(chr(10), ' ').replace('|', '/') or '-'} |", ""]
    elif meas:
        lines += [meas, ""]
    for fig in _figures_for(results_dir, s.name, experiments):
        rel = fig.relative_to(results_dir)
        lines += [f"![{fig.stem}]({rel.as_posix()})", ""]
        pdf = fig.with_suffix(".pdf")
        if pdf.exists():
            lines += [f"([PDF]({pdf.relative_to(results_dir).as_posix()}))", ""]
    return "\n".join(lines)


def render_report(results_dir: str | Path = "results", experiments: Sequence[str] | None = None) -> str:
    """The report as a Markdown string (see ``write_report``)."""
    results_dir = Path(results_dir)
    names = list(experiments) if experiments else available_experiments(results_dir)
    summaries = [load_summary(results_dir, n) for n in names]
    present = [s.name for s in summaries if s.present]
    missing = [s.name for s in summaries if not s.present]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# slidebench report", "",
        f"Generated {now} by `python -m slidebench report` from `{results_dir}/summary` "
        f"(figures in `{results_dir}/figures`). Numbers are this machine's; the paper's claims are quoted "
        "beside them (Chen et al., MLSys 2020, arXiv:1903.03129; docs/figures.md). Timings on a small or shared machine are noisy: "
        "read ratios measured in the same run, not absolute seconds.", "",
        f"Experiments present: {', '.join(present) or 'none'}.",
        f"Experiments missing: {', '.join(missing) or 'none'}.", "",
    ]
    evidence = next((x.curves for x in summaries if x.name == "overfit"), None)
    if evidence is None and any(x.name in SPEEDUP_EXPERIMENTS for x in summaries):
        evidence = load_summary(results_dir, "overfit").curves     # a report of fig5/fig7 alone still reads it
    all_names = _experiment_names(results_dir)
    body = [_section(results_dir, s, evidence, all_names) for s in summaries]
    extra = [reference_md(load_reference(results_dir), {s.name: s for s in summaries}),
             roofline_md(load_roofline(results_dir))]
    return ("\n".join(head) + "\n" + verdict_md({s.name: s for s in summaries}) + "\n" + "\n".join(body) + "\n"
            + "\n".join(e for e in extra if e) + "\n" + _manifest_section(results_dir, summaries))


def write_report(results_dir: str | Path = "results", experiments: Sequence[str] | None = None) -> Path:
    """Write results_dir/REPORT.md and return its path."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    text = render_report(results_dir, experiments)
    out = results_dir / "REPORT.md"
    out.write_text(text)
    print(f"[report] wrote {out}", file=sys.stderr, flush=True)
    return out
