"""results/REPORT.md, generated from the summaries (results/summary/*.csv) and figures.

Per experiment: what it measures, a table (time to target with spread over seeds, final P@1/P@3/P@5
on the full test set, throughput), speedup ratios of SLIDE over each baseline, the paper's claim next
to this run's measurement, and the figure(s) embedded by relative path. Experiments without a
summary are listed as missing (the report never fails because one experiment did not run).
The environment manifest comes from the runs themselves (run_start records in results/raw/, or
the host columns of the runs CSVs).
"""
from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .summarize import olympic_mean  # noqa: F401 (re-exported: one definition for summaries and report)
from .plots import (KNOWN_EXPERIMENTS, Summary, _param_cols, _strcol, _val, available_experiments, footer_text,
                    hard_threshold_prob, load_summary)

__all__ = ["write_report", "render_report", "PAPER_CLAIMS", "TITLES", "group_table", "speedups",
           "olympic_mean"]

TITLES = {
    "fig5": "Fig 5: P@1 against wall-clock time and iterations, SLIDE vs TF full softmax",
    "fig7": "Fig 7: SLIDE vs TF sampled softmax",
    "fig8": "Fig 8: batch size 64 / 128 / 256",
    "fig9": "Fig 9: time to target against threads",
    "fig4": "Fig 4: cost of the sampling strategies",
    "fig11": "Fig 11: hard-threshold selection probability",
    "tab3": "Table 3: inserting every output neuron into the hash tables",
    "ablation": "Ablation: hash family, K/L, random active set",
    "protocol": "Protocol: fair vs the 2019 release's protocol",
}

# The paper's claims (Chen et al., MLSys 2020; collected in docs/figures.md), quoted next to what this run measured.
PAPER_CLAIMS = {
    "fig5": "SLIDE-CPU (44 cores) reaches the final accuracy 2.7x faster than TF-GPU (V100) on Amazon-670K "
            "(2 h vs 5.5 h) and 1.8x on Delicious-200K; about 8x faster than TF-CPU (unoptimised SLIDE).",
    "fig7": "TF sampled softmax needed about 20% of the classes sampled to reach decent accuracy and stayed "
            "behind SLIDE in accuracy against time.",
    "fig8": "Across batch sizes 64, 128 and 256 on Amazon-670K, SLIDE stays ahead of TF full and sampled "
            "softmax in P@1 against time.",
    "fig9": "Amazon: SLIDE beats TF-CPU from 2 cores and TF-GPU from 8 cores. Delicious: SLIDE beats TF-CPU "
            "from about 8 cores and TF-GPU between 16 and 32 cores.",
    "fig4": "Fig 4/12 compares the cost of vanilla, top-K and hard-threshold sampling; the paper uses "
            "vanilla sampling by default as the cheapest (top-K must rank the candidates by hit count).",
    "fig11": "With L=10 tables, a neuron with per-table collision probability p is selected by hard "
             "thresholding at m with probability 1 - BinomCDF(m-1; L, p): a sharp, tunable cut-off.",
    "tab3": "Inserting all 205,443 Delicious output neurons: 0.371 s with reservoir sampling, 0.762 s with "
            "FIFO, 18 s including hashing (44 cores).",
    "ablation": "Not a paper figure. Measured on the 2019 release (docs/figures.md): in it a control with 1,000 uniformly random "
                "output neurons per sample learned at least as fast per iteration as DWTA (P@1 0.53 vs "
                "0.49 after 1,560 batches on a 20k-label synthetic set); SimHash learned faster than DWTA.",
    "protocol": "Not a paper figure. The 2019 release timed only SLIDE's training steps but TF's batch "
                "building too, and evaluated intermediate accuracy on a prefix of the label-sorted test file.",
}

DESCRIPTIONS = {
    "fig5": "Each system trains for the same train-clock budget on the same batches; P@1 on the fixed "
            "evaluation subset is plotted against train time (log axis) and iterations. Lines: median "
            "over seeds; bands: min..max.",
    "fig7": "As fig5 with TF sampled softmax as the baseline.",
    "fig8": "The same systems at batch sizes 64, 128 and 256.",
    "fig9": "Time to the target P@1 (olympic mean over seeds, min..max) and throughput against thread "
            "count; on a 2-core machine only 1 and 2 threads can be measured.",
    "fig4": "Microseconds per sample of the LSH query alone (per sampler) and of a whole training step "
            "with each sampler (`random` and `full` as references), at the small scale's output size.",
    "fig11": "Analytic curves 1 - BinomCDF(m-1; L, p) and measured points: neurons are binned by their "
             "per-table collision probability with the query (estimated from many independent hash "
             "functions); the points are the fraction of (query, neuron) pairs that the engine's "
             "threshold query selected from L freshly built tables.",
    "tab3": "Wall time of inserting precomputed hash codes of every output neuron into the tables (FIFO, "
            "reservoir), of hashing them, and of a full rebuild (hashing + insertion); median of repeats.",
    "ablation": "SLIDE variants at one budget: hash family, K and L, and the `random` active set (the "
                "same number of uniformly random output neurons instead of LSH).",
    "protocol": "The same systems under the fair protocol and under the 2019 release's protocol.",
}


