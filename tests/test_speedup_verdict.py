"""Speedup at every accuracy level and the verdict rules, on hand-made curves with known answers."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from slidebench.reporting import catalogue, sections, speedup, summaries, verdict
from slidebench.reporting.catalogue import Claim, Selector
from slidebench.reporting.summaries import Summary

# ----------------------------------------------------------------------------- time_at_level


def test_time_at_level_interpolates_between_evaluations():
    t = [0.0, 1.0, 2.0, 4.0, 8.0]
    p = [0.0, 0.1, 0.2, 0.3, 0.4]
    # 0.25 lies halfway between (2, 0.2) and (4, 0.3): 3.0 interpolated, 4.0 by first-eval
    assert speedup.time_at_level(t, p, 0.25) == pytest.approx(3.0)
    assert speedup.time_at_level(t, p, 0.25, method="first") == pytest.approx(4.0)
    # exactly on an evaluation
    assert speedup.time_at_level(t, p, 0.2) == pytest.approx(2.0)
    # never reached
    assert np.isnan(speedup.time_at_level(t, p, 0.41))


def test_time_at_level_uses_first_crossing_unsorted_and_nan_tolerant():
    # the curve rises to 0.3, falls, rises again: the first crossing counts; input order does not matter
    t = [4.0, 0.0, 2.0, 1.0, 3.0, np.nan]
    p = [0.35, 0.0, 0.1, 0.3, 0.3, 0.9]
    assert speedup.time_at_level(t, p, 0.2) == pytest.approx(0.0 + (0.2 - 0.0) / 0.3 * 1.0)
    with pytest.raises(ValueError):
        speedup.time_at_level(t, p, 0.2, method="median")


# ----------------------------------------------------------------------------- speedup table

def _curve_rows(label, system, config, seed, t, p, dataset="amazon-small", device="cpu"):
    return [{"run_id": f"x/{label}/s{seed}", "dataset": dataset, "n_threads": 2, "batch_size": 128,
             "protocol": "fair", "label": label, "system": system, "config": config, "device": device,
             "seed": seed, "train_time_s": ti, "p_at_1": pi} for ti, pi in zip(t, p)]


def _linear(rate, t_end=10.0, cap=1.0, n=11):
    t = np.linspace(0, t_end, n)
    return t, np.minimum(rate * t, cap)


def _planted(slide_rates=(0.1, 0.1, 0.1), tf_rates=(0.025, 0.025, 0.025), tf_end=40.0, slide_end=10.0):
    rows = []
    for s, (a, b) in enumerate(zip(slide_rates, tf_rates)):
        rows += _curve_rows("SLIDE", "slide", "default", s, *_linear(a, slide_end, n=21))
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, *_linear(b, tf_end, n=41))
    return pd.DataFrame(rows)


def test_speedup_known_answer_linear_curves():
    # SLIDE reaches P@1 = 0.1 t, TF 0.025 t: at every level TF needs 4x SLIDE's time
    lv = speedup.level_times(_planted(), levels=(0.5, 1.0))
    sp = speedup.speedup_table(lv)
    assert set(sp["level_frac"]) == {0.5, 1.0}
    assert np.allclose(sp["speedup_median"], 4.0) and np.allclose(sp["speedup_min"], 4.0)
    assert (sp["bound"] == "").all() and (sp["n_exact"] == 3).all()
    # the best P@1 any system reached is 1.0 (both cap there): level 0.5 is P@1 0.5
    assert sp.set_index("level_frac").loc[0.5, "level_p1"] == pytest.approx(0.5)
    assert sp.set_index("level_frac").loc[0.5, "slide_time_median_s"] == pytest.approx(5.0)


def test_speedup_spread_over_seeds_is_median_min_max():
    lv = speedup.level_times(_planted(tf_rates=(0.05, 0.025, 0.0125), tf_end=80.0), levels=(0.5,))
    r = speedup.speedup_table(lv).iloc[0]
    assert (r["speedup_min"], r["speedup_median"], r["speedup_max"]) == pytest.approx((2.0, 4.0, 8.0))


def test_baseline_missing_a_level_is_a_lower_bound_not_dropped():
    # TF gets to 0.5 within its 10 s budget only; SLIDE reaches 1.0 at 10 s
    lv = speedup.level_times(_planted(tf_end=10.0, tf_rates=(0.05,) * 3), levels=(0.25, 1.0))
    sp = speedup.speedup_table(lv).set_index("level_frac")
    assert sp.loc[0.25, "bound"] == "" and sp.loc[0.25, "speedup_median"] == pytest.approx(2.0)
    top = sp.loc[1.0]
    assert top["bound"] == ">" and top["baseline_reached"] == "0/3" and top["slide_reached"] == "3/3"
    assert top["speedup_median"] == pytest.approx(10.0 / 10.0)         # TF budget / SLIDE time
    assert speedup.speedup_text(top).startswith("> ")


def test_slide_missing_a_level_is_an_upper_bound_and_neither_is_marked():
    rows = []
    for s in range(2):
        rows += _curve_rows("SLIDE", "slide", "default", s, *_linear(0.1, 5.0, cap=0.5))
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, *_linear(0.05, 20.0, cap=0.8))
    sp = speedup.speedup_table(speedup.level_times(pd.DataFrame(rows), levels=(0.5, 1.0))).set_index("level_frac")
    # best 0.8; level 1.0 = 0.8: TF reaches it at 16 s, SLIDE never (budget 5 s) -> speedup < 16/5
    assert sp.loc[1.0, "bound"] == "<" and sp.loc[1.0, "speedup_median"] == pytest.approx(16.0 / 5.0)
    rows = []
    for s in range(2):
        rows += _curve_rows("SLIDE", "slide", "default", s, *_linear(0.1, 5.0, cap=0.5))
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, *_linear(0.01, 5.0, cap=0.5))
        rows += _curve_rows("TF-sampled", "tf_sampled_softmax", "tuned", s, *_linear(0.05, 20.0, cap=0.9))
    sp = speedup.speedup_table(speedup.level_times(pd.DataFrame(rows), levels=(1.0,)))
    r = sp[sp["baseline"] == "TF-full"].iloc[0]
    assert r["bound"] == "neither" and np.isnan(r["speedup_median"])
    assert speedup.speedup_text(r) == "neither reached"


def test_speedup_contexts_do_not_mix_datasets():
    a = _planted()
    b = _planted(tf_rates=(0.05,) * 3, tf_end=20.0).assign(dataset="delicious-small")
    b["run_id"] = b["run_id"] + "-d"
    sp = speedup.speedup_table(speedup.level_times(pd.concat([a, b]), levels=(0.5,))).set_index("dataset")
    assert sp.loc["amazon-small", "speedup_median"] == pytest.approx(4.0)
    assert sp.loc["delicious-small", "speedup_median"] == pytest.approx(2.0)


# --------------------------------------------------------------------------------- verdicts

def test_direction_rules():
    d = verdict.TIMING_DRIFT
    assert d > 1
    assert verdict.direction(d * 1.01, 3.0, "") == verdict.HOLDS
    assert verdict.direction(0.2, 0.99 / d, "") == verdict.NOT_HOLDS
    assert verdict.direction(0.8, 1.3, "") == verdict.INCONCLUSIVE
    # two measured times: every seed above 1 but not beyond the machine's run-to-run drift decides nothing
    assert verdict.direction(1.05, d * 0.99, "") == verdict.INCONCLUSIVE
    assert verdict.direction(1.0 / (d * 0.99), 0.95, "") == verdict.INCONCLUSIVE
    assert verdict.direction(1.2, 1.3, "", drift=1.0) == verdict.HOLDS          # the plain rule, drift 1
    # bounds of both kinds over the seeds ("mixed") decide nothing, however far from 1
    assert verdict.direction(d * 2, d * 3, "mixed") == verdict.INCONCLUSIVE
    assert verdict.direction(0.1 / d, 0.2 / d, "mixed") == verdict.INCONCLUSIVE
    with pytest.raises(ValueError, match="drift"):
        verdict.direction(1.2, 1.3, "", drift=0.5)
    assert verdict.direction(1.1, 1.5, ">") == verdict.HOLDS            # a lower bound above 1 (no drift:
    # no speed of the hour turns "the baseline never reached it" into "reached it first")
    assert verdict.direction(0.5, 0.9, ">") == verdict.INCONCLUSIVE     # a lower bound below 1 says nothing
    assert verdict.direction(0.5, 0.9, "<") == verdict.NOT_HOLDS
    assert verdict.direction(1.5, 2.0, "<") == verdict.INCONCLUSIVE
    assert verdict.direction(np.nan, np.nan, "neither") == verdict.NOT_MEASURED


def _fig5_summary(curves: pd.DataFrame, runs: pd.DataFrame | None = None) -> Summary:
    lv = speedup.level_times(curves)
    return Summary("fig5", curves=curves, runs=runs if runs is not None else _runs_of(curves), levels=lv,
                   speedup=speedup.speedup_table(lv))


def _runs_of(curves: pd.DataFrame) -> pd.DataFrame:
    g = curves.groupby("run_id").agg(label=("label", "first"), system=("system", "first"),
                                     config=("config", "first"), device=("device", "first"),
                                     dataset=("dataset", "first"), seed=("seed", "first"),
                                     final_p_at_1=("p_at_1", "max"), train_time_s=("train_time_s", "max"))
    return g.reset_index().assign(status="budget_time")


CPU_CLAIM = Claim("c", "8x vs TF-CPU", "speedup_to_baseline_accuracy", "fig5", "amazon",
                  Selector("tf_full_softmax", "tuned"), Selector("tf_full_softmax", "paper"), 8.0)


def test_verdict_holds_when_slide_faster_in_every_seed_and_notes_smaller_factor():
    v = verdict.judge(CPU_CLAIM, {"fig5": _fig5_summary(_planted())})
    assert v.outcome == verdict.HOLDS
    assert "4.0x" in v.measured and "smaller than the paper's 8x" in v.note


def test_verdict_lower_bound_is_not_called_smaller_than_the_papers_factor():
    """The baseline stays flat (it never leaves the majority label in its budget, as TF full softmax at
    200k labels did on 2 cores): SLIDE's speedup is only a lower bound, which may not be reported as
    smaller than the paper's 8x."""
    rows = []
    for s in range(3):
        rows += _curve_rows("SLIDE", "slide", "default", s, *_linear(0.03, 40.0, cap=0.2, n=41))
        t = np.linspace(0, 40.0, 41)
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, t, np.full(41, 0.008))
    v = verdict.judge(CPU_CLAIM, {"fig5": _fig5_summary(pd.DataFrame(rows))})
    assert v.outcome == verdict.HOLDS and "> " in v.measured
    assert "smaller than" not in v.note and "lower bound" in v.note


