"""The verdict on each of the paper's claims, decided by rules in code (tested), never hand-written.

``judge(claim, summaries)`` returns a ``Verdict``: what this run measured (a ratio with its spread over
seeds) and one of the outcomes below. A rule sees summaries only (``Summary`` objects).

Direction rules on a speedup (baseline time / SLIDE time to the same accuracy, per seed), with
``D = catalogue.TIMING_DRIFT``, the run-to-run drift of a time ratio on one machine (measured, see there):
* exact over every seed: min > D -> holds; max < 1/D -> does not hold; otherwise inconclusive;
* a lower bound (the baseline never reached the level in some seed): min > 1 -> holds, else inconclusive;
* an upper bound (SLIDE never reached it in some seed): max < 1 -> does not hold, else inconclusive.
A claim tested against a tuned baseline that does not hold against it but does against the 2019
release's configuration of that baseline reads "holds only under the paper's protocol"; one that is
inconclusive against the tuned baseline stays inconclusive whatever the 2019 configuration says.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from .catalogue import ACCURACY_TOLERANCE, CLAIMS, TF_FULL_GPU, TIMING_DRIFT, Claim, Selector
from .speedup import bound_str, speedup_text, variant_labels
from .summaries import Summary, run_params

__all__ = ["Verdict", "judge", "verdict_table", "direction", "RULES", "HOLDS", "NOT_HOLDS", "PAPER_ONLY",
           "NOT_MEASURED", "INCONCLUSIVE", "MIXED"]

HOLDS = "holds"
NOT_HOLDS = "does not hold"
PAPER_ONLY = "holds only under the paper's protocol"
NOT_MEASURED = "not measured here"
INCONCLUSIVE = "inconclusive (not every seed clear of parity)"
UNDECIDED = "inconclusive"          # a claim the run's accuracy cannot decide (the note says why)
MIXED = "mixed"


@dataclass
class Verdict:
    measured: str
    outcome: str
    note: str = ""


def direction(lo: float, hi: float, bound: str = "", drift: float = TIMING_DRIFT) -> str:
    """The outcome of a speedup whose seeds span [lo, hi]; ``bound`` as in the speedup table. A ratio of
    two measured times must clear ``drift`` (>= 1) in every seed; a one-sided bound must clear 1."""
    bound = bound_str(bound)
    if bound == "neither" or not (np.isfinite(lo) and np.isfinite(hi)):
        return NOT_MEASURED
    if drift < 1:
        raise ValueError(f"drift must be >= 1 (a factor), got {drift}")
    if bound == ">":
        return HOLDS if lo > 1 else INCONCLUSIVE
    if bound == "<":
        return NOT_HOLDS if hi < 1 else INCONCLUSIVE
    if bound != "":                  # "mixed": bounds of both kinds over the seeds decide nothing
        return INCONCLUSIVE
    if lo > drift:
        return HOLDS
    if hi < 1 / drift:
        return NOT_HOLDS
    return INCONCLUSIVE


def _select(sp: pd.DataFrame, sel: Selector, dataset: str) -> pd.DataFrame:
    if sp is None or len(sp) == 0:
        return pd.DataFrame()
    m = [sel.matches(s, c, d) for s, c, d in zip(sp["baseline_system"], sp["baseline_config"],
                                                 sp["baseline_device"])]
    out = sp[np.array(m, dtype=bool)]
    if dataset:
        out = out[out["dataset"].astype(str).str.startswith(dataset)]
    if "slide_config" in out.columns and len(out):      # SLIDE's own default, not its 2019 config
        own = out[out["slide_config"].astype(str) != "paper"]
        out = own if len(own) else out
    if len(out):
        out = out[out["slide"] == sorted(out["slide"].unique(), key=lambda s: (len(str(s)), str(s)))[0]]
    return out


def _at_baseline_accuracy(rows: pd.DataFrame) -> pd.Series | None:
    """The row at the highest level the baseline reached in every seed; where it reached none, the
    highest level SLIDE reached in every seed (the baseline's time there is a lower bound)."""
    if len(rows) == 0:
        return None
    rows = rows.sort_values("level_frac")
    full = rows[[_all(r) for r in rows["baseline_reached"]]]
    if len(full):
        return full.iloc[-1]
    sl = rows[[_all(r) for r in rows["slide_reached"]]]
    return sl.iloc[-1] if len(sl) else rows.iloc[0]


def _all(frac: str) -> bool:
    a, b = str(frac).split("/")
    return int(a) == int(b) and int(b) > 0


def _speedup_verdict(sp: pd.DataFrame, sel: Selector, dataset: str) -> tuple[str, str] | None:
    rows = _select(sp, sel, dataset)
    per_ds = []
    for ds, g in rows.groupby("dataset", sort=True) if len(rows) else []:
        r = _at_baseline_accuracy(g)
        out = direction(r["speedup_min"], r["speedup_max"], r["bound"])
        if _all(r["baseline_reached"]) and str(r["slide_reached"]).startswith("0/"):
            out = NOT_HOLDS          # SLIDE never reaches the baseline's accuracy within its budget
        per_ds.append((ds, out, f"{ds}: {speedup_text(r)} to P@1 {r['level_p1']:.3f} "
                                f"({r['level_frac']:.0%} of the best; {r['baseline']} reached it in "
                                f"{r['baseline_reached']} seeds, {r['slide']} in {r['slide_reached']})"))
    if not per_ds:
        return None
    outs = {o for _, o, _ in per_ds}
    outcome = outs.pop() if len(outs) == 1 else MIXED + ": " + "; ".join(f"{o} on {d}" for d, o, _ in per_ds)
    return outcome, "; ".join(t for _, _, t in per_ds)


#: Finds a claim's verdict in a speedup table: (speedups, baseline, data set) -> (outcome, measured) or None.
Finder = Callable[[pd.DataFrame, Selector, str], tuple[str, str] | None]


def _no_baseline(s: Summary, sel: Selector) -> Verdict:
    if sel.device == "gpu":
        return Verdict("no GPU run (TF-GPU rows skipped: no GPU on this machine)", NOT_MEASURED + " (no GPU)")
    return Verdict(f"no {sel.system} ({sel.config or 'any'} config) run in {s.name}", NOT_MEASURED)


def _paper_fallback(v: Verdict, s: Summary, claim: Claim, finder: Finder) -> Verdict:
    """Tuned baseline says no; the 2019 release's configuration of it says yes -> paper only. "No" means
    does not hold: where the tuned baseline leaves the claim inconclusive, the run has not shown that the
    claim fails against it, so the outcome stays inconclusive (the 2019 config's ratios are quoted)."""
    if claim.paper_baseline is None or v.outcome == HOLDS:
        return v
    pv = finder(s.speedup, claim.paper_baseline, claim.dataset)
    if pv is None:
        return v
    v.measured += f". Against the 2019 release's config: {pv[1]}"
    if pv[0] == HOLDS and v.outcome == NOT_HOLDS:
        v.outcome = PAPER_ONLY
    return v


def _judge_speedups(claim: Claim, sums: Mapping[str, Summary], finder: Finder) -> Verdict:
    """The claim's experiment's speedups over its baseline, judged by ``finder`` (outcome, measured text);
    where the tuned baseline says no, against the 2019 release's configuration of it too."""
    s = sums.get(claim.experiment)
    if s is None or not s.present or s.speedup is None:
        return Verdict(f"{claim.experiment} not run", NOT_MEASURED)
    r = finder(s.speedup, claim.baseline, claim.dataset)
    if r is None:
        return _no_baseline(s, claim.baseline)
    return _paper_fallback(Verdict(r[1], r[0]), s, claim, finder)


def rule_speedup_to_baseline_accuracy(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    v = _judge_speedups(claim, sums, _speedup_verdict)
    if v.outcome == HOLDS and claim.paper_factor:      # the paper's factor outside this run's spread
        r = _at_baseline_accuracy(_select(sums[claim.experiment].speedup, claim.baseline, claim.dataset))
        f = claim.paper_factor        # the run's ratio against the paper's, by the same rule as against 1
        against = direction(float(r["speedup_min"]) / f, float(r["speedup_max"]) / f, r["bound"])
        if against == HOLDS:
            v.note = f"larger than the paper's {f:g}x"
        elif against == NOT_HOLDS:
            v.note = f"smaller than the paper's {f:g}x"
        elif bound_str(r["bound"]) == ">":      # the baseline never got there: only a lower bound
            v.note = (f"a lower bound; the baseline did not reach this accuracy in its budget, so the "
                      f"paper's {f:g}x is neither confirmed nor ruled out")
    return v


def _best_variants(curves: pd.DataFrame, dataset: str) -> set[str]:
    """In a swept experiment's curves, each system's best sweep member on ``dataset``: the variant label
    ("SLIDE (lr 0.002)") with the highest median over seeds of each run's best P@1, ties broken by the
    median final P@1. The same rule for every system, so no system is picked more kindly."""
    if curves is None or len(curves) == 0:
        return set()
    c = curves[curves["dataset"].astype(str).str.startswith(dataset)] if dataset else curves
    c = c.dropna(subset=["p_at_1"])
    if len(c) == 0:
        return set()
    c = c.assign(variant=variant_labels(c))
    per_run = c.sort_values("train_time_s").groupby(["system", "variant", "run_id"], sort=True)["p_at_1"]
    runs = pd.DataFrame({"best": per_run.max(), "final": per_run.last()}).reset_index()
    per_var = runs.groupby(["system", "variant"], sort=True)[["best", "final"]].median().reset_index()
    return {str(g.sort_values(["best", "final"], ascending=False).iloc[0]["variant"])
            for _, g in per_var.groupby("system", sort=True)}


def rule_gpu_stand_in(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    """SLIDE on CPU against a dense softmax on a GPU. fig5's TF-GPU rows decide where TensorFlow saw a
    GPU; otherwise the GPU experiments' stand-in (``extra["stand_in"]``: its selector and the experiments
    to read, the learning-rate check first). A swept experiment is judged between each system's best
    sweep member (``_best_variants``); what the others measured is appended."""
    v = rule_speedup_to_baseline_accuracy(claim, sums)
    if not v.outcome.startswith(NOT_MEASURED):
        return v
    sel, exps, what = claim.extra["stand_in"]
    found: list[tuple[str, str, str]] = []
    for exp in exps:
        s = sums.get(exp)
        if s is None or not s.present or s.speedup is None or len(s.speedup) == 0:
            continue
        sp = s.speedup
        best = _best_variants(s.curves, claim.dataset)
        if len(best) > 1 and ({*sp["slide"].astype(str)} | {*sp["baseline"].astype(str)}) & best:
            sp = sp[sp["slide"].astype(str).isin(best) & sp["baseline"].astype(str).isin(best)]
        r = _speedup_verdict(sp, sel, claim.dataset)
        if r is not None:
            seeds = int(s.runs["seed"].nunique()) if s.runs is not None and "seed" in s.runs else 0
            found.append((exp, r[0], f"{exp} ({seeds} seed{'s' if seeds != 1 else ''}): {r[1]}"))
    if not found:
        return v
    return Verdict(f"{what}. " + ". ".join(t for _, _, t in found), found[0][1],
                   f"decided by {found[0][0]}" if len(found) > 1 else "")


def rule_gpu_from_cores(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    """"SLIDE beats the GPU from C cores" on a data set: judged as the GPU claim there, on the GPU
    machine's cores. Behind the GPU on N >= C cores means behind on C too (fewer threads are slower:
    docs/engine.md, "On 16 cores"), so it does not hold; ahead on N > C cores says nothing about C."""
    cores = int(claim.extra["cores"])
    v = rule_gpu_stand_in(replace(claim, rule="gpu_stand_in", experiment="fig5", baseline=TF_FULL_GPU), sums)
    threads = [int(t) for e in claim.extra["stand_in"][1] if (x := sums.get(e)) is not None and x.present
               and x.runs is not None and "n_threads" in x.runs
               for t in x.runs.loc[x.runs["system"] == "slide", "n_threads"].dropna()]
    if not threads or v.outcome.startswith(NOT_MEASURED):
        return Verdict("-", f"{NOT_MEASURED} ({claim.extra.get('why', 'needs a GPU')})")
    n = min(threads)
    measured = f"SLIDE on {n} cores against the GPU ({claim.dataset}): {v.measured}"
    if v.outcome == NOT_HOLDS and n >= cores:
        return Verdict(measured, NOT_HOLDS, f"behind the GPU on {n} cores, so behind on {cores}; "
                                            f"{claim.extra.get('rest', '')}".rstrip("; "))
    if v.outcome == HOLDS and n == cores:
        return Verdict(measured, HOLDS)
    return Verdict(measured, f"{NOT_MEASURED} (SLIDE ran on {n} cores, the claim is about {cores})")


def _every_level(sp: pd.DataFrame, sel: Selector, dataset: str) -> tuple[str, str] | None:
    rows = _select(sp, sel, dataset)
    rows = rows[rows["bound"].fillna("").astype(str) != "neither"] if len(rows) else rows
    if len(rows) == 0:
        return None
    outs = [direction(r.speedup_min, r.speedup_max, r.bound) for r in rows.itertuples()]
    if all(o == HOLDS for o in outs):
        outcome = HOLDS
    elif any(o == NOT_HOLDS for o in outs):
        outcome = NOT_HOLDS
    else:
        outcome = INCONCLUSIVE
    parts = []
    rows = rows.assign(_out=outs)
    for ds, g in rows.groupby("dataset", sort=True):
        # the weakest and strongest level quoted are among those with a spread over seeds where there
        # are any (the top level is usually reached by one seed only, and a one-seed ratio has no
        # spread to check a rerun against); the outcome above still counts every level
        multi = g[g["speedup_max"].astype(float) > g["speedup_min"].astype(float)]
        q = multi if len(multi) else g
        lo = q.loc[q["speedup_median"].idxmin()]
        hi = q.loc[q["speedup_median"].idxmax()]
        bad = [f"{f:.0%}" for f, o in sorted(zip(g["level_frac"], g["_out"])) if o == NOT_HOLDS]
        parts.append(f"{ds}: median speedup {speedup_text(lo)} at {lo['level_frac']:.0%} .. "
                     f"{speedup_text(hi)} at {hi['level_frac']:.0%} of the best P@1"
                     + (f"; slower at {', '.join(dict.fromkeys(bad))}" if bad else ""))
    return outcome, "; ".join(parts)


def rule_faster_at_every_level(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    return _judge_speedups(claim, sums, _every_level)


def rule_faster_at_threads(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    s = sums.get(claim.experiment)
    if s is None or not s.present or s.speedup is None:
        return Verdict(f"{claim.experiment} not run", NOT_MEASURED)
    th = claim.extra.get("threads")
    sp = s.speedup[s.speedup["n_threads"].astype(float) == float(th)]
    r = _speedup_verdict(sp, claim.baseline, claim.dataset)
    if r is None:
        return Verdict(f"no run at {th} threads against {claim.baseline.system}", NOT_MEASURED)
    return Verdict(f"{th} threads: {r[1]}", r[0])


def rule_sampled_fraction(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    s = sums.get(claim.experiment)
    if s is None or s.runs is None or len(s.runs) == 0:
        return Verdict(f"{claim.experiment} not run", NOT_MEASURED)
    runs = s.runs
    sel = [claim.baseline.matches(a, b, c) for a, b, c in zip(runs["system"], runs["config"],
                                                             runs.get("device", pd.Series(["cpu"] * len(runs))))]
    tuned = runs[np.array(sel, dtype=bool)]
    fracs = [p.get("num_sampled") for p in (run_params(r) for _, r in tuned.iterrows())]
    fracs = [float(f) for f in fracs if f is not None]
    if not fracs:
        return Verdict("the tuned sampled fraction is not in the runs summary (no params column)", NOT_MEASURED)
    f = fracs[0]
    paper = claim.extra.get("paper_fraction", 0.2)
    measured = f"tuning chose {f:.0%} of the classes" if f < 1 else f"tuning chose {int(f)} sampled classes"
    if f >= 1:
        return Verdict(measured, NOT_MEASURED, "a count, not a fraction")
    # "to reach decent accuracy": the tuned sampled softmax's median final P@1 against the best system's
    # in the same experiment; below half of it, the chosen fraction says nothing about what is needed
    if "final_p_at_1" in runs and runs["final_p_at_1"].notna().any():
        p1 = pd.to_numeric(runs["final_p_at_1"], errors="coerce")
        own = float(p1[tuned.index].median())
        med = p1.groupby(runs["label"]).median().dropna()
        best_label, best = med.idxmax(), float(med.max())
        measured += f"; at it, TF sampled softmax reached P@1 {own:.3f} against {best:.3f} for {best_label}"
        if not own >= best / 2:
            return Verdict(measured, UNDECIDED,
                           "it never reached decent accuracy, taken as half the best system's P@1, so the run "
                           "cannot say what fraction that needs")
    outcome = HOLDS if paper / 2 <= f <= paper * 1.5 else NOT_HOLDS
    return Verdict(measured, outcome, "fraction chosen on a validation split, see experiments/fig7.toml")


def rule_lsh_beats_random(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    s = sums.get(claim.experiment)
    if s is None or s.runs is None or len(s.runs) == 0:
        return Verdict(f"{claim.experiment} not run", NOT_MEASURED)
    runs = s.runs[s.runs["system"] == "slide"].copy()
    ps = [run_params(r) for _, r in runs.iterrows()]
    runs["_sampler"] = [p.get("sampler") for p in ps]
    runs["_active"] = [p.get("active") for p in ps]
    # the LSH run outside any sweep: a sweep member's label gets its swept values appended; a plain
    # run's param_* columns may still be filled (summarize fills a swept key from every run's params)
    plain = variant_labels(runs) == runs["label"].astype(str)
    rnd = runs[runs["_sampler"] == "random"]
    if len(rnd) == 0:
        return Verdict("no random-active-set run", NOT_MEASURED)
    act = rnd["_active"].iloc[0]
    lsh = runs[(runs["_sampler"] == "vanilla") & (runs["_active"] == act) & plain]
    if len(lsh) == 0:
        return Verdict("no LSH run with the random run's active-set size", NOT_MEASURED)
    a, b = lsh["final_p_at_1"].astype(float), rnd["final_p_at_1"].astype(float)
    n = min(len(a), len(b))
    measured = (f"final P@1 (full test set) LSH {a.mean():.3f} vs random {b.mean():.3f} "
                f"({a.mean() - b.mean():+.3f}; {n} seed{'s' if n > 1 else ''})")
    if n > 1:
        outcome = HOLDS if a.min() > b.max() else NOT_HOLDS if a.max() < b.min() else INCONCLUSIVE
    else:
        d = a.mean() - b.mean()
        outcome = HOLDS if d > ACCURACY_TOLERANCE else NOT_HOLDS
        if abs(d) <= ACCURACY_TOLERANCE:
            return Verdict(measured, NOT_HOLDS, f"no difference beyond {ACCURACY_TOLERANCE} P@1")
    return Verdict(measured, outcome)


def rule_reservoir_faster(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    s = sums.get(claim.experiment)
    df = s.micro if s is not None else None
    if df is None or len(df) == 0 or "operation" not in df.columns:
        return Verdict(f"{claim.experiment} not run", NOT_MEASURED)
    d = df.set_index("operation")
    if not {"insert_fifo", "insert_reservoir"} <= set(d.index):
        return Verdict("no insertion rows", NOT_MEASURED)
    f, r = d.loc["insert_fifo"], d.loc["insert_reservoir"]
    ratio = float(f["seconds_median"]) / float(r["seconds_median"])
    measured = (f"FIFO {float(f['seconds_median']):.3g} s vs reservoir {float(r['seconds_median']):.3g} s "
                f"({ratio:.2g}x; paper {claim.paper_factor:.2g}x)")
    if float(r["seconds_max"]) < float(f["seconds_min"]):
        return Verdict(measured, HOLDS)
    if float(r["seconds_min"]) > float(f["seconds_max"]):
        return Verdict(measured, NOT_HOLDS)
    return Verdict(measured, "inconclusive (min..max ranges overlap)")


def rule_not_measurable(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    return Verdict("-", f"{NOT_MEASURED} ({claim.extra.get('why', 'outside this machine')})")


RULES: dict[str, Callable[[Claim, Mapping[str, Summary]], Verdict]] = {
    "speedup_to_baseline_accuracy": rule_speedup_to_baseline_accuracy,
    "faster_at_every_level": rule_faster_at_every_level,
    "faster_at_threads": rule_faster_at_threads,
    "sampled_fraction": rule_sampled_fraction,
    "lsh_beats_random": rule_lsh_beats_random,
    "reservoir_faster": rule_reservoir_faster,
    "not_measurable": rule_not_measurable,
    "gpu_stand_in": rule_gpu_stand_in,
    "gpu_from_cores": rule_gpu_from_cores,
}


def judge(claim: Claim, sums: Mapping[str, Summary]) -> Verdict:
    return RULES[claim.rule](claim, sums)


def verdict_table(sums: Mapping[str, Summary], claims=CLAIMS) -> pd.DataFrame:
    rows = []
    for c in claims:
        v = judge(c, sums)
        rows.append({"claim": c.id, "paper": c.text, "experiment": c.experiment, "measured": v.measured,
                     "verdict": v.outcome + (f" ({v.note})" if v.note else "")})
    return pd.DataFrame(rows)