# -------------------------------------------------------------------------------------- numbers


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
        for _, s in slide.iterrows():
            for _, b in base.iterrows():
                r = dict(zip(ctx, key))
                r["slide"] = s["label"]
                r["baseline"] = b["label"]
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
        return (f"{_fmt(r['ttt_olympic_s'])} [{_fmt(r['ttt_min_s'])}, {_fmt(r['ttt_max_s'])}] "
                f"({int(r['n_reached'])}/{int(r['n_seeds'])})")
    if c == "p1":
        sd = r.get("p1_std")
        return f"{_fmt(r['p1_mean'])}" + (f" ± {_fmt(sd)}" if sd is not None and np.isfinite(sd) else "")
    if isinstance(v, float):
        return _fmt(v)
    if c.startswith("param_") or c in ("n_threads", "batch_size", "n_seeds"):
        return _val(v)
    return "-" if v is None else str(v).replace("|", "/")


# ---------------------------------------------------------------------------------- measurements


def _measurement_train(name: str, tab: pd.DataFrame, sp: pd.DataFrame, has_target: bool = True) -> str:
    """A short summary of what this run measured that corresponds to the paper's claim (the full
    ratios are in the speedup table): primary SLIDE label (first in style order) vs each baseline."""
    if len(tab) == 0:
        return "no finished runs."
    out = []
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
    params = ", ".join(f"{c.removeprefix('param_')}={_val(best[c])}" for c in tab.columns if c.startswith("param_"))
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
        from .plots import TAB3_PAPER
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


def _first_run_start(results_dir: Path) -> dict | None:
    raw = results_dir / "raw"
    if not raw.is_dir():
        return None
    for p in sorted(raw.rglob("*.jsonl"))[:50]:
        try:
            with open(p) as f:
                line = f.readline()
            rec = json.loads(line)
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("event", rec.get("type")) == "run_start":
            return rec
    return None


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
    rs = _first_run_start(results_dir)
    man = None
    saved = sorted((results_dir / "summary").glob("*_manifest.json")) if (results_dir / "summary").is_dir() else []
    if rs is not None:
        man = rs.get("manifest") or {k: v for k, v in rs.items() if k not in ("params",)}
        lines.append("Manifest of the first run log found (`run_start`):")
    elif saved:
        man = json.loads(saved[0].read_text())
        lines.append(f"Manifest of the runs, kept by `summarize` in `summary/{saved[0].name}`:")
    else:
        try:
            from . import manifest as _m
            fn = getattr(_m, "collect_manifest", None) or getattr(_m, "manifest", None) \
                or getattr(_m, "collect", None)
            man = fn() if callable(fn) else None
        except Exception as e:  # the report still renders; say why the manifest is absent
            lines.append(f"(no run logs and the manifest could not be collected: {type(e).__name__}: {e})")
        if man is not None:
            lines.append("No run logs under results/raw; manifest of the machine that wrote this report:")
    if man is not None:
        lines += ["", "```json", json.dumps(man, indent=1, sort_keys=True, default=str)[:6000], "```"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- render


def _figures_for(results_dir: Path, name: str) -> list[Path]:
    fdir = results_dir / "figures"
    if not fdir.is_dir():
        return []
    return sorted(p for p in fdir.glob(f"{name}*.png") if p.stem == name or p.stem.startswith(name + "_"))


def _section(results_dir: Path, s: Summary) -> str:
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
    if s.name in PAPER_CLAIMS:
        lines += ["| paper claims | this run measured |", "|---|---|",
                  f"| {PAPER_CLAIMS[s.name]} | {meas.replace(chr(10), ' ').replace('|', '/') or '-'} |", ""]
    elif meas:
        lines += [meas, ""]
    for fig in _figures_for(results_dir, s.name):
        rel = fig.relative_to(results_dir)
        lines += [f"![{s.name}]({rel.as_posix()})", ""]
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
    body = [_section(results_dir, s) for s in summaries]
    return "\n".join(head) + "\n" + "\n".join(body) + "\n" + _manifest_section(results_dir, summaries)


def write_report(results_dir: str | Path = "results", experiments: Sequence[str] | None = None) -> Path:
    """Write results_dir/REPORT.md and return its path."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    text = render_report(results_dir, experiments)
    out = results_dir / "REPORT.md"
    out.write_text(text)
    print(f"[report] wrote {out}", file=sys.stderr, flush=True)
    return out
