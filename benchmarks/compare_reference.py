"""Does a rerun reproduce the reference run? Compare the verdict tables of two results folders.

For every claim of the verdict table (``slidebench/reporting/verdict.py``), both runs' outcome and the
first speedup each measured (median [min, max] over seeds, as printed in REPORT.md); a claim
*agrees* when the outcomes are the same, and its ratio *stays within spread* when the rerun's median
lies inside the reference's [min, max] (a claim without a ratio is judged on its outcome only).
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

RATIO = re.compile(r"([<>]?)\s*(\d+(?:\.\d+)?)x(?:\s*\[(\d+(?:\.\d+)?),\s*(\d+(?:\.\d+)?)\])?")


def first_ratio(text: str) -> tuple[str, float, float, float] | None:
    """(bound, median, min, max) of the first 'M.MMx [lo, hi]' in a verdict's measured text."""
    m = RATIO.search(text or "")
    if not m:
        return None
    med = float(m.group(2))
    lo = float(m.group(3)) if m.group(3) else med
    hi = float(m.group(4)) if m.group(4) else med
    return m.group(1), med, lo, hi


def table(results_dir: str, only: list[str] | None):
    from slidebench.reporting.catalogue import CLAIMS
    from slidebench.reporting.summaries import available_experiments, load_summary
    from slidebench.reporting.verdict import verdict_table
    names = available_experiments(results_dir)
    sums = {n: load_summary(results_dir, n) for n in names}
    t = verdict_table(sums, CLAIMS)
    if only:
        t = t[t["experiment"].isin(only)]
    return t.set_index("claim")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("rerun")
    ap.add_argument("--only", nargs="+", help="only the claims of these experiments")
    ap.add_argument("--also", nargs="+", default=[], metavar="RUN",
                    help="earlier runs' results folders: the spread becomes the union of theirs and the reference's")
    a = ap.parse_args(argv)
    ref, new = table(a.reference, a.only), table(a.rerun, a.only)
    pooled = [table(d, a.only) for d in a.also]
    if pooled:
        print(f"spread: the union over the reference and {len(pooled)} earlier run(s)")
    bad = 0
    print(f"{'claim':16s} {'reference':>28s} {'rerun':>22s}  moved   outcome")
    for cid in ref.index:
        if cid not in new.index:
            continue
        r, n = ref.loc[cid], new.loc[cid]
        same = r["verdict"] == n["verdict"]
        rr, nn = first_ratio(r["measured"]), first_ratio(n["measured"])
        if rr and pooled:                                 # widen to the union of the earlier runs' spreads
            more = [first_ratio(p.loc[cid, "measured"]) for p in pooled if cid in p.index]
            more = [m for m in more if m]
            rr = (rr[0], rr[1], min([rr[2]] + [m[2] for m in more]), max([rr[3]] + [m[3] for m in more]))
        if rr and nn:
            inside = rr[2] <= nn[1] <= rr[3]
            moved = f"{nn[1] / rr[1]:5.2f}x" if rr[1] else "  -  "
            rtxt = f"{rr[0]}{rr[1]:.2f}x [{rr[2]:.2f}, {rr[3]:.2f}]"
            ntxt = f"{nn[0]}{nn[1]:.2f}x [{nn[2]:.2f}, {nn[3]:.2f}]"
        else:
            inside, moved, rtxt, ntxt = True, "  -  ", "-", "-"
        ok = same and inside
        bad += not ok
        print(f"{cid:16s} {rtxt:>28s} {ntxt:>22s}  {moved}  "
              f"{'agrees' if same else 'DIFFERS'}{'' if inside else ', ratio OUTSIDE the reference spread'}")
        if not same:
            print(f"    reference: {r['verdict']}\n    rerun:     {n['verdict']}")
    print(f"{len(ref.index)} claims, {bad} disagreeing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