def test_every_level_quotes_levels_with_a_spread_but_judges_all():
    """The top level is reached by one seed only: its ratio has no spread, so the weakest level quoted
    is one measured in several seeds; a level where SLIDE is slower still decides the outcome."""
    base = {"dataset": "d", "n_threads": 2, "batch_size": 128, "protocol": "fair", "slide": "SLIDE",
            "slide_config": "default", "baseline": "TF", "baseline_system": "tf_full_softmax",
            "baseline_config": "tuned", "baseline_device": "cpu", "level_p1": 0.1, "n_exact": 0}
    rows = [dict(base, level_frac=0.5, n_seeds=3, speedup_median=3.0, speedup_min=2.9, speedup_max=3.1,
                 bound=">"),
            dict(base, level_frac=0.9, n_seeds=3, speedup_median=2.2, speedup_min=2.1, speedup_max=2.4,
                 bound=">"),
            dict(base, level_frac=1.0, n_seeds=3, speedup_median=1.8, speedup_min=1.8, speedup_max=1.8,
                 bound=">")]
    sel = Selector("tf_full_softmax", "tuned")
    out, text = verdict._every_level(pd.DataFrame(rows), sel, "d")
    assert out == verdict.HOLDS and "2.2x [2.1, 2.4] at 90%" in text and "100%" not in text
    rows[2].update(speedup_median=0.6, speedup_min=0.6, speedup_max=0.6, bound="")     # below 1/drift
    out, text = verdict._every_level(pd.DataFrame(rows), sel, "d")
    assert out == verdict.NOT_HOLDS and "slower at 100%" in text


