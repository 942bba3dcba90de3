"""Does a rerun reproduce the reference run? Compare the verdict tables of two results folders.

For every claim of the verdict table (``slidebench/reporting/verdict.py``), both runs' outcome and the
first speedup each measured (median [min, max] over seeds, as printed in REPORT.md); a claim
*agrees* when the outcomes are the same, and its ratio *stays within spread* when the rerun's median
lies inside the reference's stated spread (a claim without a ratio is judged on its outcome only).

The stated spread is the one the verdict rule uses: a ratio of two measured times, [min, max] over
seeds widened by ``TIMING_DRIFT`` (``slidebench/reporting/catalogue.py``: how far such a ratio moved
between a reference and its rerun of the same code on this machine), i.e. [min / D, max * D]; a lower
bound (``>``: the baseline never reached the level) claims only [min / D, inf), so a rerun whose lower
bound rose is consistent with it, and an upper bound (``<``) (0, max * D]. Each line also says whether
the rerun's median lies inside the seeds' own [min, max]; ``--drift 1`` makes that the check.

A speedup is a ratio at an accuracy level (a fraction of the best P@1 in the run), and the verdict picks
the highest level the baseline reached in every seed, which can move between runs (delicious: 70% of
the best in one run, 60% in its rerun). Ratios at different levels measure different things, so the
rerun's ratio is compared at the reference's level, read from the rerun's speedup table; the rerun's
own headline ratio (at its own level) is printed beside it. Where the rerun has no row at that level,
its own headline ratio is compared, and the line says so.
Exit status 1 when any outcome differs or a ratio leaves its spread, so it can gate a commit.
With ``--also RUN ...`` (earlier reruns' results folders) the spread is the union of the reference's
and theirs: the range over all their seeds, which is what README.md states for a ratio once a
3-seed spread has proved narrower than the run-to-run spread.

    .venv/bin/python benchmarks/compare_reference.py results results-rerun [--only fig5 fig7]
    .venv/bin/python benchmarks/compare_reference.py results results-rerun --also run2/results run3/results
"""
from __future__ import annotations

import argparse
import re
import sys

import numpy as np

RATIO = re.compile(r"([<>]?)\s*(\d+(?:\.\d+)?)x(?:\s*\[(\d+(?:\.\d+)?),\s*(\d+(?:\.\d+)?)\])?")
# the level a verdict's first ratio is at: "... to P@1 0.199 (85% of the best" or "... at 90% .."
LEVEL = re.compile(r"^(?P<ds>[\w.-]+): [^;]*?(?:\((?P<a>\d+)% of the best|x(?: \[[^]]*\])? at (?P<b>\d+)%)")


def first_ratio(text: str) -> tuple[str, float, float, float] | None:
    """(bound, median, min, max) of the first 'M.MMx [lo, hi]' in a verdict's measured text."""
    m = RATIO.search(text or "")
    if not m:
        return None
    med = float(m.group(2))
    lo = float(m.group(3)) if m.group(3) else med
    hi = float(m.group(4)) if m.group(4) else med
    return m.group(1), med, lo, hi


def first_level(text: str) -> tuple[str, float] | None:
    """(data set, level fraction) of the first ratio in a verdict's measured text, if it names one."""
    m = LEVEL.search(text or "")
    if not m:
        return None
    return m.group("ds"), int(m.group("a") or m.group("b")) / 100


def table(results_dir: str, only: list[str] | None):
    """The verdict table of a results folder (indexed by claim) and its summaries."""
    from slidebench.reporting.catalogue import CLAIMS
    from slidebench.reporting.summaries import available_experiments, load_summary
    from slidebench.reporting.verdict import verdict_table
    names = available_experiments(results_dir)
    sums = {n: load_summary(results_dir, n) for n in names}
    t = verdict_table(sums, CLAIMS)
    if only:
        t = t[t["experiment"].isin(only)]
    return t.set_index("claim"), sums


def ratio_at_level(sums, claim_id: str, dataset: str, frac: float) -> tuple[str, float, float, float] | None:
    """The claim's speedup (bound, median, min, max) at accuracy level ``frac`` on ``dataset`` in a run's
    speedup table, selected as the verdict selects it; None where the run has no such row."""
    from slidebench.reporting.catalogue import CLAIMS
    from slidebench.reporting.speedup import bound_str
    from slidebench.reporting.verdict import _select
    claim = next((c for c in CLAIMS if c.id == claim_id), None)
    s = sums.get(claim.experiment) if claim else None
    if claim is None or claim.baseline is None or s is None or s.speedup is None:
        return None
    rows = _select(s.speedup, claim.baseline, dataset)
    rows = rows[(rows["dataset"].astype(str) == dataset) & ((rows["level_frac"] - frac).abs() < 1e-6)]
    if len(rows) != 1 or not np.isfinite(float(rows.iloc[0]["speedup_median"])):
        return None
    r = rows.iloc[0]
    return (bound_str(r["bound"]), float(r["speedup_median"]), float(r["speedup_min"]),
            float(r["speedup_max"]))


def not_rerun(claim_id: str, ref_sums, new_sums) -> list[str]:
    """The experiments a claim is judged from besides its own (a GPU claim's stand-in: gpu_lr, gpu) that
    the reference has and the rerun has none of; [] when the rerun can judge it as the reference did."""
    from slidebench.reporting.catalogue import CLAIMS
    claim = next((c for c in CLAIMS if c.id == claim_id), None)
    extra = list(claim.extra.get("stand_in", (None, ()))[1]) if claim else []

    def has(sums, e):
        return e in sums and sums[e].present
    if not extra or any(has(new_sums, e) for e in extra):
        return []
    return [e for e in extra if has(ref_sums, e)]