def test_verdict_does_not_hold_when_slide_never_reaches_baseline_accuracy():
    rows = []
    for s in range(3):
        rows += _curve_rows("SLIDE", "slide", "default", s, *_linear(0.1, 10.0, cap=0.3))
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, *_linear(0.025, 40.0, cap=0.6))
    v = verdict.judge(CPU_CLAIM, {"fig5": _fig5_summary(pd.DataFrame(rows))})
    assert v.outcome == verdict.NOT_HOLDS


def _tuned_faster_paper_slower() -> pd.DataFrame:
    """The tuned baseline is faster than SLIDE, the 2019 release's config of it slower."""
    rows = []
    for s in range(3):
        rows += _curve_rows("SLIDE", "slide", "default", s, *_linear(0.1, 10.0))
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, *_linear(0.2, 10.0))       # faster
        rows += _curve_rows("TF-full-paper", "tf_full_softmax", "paper", s, *_linear(0.02, 50.0))  # slower
    return pd.DataFrame(rows)


def test_verdict_holds_only_under_papers_protocol():
    v = verdict.judge(CPU_CLAIM, {"fig5": _fig5_summary(_tuned_faster_paper_slower())})
    assert v.outcome == verdict.PAPER_ONLY
    assert "2019 release's config" in v.measured


def _tuned_at_parity_paper_slower() -> pd.DataFrame:
    """The tuned baseline level with SLIDE (1.2x in one seed, 0.9x in another), the 2019 config 5x slower."""
    rows = []
    for s, tf_rate in enumerate((0.1 / 1.2, 0.1 / 0.9, 0.1)):
        rows += _curve_rows("SLIDE", "slide", "default", s, *_linear(0.1, 10.0, n=21))
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, *_linear(tf_rate, 20.0, cap=1.0, n=41))
        rows += _curve_rows("TF-full-paper", "tf_full_softmax", "paper", s, *_linear(0.02, 50.0, n=51))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("rule", ["speedup_to_baseline_accuracy", "faster_at_every_level"])
def test_inconclusive_against_tuned_stays_inconclusive_when_the_paper_config_holds(rule):
    # "only under the paper's protocol" says the claim fails against the tuned baseline; a run that
    # leaves it at parity against the tuned one has not shown that (the reference and its reruns of
    # 2026-12-04 flipped between the two readings on one seed of the 2019 config)
    claim = Claim("x", "faster", rule, "fig5", "amazon", Selector("tf_full_softmax", "tuned"),
                  Selector("tf_full_softmax", "paper"))
    v = verdict.judge(claim, {"fig5": _fig5_summary(_tuned_at_parity_paper_slower())})
    assert v.outcome == verdict.INCONCLUSIVE
    assert "2019 release's config: amazon-small" in v.measured and "5.0x" in v.measured


def test_verdict_gpu_claim_not_measured_without_gpu_runs():
    claim = catalogue.CLAIMS[0]
    assert claim.baseline.device == "gpu"
    v = verdict.judge(claim, {"fig5": _fig5_summary(_planted())})
    assert v.outcome.startswith(verdict.NOT_MEASURED) and "GPU" in v.outcome


def test_verdict_every_level_fails_if_any_level_is_slower():
    rows = []
    for s in range(3):
        # SLIDE is quick to 0.5 and then slow; TF is steady: SLIDE ahead early, behind at the top
        t = np.linspace(0, 40, 41)
        rows += _curve_rows("SLIDE", "slide", "default", s, t, np.minimum(0.5, 0.25 * t)
                            + np.clip(t - 2, 0, None) * 0.5 / 38)
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, t, np.minimum(1.0, t / 20))
    claim = Claim("l", "any level", "faster_at_every_level", "fig5", "", Selector("tf_full_softmax", "tuned"))
    v = verdict.judge(claim, {"fig5": _fig5_summary(pd.DataFrame(rows))})
    assert v.outcome == verdict.NOT_HOLDS and "slower at" in v.measured
    v2 = verdict.judge(claim, {"fig5": _fig5_summary(_planted())})
    assert v2.outcome == verdict.HOLDS


def test_verdict_missing_experiment_is_not_measured():
    v = verdict.judge(CPU_CLAIM, {})
    assert v.outcome == verdict.NOT_MEASURED


@pytest.mark.parametrize("rule", ["speedup_to_baseline_accuracy", "faster_at_every_level"])
def test_both_speedup_rules_share_not_run_no_baseline_and_the_paper_fallback(rule):
    claim = Claim("x", "faster", rule, "fig5", "amazon", Selector("tf_full_softmax", "tuned"),
                  Selector("tf_full_softmax", "paper"))
    assert verdict.judge(claim, {}).measured == "fig5 not run"
    no_tuned = _planted()
    no_tuned = no_tuned[no_tuned["system"] != "tf_full_softmax"]
    v = verdict.judge(claim, {"fig5": _fig5_summary(no_tuned)})
    assert v.outcome == verdict.NOT_MEASURED and "no tf_full_softmax (tuned config) run" in v.measured
    v = verdict.judge(claim, {"fig5": _fig5_summary(_tuned_faster_paper_slower())})
    assert v.outcome == verdict.PAPER_ONLY and "2019 release's config" in v.measured


def _ablation(lsh, rnd):
    runs = pd.DataFrame([
        {"label": "SLIDE", "system": "slide", "config": "default", "seed": s, "final_p_at_1": v,
         "params": json.dumps({"sampler": "vanilla", "hash": "dwta", "K": 6, "active": 0.05})}
        for s, v in enumerate(lsh)] + [
        {"label": "SLIDE-rnd", "system": "slide", "config": "default", "seed": s, "final_p_at_1": v,
         "params": json.dumps({"sampler": "random", "active": 0.05})} for s, v in enumerate(rnd)])
    return {"ablation": Summary("ablation", runs=runs, curves=pd.DataFrame())}


def test_verdict_lsh_vs_random():
    claim = next(c for c in catalogue.CLAIMS if c.rule == "lsh_beats_random")
    assert verdict.judge(claim, _ablation([0.30, 0.31, 0.32], [0.20, 0.21, 0.22])).outcome == verdict.HOLDS
    assert verdict.judge(claim, _ablation([0.20, 0.21, 0.22], [0.30, 0.31, 0.32])).outcome == verdict.NOT_HOLDS
    assert verdict.judge(claim, _ablation([0.20, 0.25], [0.22, 0.24])).outcome == verdict.INCONCLUSIVE
    one = verdict.judge(claim, _ablation([0.205], [0.201]))
    assert one.outcome == verdict.NOT_HOLDS and "no difference" in one.note


def test_verdict_sampled_fraction_reads_params():
    claim = next(c for c in catalogue.CLAIMS if c.rule == "sampled_fraction")
    runs = pd.DataFrame([{"label": "TF-sampled", "system": "tf_sampled_softmax", "config": "tuned",
                          "device": "cpu", "params": json.dumps({"num_sampled": f})} for f in (0.2,)])
    assert verdict.judge(claim, {"fig7": Summary("fig7", runs=runs)}).outcome == verdict.HOLDS
    runs["params"] = json.dumps({"num_sampled": 0.02})
    assert verdict.judge(claim, {"fig7": Summary("fig7", runs=runs)}).outcome == verdict.NOT_HOLDS
    # with accuracies: a fraction that never reached decent accuracy says nothing about what is needed
    acc = pd.concat([runs.assign(params=json.dumps({"num_sampled": 0.2}), final_p_at_1=0.03),
                     pd.DataFrame([{"label": "SLIDE", "system": "slide", "config": "default", "device": "cpu",
                                    "params": "{}", "final_p_at_1": 0.10}])], ignore_index=True)
    v = verdict.judge(claim, {"fig7": Summary("fig7", runs=acc)})
    assert v.outcome == "inconclusive" and "0.030 against 0.100 for SLIDE" in v.measured
    acc.loc[0, "final_p_at_1"] = 0.09
    assert verdict.judge(claim, {"fig7": Summary("fig7", runs=acc)}).outcome == verdict.HOLDS
    runs = runs.drop(columns="params")
    assert verdict.judge(claim, {"fig7": Summary("fig7", runs=runs)}).outcome == verdict.NOT_MEASURED


def test_verdict_table_has_every_claim_and_markdown_opens_report():
    sums = {"fig5": _fig5_summary(_planted())}
    t = verdict.verdict_table(sums)
    assert list(t["claim"]) == [c.id for c in catalogue.CLAIMS]
    assert set(t.columns) >= {"paper", "measured", "verdict"}
    md = sections.verdict_md(sums)
    assert md.startswith("## Verdict") and md.count("\n| ") == len(catalogue.CLAIMS) + 1