def _fmt(r) -> str:
    return f"{r[0]}{r[1]:.2f}x [{r[2]:.2f}, {r[3]:.2f}]"


def stated_spread(r: tuple[str, float, float, float], drift: float) -> tuple[float, float]:
    """The interval a verdict's ratio (bound, median, min, max) claims, widened by the run-to-run drift."""
    bound, _, lo, hi = r
    if bound == ">":
        return lo / drift, float("inf")
    if bound == "<":
        return 0.0, hi * drift
    return lo / drift, hi * drift


def consistent(ref: tuple[str, float, float, float], new: tuple[str, float, float, float],
               drift: float) -> bool:
    """Whether the rerun's ratio (its median, a bound where it is one) can hold together with the
    reference's stated spread: a lower bound only needs to lie below its top, an upper bound above its
    bottom, a measured ratio inside it."""
    lo, hi = stated_spread(ref, drift)
    if new[0] == ">":
        return new[1] <= hi
    if new[0] == "<":
        return new[1] >= lo
    return lo <= new[1] <= hi


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("rerun")
    ap.add_argument("--only", nargs="+", help="only the claims of these experiments")
    ap.add_argument("--also", nargs="+", default=[], metavar="RUN",
                    help="earlier runs' results folders: the spread becomes the union of theirs and the reference's")
    ap.add_argument("--drift", type=float, default=None,
                    help="the run-to-run drift factor that widens a ratio's seed spread (default: "
                         "slidebench.reporting.catalogue.TIMING_DRIFT; 1 = the seeds' [min, max] only)")
    a = ap.parse_args(argv)
    if a.drift is None:
        from slidebench.reporting.catalogue import TIMING_DRIFT
        a.drift = TIMING_DRIFT
    if not a.drift >= 1:
        ap.error(f"--drift must be a factor >= 1, got {a.drift}")
    (ref, ref_sums), (new, new_sums) = table(a.reference, a.only), table(a.rerun, a.only)
    pooled = [table(d, a.only) for d in a.also]
    if pooled:
        print(f"spread: the union over the reference and {len(pooled)} earlier run(s)")
    print(f"stated spread: the seeds' [min, max] widened by the run-to-run drift {a.drift:g}x "
          "(a lower bound: up to inf)")
    bad = 0
    print(f"{'claim':16s} {'reference (level)':>34s} {'rerun at that level':>26s}  moved   outcome")
    for cid in ref.index:
        if cid not in new.index:
            continue
        r, n = ref.loc[cid], new.loc[cid]
        gone = not_rerun(cid, ref_sums, new_sums)
        if gone and str(n["verdict"]).startswith("not measured"):
            print(f"{cid:16s} {'-':>34s} {'-':>26s}    -    not rerun: the reference reads {', '.join(gone)}, "
                  "the rerun has none of them")
            continue
        same = r["verdict"] == n["verdict"]
        rr, nn = first_ratio(r["measured"]), first_ratio(n["measured"])
        lvl, extra = first_level(r["measured"]) if rr else None, ""
        if lvl:                        # the reference's own table, unrounded, at its level
            rr = ratio_at_level(ref_sums, cid, *lvl) or rr
        if rr and pooled:              # widen to the union of the earlier runs' spreads at that level
            more = [(ratio_at_level(ps, cid, *lvl) if lvl else None) or first_ratio(pt.loc[cid, "measured"])
                    for pt, ps in pooled if cid in pt.index]
            more = [m for m in more if m]
            rr = (rr[0], rr[1], min([rr[2]] + [m[2] for m in more]), max([rr[3]] + [m[3] for m in more]))
        if rr and nn:
            at = ratio_at_level(new_sums, cid, *lvl) if lvl else None
            if lvl and at is None:
                extra = f"    (the rerun has no ratio at {lvl[1]:.0%} on {lvl[0]}: its own headline ratio compared)"
            elif at is not None and first_level(n["measured"]) != lvl:
                nl = first_level(n["measured"])
                extra = (f"    (the rerun's own headline ratio: {_fmt(nn)}"
                         + (f" at {nl[1]:.0%} of the best on {nl[0]})" if nl else ")"))
            cmp = at or nn
            inside = consistent(rr, cmp, a.drift)
            seeds = rr[2] <= cmp[1] <= rr[3]
            moved = f"{cmp[1] / rr[1]:5.2f}x" if rr[1] else "  -  "
            rtxt = _fmt(rr) + (f" ({lvl[1]:.0%})" if lvl else "")
            ntxt = _fmt(cmp)
        else:
            inside, seeds, moved, rtxt, ntxt = True, True, "  -  ", "-", "-"
        ok = same and inside
        bad += not ok
        where = ("" if rtxt == "-" else ", inside the seeds' range" if seeds
                 else ", inside the stated spread (outside the seeds' range)" if inside
                 else ", ratio OUTSIDE the reference's stated spread")
        print(f"{cid:16s} {rtxt:>34s} {ntxt:>26s}  {moved}  {'agrees' if same else 'DIFFERS'}{where}")
        if extra:
            print(extra)
        if not same:
            print(f"    reference: {r['verdict']}\n    rerun:     {n['verdict']}")
    print(f"{len(ref.index)} claims, {bad} disagreeing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