# ------------------------------------------------------------------------- reference, roofline

def _write_reference(tmp_path, **over):
    row = {"dataset": "amazon-small", "n_features": 50000, "n_labels": 20000, "n_train": 40000,
           "p_at_1": 0.4123, "p_at_3": 0.35, "p_at_5": 0.3, "train_seconds": 12.34, "library": "omikuji",
           "version": "0.5.2", "params": "n_trees=1"}
    row.update(over)
    (tmp_path / "summary").mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(tmp_path / "summary" / "reference.csv", index=False)


def test_reference_csv_read_and_shown(tmp_path):
    _write_reference(tmp_path)
    ref = summaries.load_reference(tmp_path)
    assert ref is not None and float(ref["p_at_1"].iloc[0]) == pytest.approx(0.4123)
    md = sections.reference_md(ref, {})
    assert "omikuji 0.5.2" in md and "0.412" in md and "40,000" in md and "0.4123" not in md


def test_reference_csv_missing_or_malformed(tmp_path):
    assert summaries.load_reference(tmp_path) is None
    assert "**MISSING**" in sections.reference_md(None, {})
    (tmp_path / "summary").mkdir()
    pd.DataFrame([{"dataset": "a", "p_at_1": 0.1}]).to_csv(tmp_path / "summary" / "reference.csv", index=False)
    with pytest.raises(ValueError, match="reference.csv"):
        summaries.load_reference(tmp_path)


def test_roofline_table(tmp_path):
    assert sections.roofline_md(summaries.load_roofline(tmp_path)) == ""
    (tmp_path / "summary").mkdir()
    pd.DataFrame([{"n_labels": 200000, "threads": 2, "tf_gflops": 133.2, "sgemm_gflops": 220.0,
                   "fraction": 133.2 / 220, "openblas_coretype": ""}]).to_csv(
        tmp_path / "summary" / "roofline.csv", index=False)
    md = sections.roofline_md(summaries.load_roofline(tmp_path))
    assert "| 200,000 | 2 | 133 | 220 | 61% | - |" in md


# ------------------------------------------------------------------------------- summarize

def _write_log(path, *, system, config, seed, dataset, ts, ps, params):
    from slidebench.harness.runlog import RunLogWriter
    with RunLogWriter(path) as w:
        w.write("run_start", system=system, config=config, seed=seed, n_threads=2, batch_size=128,
                protocol="fair", params=params, budget={"target_p_at_1": 0.5},
                dataset={"name": dataset, "n_features": 135909, "n_labels": 200000, "n_train": 40000,
                         "scale": "medium"}, describe={"device": "cpu"})
        for i, (t, p) in enumerate(zip(ts, ps)):
            w.write("eval", step=i * 10, samples_seen=i * 1280, epoch=i / 10, train_time_s=t, p_at_1=p,
                    p_at_3=p, p_at_5=p)
        w.write("run_stop", status="budget_time", train_time_s=ts[-1], steps=len(ts) * 10,
                final_p_at_1=ps[-1], final_p_at_3=ps[-1], final_p_at_5=ps[-1], best_p_at_1=max(ps))


def test_summarize_writes_sizes_params_and_speedup(tmp_path):
    from slidebench.reporting.summarize import summarize_experiment
    t = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    for ds, k in (("amazon-medium", 1.0), ("delicious-medium", 2.0)):
        for seed in (0, 1):
            _write_log(tmp_path / "raw" / "fig5" / "SLIDE" / f"s{seed}-{ds}.jsonl", system="slide",
                       config="default", seed=seed, dataset=ds, ts=t,
                       ps=[min(0.8, 0.1 * x) for x in t], params={"sampler": "vanilla", "K": 6})
            _write_log(tmp_path / "raw" / "fig5" / "TF-full" / f"s{seed}-{ds}.jsonl", system="tf_full_softmax",
                       config="tuned", seed=seed, dataset=ds, ts=[k * x for x in t],
                       ps=[min(0.8, 0.05 * x) for x in t], params={"lr": 0.001})
    out = summarize_experiment("fig5", tmp_path)
    runs = pd.read_csv(tmp_path / "summary" / "fig5_runs.csv")
    assert (runs["n_features"] == 135909).all() and (runs["n_labels"] == 200000).all()
    assert (runs["n_train"] == 40000).all()
    assert json.loads(runs[runs["system"] == "slide"]["params"].iloc[0]) == {"K": 6, "sampler": "vanilla"}
    ttt = pd.read_csv(tmp_path / "summary" / "fig5_ttt.csv")
    assert len(ttt) == 4 and (ttt["n_seeds"] == 2).all()             # per data set, never pooled
    sp = pd.read_csv(tmp_path / "summary" / "fig5_speedup.csv", keep_default_na=False)
    assert len(sp) == len(out["speedup"]) > 0
    half = sp[sp["level_frac"] == 0.5].set_index("dataset")
    # best 0.8, level 0.4: SLIDE at 4 s; TF at 8 s (amazon, k=1) and 16 s (delicious, k=2)
    assert float(half.loc["amazon-medium", "speedup_median"]) == pytest.approx(2.0)
    assert float(half.loc["delicious-medium", "speedup_median"]) == pytest.approx(4.0)
    assert (tmp_path / "summary" / "fig5_levels.csv").exists()
    # the loader reads the written speedup rather than recomputing it
    s = summaries.load_summary(tmp_path, "fig5")
    assert len(s.speedup) == len(sp) and "params" in s.curves.columns


# ------------------------------------------------------------------------------- reference run

def test_topk_padded_fills_short_rows_without_repeats():
    from slidebench.reporting.reference import topk_padded
    out = topk_padded([[3, 1], [], [1, 2, 3, 4, 5, 6], [2, 2]], 5, np.array([1, 7, 8, 9, 10, 11]))
    assert out.tolist() == [[3, 1, 7, 8, 9], [1, 7, 8, 9, 10], [1, 2, 3, 4, 5], [2, 1, 7, 8, 9]]


@pytest.mark.parametrize("n_threads", [1, 2])      # 2: the test points predicted by a thread pool
def test_reference_measure_writes_its_csv(tmp_path, n_threads):
    pytest.importorskip("omikuji")
    from slidebench.reporting import micro
    spec = {"experiment": {"name": "reference"}, "data": {"preset": ["amazon"], "seed": 0},
            "run": {"seeds": [0]}, "micro": {"measure": "reference", "n_trees": 1}}
    out = micro.run_micro(spec, scale="tiny", n_threads=n_threads, out_csv=tmp_path / "summary" / "reference.csv",
                          progress=False)
    ref = summaries.load_reference(tmp_path)          # the reader accepts what the measure writes
    assert out.exists() and len(ref) == 1
    r = ref.iloc[0]
    assert r["dataset"] == "amazon-tiny" and r["library"] == "omikuji" and "n_trees=1" in r["params"]
    assert 0 < r["p_at_1"] <= 1 and r["p_at_5"] <= r["p_at_1"] + 1e-9 and r["train_seconds"] > 0
    assert (r["n_train"], r["n_labels"]) == (2000, 1000)
    with pytest.raises(ValueError, match="n_treez"):
        micro.run_micro({**spec, "micro": {"measure": "reference", "n_treez": 1}}, scale="tiny", n_threads=1,
                        out_csv=tmp_path / "x.csv", progress=False)


def test_plateau_check_flags_a_still_rising_fastest_system_and_passes_a_flat_one():
    from slidebench.reporting.plateau import PLATEAU_RISE, plateau_md, plateau_table
    t = np.linspace(0, 40, 41)
    rows = []
    for s in range(3):
        # SLIDE saturates at 0.30 by 10 s: flat over the last quarter; TF rises linearly to 0.2
        rows += _curve_rows("SLIDE", "slide", "default", s, t, np.minimum(0.03 * t, 0.30 + 0.001 * s))
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, t, 0.005 * t)
        # on the other data set the fastest system is still rising: 0.3 -> 0.4 over the last quarter
        rows += _curve_rows("SLIDE", "slide", "default", s, t, 0.01 * t, dataset="delicious-x")
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, t, 0.002 * t, dataset="delicious-x")
    tab = plateau_table(pd.DataFrame(rows)).set_index("dataset")
    assert tab.loc["amazon-small", "label"] == "SLIDE" and bool(tab.loc["amazon-small", "plateaued"])
    assert abs(tab.loc["amazon-small", "rise_median"]) < 1e-9
    assert not bool(tab.loc["delicious-x", "plateaued"])
    assert tab.loc["delicious-x", "rise_median"] == pytest.approx(0.25)   # (0.4 - 0.3) / 0.4
    assert tab.loc["delicious-x", "rise_median"] > PLATEAU_RISE
    assert tab.loc["delicious-x", "state"] == "still rising"
    # a third data set where the fastest system peaks at 0.3 by 20 s and falls to 0.2 by 40 s
    for s in range(3):
        rows += _curve_rows("SLIDE", "slide", "default", s, t, np.where(t <= 20, 0.015 * t, 0.3 - 0.005 * (t - 20)),
                            dataset="wiki-x")
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, t, 0.006 * t, dataset="wiki-x")
    tab = plateau_table(pd.DataFrame(rows)).set_index("dataset")
    assert tab.loc["wiki-x", "label"] == "SLIDE"           # the highest peak, though TF ends higher (0.24 > 0.2)
    assert tab.loc["wiki-x", "state"] == "declined" and not bool(tab.loc["wiki-x", "plateaued"])
    md = plateau_md(pd.DataFrame(rows))
    assert "still rising" in md and "| amazon-small | SLIDE |" in md and "peaked earlier and declined" in md
    assert plateau_md(None) == ""


def test_levels_anchor_on_the_best_systems_median_run_not_one_outlier_evaluation():
    """The levels are fractions of the best system's median (over seeds) of each run's best P@1. One
    seed's single high evaluation (noise on a 1,000-point subset) must not move every level: with the
    plain maximum it did, by 2% between a reference run and its rerun."""
    rows = []
    for s, peak in enumerate((0.20, 0.21, 0.30)):          # seed 2 has one outlier evaluation
        t = np.linspace(0, 10, 11)
        p = np.minimum(0.02 * t, 0.20)
        p[-1] = peak
        rows += _curve_rows("SLIDE", "slide", "default", s, t, p)
        rows += _curve_rows("TF-full", "tf_full_softmax", "tuned", s, t, np.minimum(0.01 * t, 0.1))
    df = pd.DataFrame(rows)
    assert speedup.anchor_p1(df) == pytest.approx(0.21)      # median of SLIDE's per-run bests
    lv = speedup.level_times(df)
    top = lv[(lv["level_frac"] == 1.0)]
    assert top["level_p1"].to_numpy() == pytest.approx(0.21)
    # two of SLIDE's three runs reach 100% of the anchor, so the top level is not an extreme nobody hits
    assert int(top[top["label"] == "SLIDE"]["reached"].sum()) == 2
    # the 50% level is where SLIDE is at 0.105: 5.25 s, whatever seed 2's outlier did
    half = lv[(lv["level_frac"] == 0.5) & (lv["label"] == "SLIDE")]
    assert half["time_s"].to_numpy() == pytest.approx(5.25)


# ----------------------------------------------------------------------------- sweeps and the GPU stand-in

def _swept(rows: list[dict], lr: float) -> list[dict]:
    return [dict(r, param_lr=lr, run_id=f"{r['run_id']}-lr{lr:g}") for r in rows]


def test_sweep_members_are_variants_never_paired_as_seeds():
    """A learning-rate sweep (one seed per lr): each lr is its own variant; two lrs of one system are
    never read as two seeds (the gpu_lr summary did that before: "SLIDE reached it in 2/1 seeds")."""
    rows = []
    for lr, rate in ((1e-3, 0.1), (3e-4, 0.05)):
        rows += _swept(_curve_rows("SLIDE", "slide", "default", 0, *_linear(rate, 10.0, n=21)), lr)
    for lr, rate in ((2e-3, 0.2), (6e-4, 0.025)):
        rows += _swept(_curve_rows("dense", "torch_full_softmax", "tuned", 0, *_linear(rate, 40.0, n=41),
                                   device="gpu"), lr)
    sp = speedup.speedup_table(speedup.level_times(pd.DataFrame(rows), levels=(0.5,)))
    assert set(sp["slide"]) == {"SLIDE (lr 0.001)", "SLIDE (lr 0.0003)"}
    assert set(sp["baseline"]) == {"dense (lr 0.002)", "dense (lr 0.0006)"}
    assert (sp["n_seeds"] == 1).all() and len(sp) == 4
    r = sp.set_index(["slide", "baseline"]).loc[("SLIDE (lr 0.001)", "dense (lr 0.002)")]
    assert r["speedup_median"] == pytest.approx(0.5)          # 0.5 at 2.5 s (dense) vs 5 s (SLIDE)
    # nothing swept: plain labels, as before
    assert set(speedup.variant_labels(_planted())) == {"SLIDE", "TF-full"}


GPU_CLAIM = next(c for c in catalogue.CLAIMS if c.id == "amazon-gpu")


def _gpu_summary(name: str, curves: pd.DataFrame) -> Summary:
    lv = speedup.level_times(curves)
    return Summary(name, curves=curves, runs=_runs_of(curves), levels=lv, speedup=speedup.speedup_table(lv))


def test_gpu_claim_reads_the_stand_in_between_each_systems_best_lr():
    """No TF-GPU run in fig5: the claim reads gpu_lr between each system's best lr (by best P@1, the same
    rule for both). Planted: SLIDE's best lr reaches 0.6 at 6 s; the dense softmax's best reaches 1.0 at
    5 s and 0.6 at 3 s, its worse lr is slower than SLIDE. Picking the dense softmax's worse lr would
    make the claim hold; its best makes it fail."""
    rows = []
    for lr, rate, cap in ((2e-3, 0.1, 0.6), (3e-4, 0.01, 0.3)):
        rows += _swept(_curve_rows("SLIDE", "slide", "default", 0, *_linear(rate, 20.0, cap=cap, n=41),
                                   dataset="amazon-medium"), lr)
    for lr, rate, cap in ((6e-4, 0.2, 1.0), (2e-2, 0.02, 0.3)):
        rows += _swept(_curve_rows("dense-GPU", "torch_full_softmax", "tuned", 0,
                                   *_linear(rate, 20.0, cap=cap, n=41), dataset="amazon-medium",
                                   device="gpu"), lr)
    sums = {"fig5": _fig5_summary(_planted()), "gpu_lr": _gpu_summary("gpu_lr", pd.DataFrame(rows))}
    v = verdict.judge(GPU_CLAIM, sums)
    assert v.outcome == verdict.NOT_HOLDS
    assert "dense-GPU (lr 0.0006)" in v.measured and "SLIDE (lr 0.002)" in v.measured
    assert "lr 0.02" not in v.measured and "PyTorch" in v.measured
    # without the GPU experiments the claim stays unmeasured
    v = verdict.judge(GPU_CLAIM, {"fig5": _fig5_summary(_planted())})
    assert v.outcome.startswith(verdict.NOT_MEASURED)


def test_gpu_claim_prefers_a_real_tf_gpu_run_and_falls_back_to_the_3_seed_experiment():
    gpu_rows = []
    for s in range(3):
        gpu_rows += _curve_rows("SLIDE", "slide", "default", s, *_linear(0.1, 10.0), dataset="amazon-medium")
        gpu_rows += _curve_rows("dense-GPU", "torch_full_softmax", "tuned", s, *_linear(0.02, 40.0),
                                dataset="amazon-medium", device="gpu")
    gpu = _gpu_summary("gpu", pd.DataFrame(gpu_rows))
    v = verdict.judge(GPU_CLAIM, {"fig5": _fig5_summary(_planted()), "gpu": gpu})
    assert v.outcome == verdict.HOLDS and "gpu (3 seeds)" in v.measured       # 5x in every seed
    # fig5 with a TensorFlow GPU row decides, whatever the stand-in says
    tf_rows = _planted().copy()
    tf_gpu = tf_rows[tf_rows["system"] == "tf_full_softmax"].assign(device="gpu", label="TF-GPU")
    tf_gpu = tf_gpu.assign(run_id=tf_gpu["run_id"] + "-gpu", train_time_s=tf_gpu["train_time_s"] / 100)
    fig5 = _fig5_summary(pd.concat([tf_rows, tf_gpu], ignore_index=True))
    v = verdict.judge(GPU_CLAIM, {"fig5": fig5, "gpu": gpu})
    assert v.outcome == verdict.NOT_HOLDS and "PyTorch" not in v.measured


def test_time_to_target_speedups_name_each_sweep_member():
    from slidebench.reporting import tables
    base = {"dataset": "a", "n_threads": 16, "batch_size": 128, "protocol": "fair", "n_reached": 1,
            "train_time_s": 20.0, "throughput": 1.0, "p1_mean": 0.2}
    tab = pd.DataFrame([dict(base, label="SLIDE", system="slide", param_lr=1e-3, ttt_olympic_s=10.0),
                        dict(base, label="SLIDE", system="slide", param_lr=2e-3, ttt_olympic_s=5.0),
                        dict(base, label="dense", system="torch_full_softmax", param_lr=6e-4, ttt_olympic_s=2.0)])
    sp = tables.speedups(tab)
    assert list(sp["slide"]) == ["SLIDE (lr 0.001)", "SLIDE (lr 0.002)"]
    assert list(sp["baseline"]) == ["dense", "dense"]          # one lr: its plain label
    assert list(sp["ttt_ratio"]) == pytest.approx([0.2, 0.4])


def test_gpu_from_cores_claim_uses_the_gpu_machines_core_count():
    """'SLIDE beats TF-GPU from 8 cores': behind the GPU on 16 cores means behind on 8 (does not hold);
    behind on 4 cores says nothing about 8; no GPU experiment: not measured."""
    claim = next(c for c in catalogue.CLAIMS if c.id == "cores-gpu")
    rows = []
    for s in range(3):
        rows += _curve_rows("SLIDE", "slide", "default", s, *_linear(0.02, 40.0), dataset="amazon-medium")
        rows += _curve_rows("dense-GPU", "torch_full_softmax", "tuned", s, *_linear(0.1, 10.0),
                            dataset="amazon-medium", device="gpu")

    def gpu_at(threads):
        c = pd.DataFrame(rows).assign(n_threads=threads)
        s = _gpu_summary("gpu", c)
        s.runs = s.runs.assign(n_threads=threads)
        return s

    v = verdict.judge(claim, {"gpu": gpu_at(16)})
    assert v.outcome == verdict.NOT_HOLDS and "16 cores" in v.measured and "behind on 8" in v.note
    v = verdict.judge(claim, {"gpu": gpu_at(4)})
    assert v.outcome.startswith(verdict.NOT_MEASURED) and "4 cores" in v.outcome
    assert verdict.judge(claim, {}).outcome.startswith(verdict.NOT_MEASURED)


def test_verdict_lsh_vs_random_reads_the_plain_run_when_summarize_filled_its_swept_columns():
    """summarize._fill_swept gives every run that has a swept key in its params that key's column, the
    plain LSH run too; the rule still tells it from the sweep's members (the reference regenerated on
    2026-12-04 read 'not measured' before: every LSH run of the ablation then had param_K set)."""
    from slidebench.reporting import summarize
    base = _ablation([0.30, 0.31, 0.32], [0.20, 0.21, 0.22])["ablation"].runs
    sweep = pd.DataFrame([{"label": "SLIDE-K", "system": "slide", "config": "default", "seed": 0,
                           "final_p_at_1": 0.05, "param_K": k,
                           "params": json.dumps({"sampler": "vanilla", "hash": "dwta", "K": k, "active": 0.05})}
                          for k in (4, 8)])
    rows = pd.concat([base, sweep], ignore_index=True)
    rows["run_id"] = [f"r{i}" for i in range(len(rows))]
    recs = [{k: v for k, v in r.items() if not (k == "param_K" and pd.isna(v))} for r in rows.to_dict("records")]
    summarize._fill_swept(recs, [])
    runs = pd.DataFrame(recs)
    assert runs.loc[runs["label"] == "SLIDE", "param_K"].notna().all()     # what summarize does
    v = verdict.judge(next(c for c in catalogue.CLAIMS if c.rule == "lsh_beats_random"),
                      {"ablation": Summary("ablation", runs=runs, curves=pd.DataFrame())})
    assert v.outcome == verdict.HOLDS and "LSH 0.310 vs random 0.210" in v.measured
