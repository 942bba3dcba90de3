"""The training-points evaluation ([eval] train_subset_size) and the plateau check's use of it: a
decline counts as "reached its best" only with evidence that it is overfitting."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import fakes
from slidebench.harness import loop
from slidebench.harness.runlog import RunLogWriter, read_log
from slidebench.harness.spec import RunSpec, SpecError, load_experiment
from slidebench.metrics import eval_subset
from slidebench.reporting.plateau import overfit_evidence, plateau_md, plateau_table
from slidebench.trainers import register

register("fake", "fakes:FakeTrainer")


def _run(ev: dict, budget=None) -> RunSpec:
    return RunSpec(experiment="t", label="FAKE", system="fake", config="default",
                   params={"step_time": 0.25, "fake_clock": True}, sweep={}, seed=3, n_threads=1, batch_size=100,
                   protocol="fair", data={"preset": "amazon", "scale": "tiny", "data_dir": None, "seed": 0},
                   budget=budget or {"train_seconds": 3.0, "stop_at_target": False}, eval=ev)


def _execute(tmp_path, run):
    data = fakes.make_dataset()
    tr = fakes.FakeTrainer()
    with RunLogWriter(tmp_path / "log.jsonl") as log:
        stop = loop.execute(run, data, tr, log, clock=fakes.CLOCK)
    return read_log(tmp_path / "log.jsonl"), tr, data, stop


def test_every_evaluation_also_scores_the_same_fixed_training_rows_untimed(tmp_path):
    run = _run({"every_seconds": 1.0, "subset_size": 200, "train_subset_size": 150})
    log, tr, data, stop = _execute(tmp_path, run)
    n_ev = len(log.evals)
    assert n_ev >= 4
    want = np.asarray(eval_subset(data.X_train.shape[0], 150, 0))
    # predict_topk calls alternate: test subset, then the training rows, per evaluation; then the final test
    test_rows, train_rows = tr.predicted[0:2 * n_ev:2], tr.predicted[1:2 * n_ev:2]
    assert all(np.array_equal(r, want) for r in train_rows)
    assert all(len(r) == 200 for r in test_rows)
    for e in log.evals:
        te = e["train_eval"]
        assert te["n"] == 150 and 0.0 <= te["p_at_1"] <= 1.0
        # the fake's P@1 is its quality on the drawn u values: recompute it on the training rows
        Xl = data.X_train[want][:, :data.n_labels].tocsr()
        u = Xl.data[Xl.indptr[:-1]]
        q = min(1.0, 0.01 * e["step"])
        assert te["p_at_1"] == pytest.approx(float(np.mean(u <= q)))
        assert e["train_time_s"] == pytest.approx(0.25 * e["step"])     # scoring is not train time
    assert stop["train_time_s"] == pytest.approx(0.25 * stop["steps"])


def test_without_the_key_nothing_changes(tmp_path):
    log, tr, data, stop = _execute(tmp_path, _run({"every_seconds": 1.0, "subset_size": 200}))
    assert all("train_eval" not in e for e in log.evals)
    assert len(tr.predicted) == len(log.evals) + 1            # the evaluations and the final test, nothing else


SPEC = """
[experiment]
name = "{name}"
[data]
preset = "amazon"
scale = "tiny"
[budget]
train_seconds = 1
[eval]
every_seconds = 1
subset_size = 10
{extra}
[run]
seeds = [0]
threads = [1]
batch_sizes = [64]
[[systems]]
label = "SLIDE"
system = "slide"
"""


@pytest.mark.parametrize("value", ["0", "-5", '"100"', "1.5", "true"])
def test_bad_train_subset_size_names_the_key(tmp_path, value):
    p = tmp_path / "bad.toml"
    p.write_text(SPEC.replace("{name}", "bad").replace("{extra}", f"train_subset_size = {value}"))
    with pytest.raises(SpecError, match="train_subset_size"):
        load_experiment(p)


def test_absent_key_keeps_the_run_identity(tmp_path):
    """The feature must not change the config hash of runs that do not use it: fig5's SLIDE seed-0 ids
    are the committed reference's (results/summary/fig5_runs.csv), so a change to every config hash,
    this feature's or any other, is caught and earlier logs stay reusable."""
    from pathlib import Path

    from slidebench.harness.spec import expand
    repo = Path(__file__).resolve().parent.parent
    ids = {r.run_id for r in expand(load_experiment(repo / "experiments" / "fig5.toml"))}
    ref = pd.read_csv(repo / "results" / "summary" / "fig5_runs.csv")
    pinned = set(ref.loc[(ref["label"] == "SLIDE") & (ref["seed"] == 0), "run_id"])
    assert len(pinned) == 2                      # one per data set of the headline
    assert pinned <= ids
    b = tmp_path / "b.toml"
    b.write_text(SPEC.replace("{name}", "b").replace("{extra}", "train_subset_size = 50"))
    a = tmp_path / "a.toml"
    a.write_text(SPEC.replace("{name}", "a").replace("{extra}", ""))
    ra, rb = expand(load_experiment(a))[0], expand(load_experiment(b))[0]
    assert "train_subset_size" not in ra.eval and rb.eval["train_subset_size"] == 50
    assert ra.config_hash != rb.config_hash


def test_train_subset_larger_than_the_training_set_is_refused_before_running(tmp_path):
    from slidebench.harness.checks import check_runs
    from slidebench.harness.spec import expand
    p = tmp_path / "big.toml"
    p.write_text(SPEC.replace("{name}", "big").replace("{extra}", "train_subset_size = 10000000"))
    exp = load_experiment(p)
    with pytest.raises(SpecError, match="train_subset_size.*larger than"):
        check_runs(exp, expand(exp), cores=2)


# ------------------------------------------------------------------------------- the plateau check


def _rows(label, system, config, seed, t, p, lr, dataset="amazon-medium", train=None, run=None):
    rows = []
    for i, (ti, pi) in enumerate(zip(t, p)):
        r = {"run_id": run or f"x/{label}/s{seed}", "dataset": dataset, "label": label, "system": system,
             "config": config, "seed": seed, "train_time_s": ti, "p_at_1": pi,
             "params": json.dumps({"lr": lr})}
        if train is not None:
            r["train_p_at_1"] = train[i]
        rows.append(r)
    return rows


T = np.linspace(0, 40, 41)
PEAKED = np.where(T <= 20, 0.01 * T, 0.2 - 0.004 * (T - 20))            # 0.2 at 20 s, 0.12 at 40 s


def _headline(lr=1e-2):
    rows = []
    for s in range(3):
        rows += _rows("SLIDE", "slide", "default", s, T, PEAKED, lr)
        rows += _rows("TF-CPU", "tf_full_softmax", "tuned", s, T, 0.001 * T, 1e-2)
    return pd.DataFrame(rows)


def test_a_decline_with_rising_training_p1_at_the_same_lr_is_overfitting():
    ev = pd.DataFrame(_rows("SLIDE", "slide", "default", 0, T, PEAKED, 1e-2, train=0.012 * T, run="o/1")
                      + _rows("SLIDE", "slide", "default", 0, T, 0.004 * T, 2e-3, train=0.006 * T, run="o/2"))
    tab = plateau_table(_headline(), ev).set_index("dataset")
    row = tab.loc["amazon-medium"]
    assert row["state"] == "overfit" and bool(row["reached_best"]) and not bool(row["plateaued"])
    e = row["evidence"]
    assert e["lr"] == 1e-2 and e["n_runs"] == 1                         # the 2e-3 run is not evidence
    assert e["test_peak"] == pytest.approx(0.2) and e["test_end"] == pytest.approx(0.12)
    assert e["train_at_peak"] == pytest.approx(0.24) and e["train_end"] == pytest.approx(0.48)
    md = plateau_md(_headline(), ev)
    assert "yes: it peaked inside the budget, then overfit" in md and "overfitting." in md
    assert "At lr 0.002 its test P@1 was still rising at 40 s (0.160)." in md     # the other lr, reported


def test_a_decline_without_evidence_or_with_falling_training_p1_is_not_reached():
    # no evidence at all
    tab = plateau_table(_headline()).set_index("dataset")
    assert tab.loc["amazon-medium", "state"] == "declined" and not bool(tab.loc["amazon-medium", "reached_best"])
    # evidence at another learning rate only
    other = pd.DataFrame(_rows("SLIDE", "slide", "default", 0, T, PEAKED, 5e-3, train=0.012 * T))
    assert plateau_table(_headline(), other).set_index("dataset").loc["amazon-medium", "state"] == "declined"
    # evidence at the same lr, but the training P@1 falls with the test P@1: a too-high lr, not overfitting
    unstable = pd.DataFrame(_rows("SLIDE", "slide", "default", 0, T, PEAKED, 1e-2, train=PEAKED * 1.1))
    t = plateau_table(_headline(), unstable).set_index("dataset")
    assert t.loc["amazon-medium", "state"] == "declined" and not t.loc["amazon-medium", "evidence"]["overfit"]
    md = plateau_md(_headline(), unstable)
    assert "not the signature of overfitting" in md
    # the table says what the evidence showed, not that there was none (a 2026-12-04 rerun's report did)
    assert "did not keep rising (not overfitting" in md and "no run with training-point P@1" not in md
    assert "no run with training-point P@1" in plateau_md(_headline(), other)
    assert overfit_evidence(unstable.drop(columns=["train_p_at_1"]), "amazon-medium", "slide", "default",
                            1e-2) is None


def test_a_fall_from_an_early_peak_counts_as_a_decline_whatever_the_last_quarter():
    """experiments/long.toml's shape: a peak at a third of the budget, a 40% fall, then a slow climb back
    in the last quarter (+17% there). The last-quarter rule alone says "still rising"; the peak rule says
    declined, and rising training P@1 at the same lr makes it overfitting. A curve ending 10% under an
    early peak (evaluation noise) or 30% under a late one keeps the last-quarter reading."""
    t = np.linspace(0, 120, 121)
    back = np.where(t <= 40, 0.005 * t, np.where(t <= 90, 0.2 - 0.0024 * (t - 40), 0.08 + 0.00067 * (t - 90)))
    cur = pd.DataFrame(_rows("SLIDE", "slide", "default", 0, t, back, 3e-3, train=0.005 * t, run="long/S"))
    row = plateau_table(cur).set_index("dataset").loc["amazon-medium"]
    assert row["rise_median"] > 0.05                       # what the last-quarter rule alone would read
    assert row["state"] == "declined" and not bool(row["reached_best"])
    row = plateau_table(cur, cur).set_index("dataset").loc["amazon-medium"]
    assert row["state"] == "overfit" and bool(row["reached_best"])
    noisy = np.where(t <= 40, 0.005 * t, 0.18 + 0.0001 * (t - 40))     # 0.2 at 40 s, ends 0.188: 6% under
    assert plateau_table(pd.DataFrame(_rows("SLIDE", "slide", "default", 0, t, noisy, 3e-3))) \
        .set_index("dataset").loc["amazon-medium", "state"] == "plateaued"
    late = np.where(t <= 100, 0.002 * t, 0.2 - 0.003 * (t - 100))     # peak at 100 s (last quarter), -30%
    assert plateau_table(pd.DataFrame(_rows("SLIDE", "slide", "default", 0, t, late, 3e-3))) \
        .set_index("dataset").loc["amazon-medium", "state"] == "declined"   # by the last-quarter rule, as before


def _write_summary(results, exp: str, cur: pd.DataFrame):
    """<exp>_curves.csv and <exp>_runs.csv under results/summary, as summarize writes them, from curve rows
    (_rows); returns the summary folder."""
    sdir = results / "summary"
    sdir.mkdir(exist_ok=True)
    cur = cur.assign(experiment=exp, n_threads=2, batch_size=128, protocol="fair", device="cpu",
                     step=lambda d: (d["train_time_s"] * 10).astype(int))
    runs = cur.groupby("run_id").agg(label=("label", "first"), system=("system", "first"),
                                     config=("config", "first"), seed=("seed", "first"),
                                     dataset=("dataset", "first"), params=("params", "first"),
                                     best_p_at_1=("p_at_1", "max")).reset_index()
    runs = runs.assign(experiment=exp, n_threads=2, batch_size=128, protocol="fair", device="cpu",
                       complete=True, final_p_at_1=0.1, train_time_s=40.0, samples_seen=1000)
    cur.to_csv(sdir / f"{exp}_curves.csv", index=False)
    runs.to_csv(sdir / f"{exp}_runs.csv", index=False)
    return sdir


def test_report_reads_the_overfit_summary_as_evidence(tmp_path):
    """The real path: summaries on disk, render_report picks up results/summary/overfit_curves.csv."""
    from slidebench.reporting.report import render_report
    sdir = _write_summary(tmp_path, "fig5", _headline())
    before = render_report(tmp_path, ["fig5"])
    assert "**no**: it peaked earlier and declined" in before
    ev = pd.DataFrame(_rows("SLIDE", "slide", "default", 0, T, PEAKED, 1e-2, train=0.012 * T, run="overfit/SLIDE/s0"))
    ev.assign(experiment="overfit", param_lr=1e-2).drop(columns=["params"]).to_csv(sdir / "overfit_curves.csv",
                                                                                   index=False)
    after = render_report(tmp_path, ["fig5"])
    assert "yes: it peaked inside the budget, then overfit" in after


def test_long_experiment_is_its_own_overfit_evidence(tmp_path):
    """The budget check (experiments/long.toml) scores training points itself: its report section carries
    the plateau check, judged on its own runs, and its figure is drawn; an experiment that is not in the
    plateau list gets no check."""
    from slidebench.reporting.plots import make_figures
    from slidebench.reporting.report import render_report
    rows = (_rows("SLIDE", "slide", "default", 0, T, PEAKED, 3e-3, train=0.012 * T, run="long/SLIDE/s0")
            + _rows("TF-CPU", "tf_full_softmax", "tuned", 0, T, 0.001 * T, 2e-2, train=0.001 * T,
                    run="long/TF-CPU/s0"))
    sdir = _write_summary(tmp_path, "long", pd.DataFrame(rows).assign(epoch=lambda d: d["train_time_s"] / 20))
    text = render_report(tmp_path, ["long"])
    assert "Budget check" in text and "Plateau check" in text
    assert "yes: it peaked inside the budget, then overfit" in text
    assert "in this experiment's own runs (SLIDE's system" in text
    paths = make_figures(tmp_path, ["long"], progress=False)
    assert any(p.name == "long.png" for p in paths)
    (sdir / "long_curves.csv").rename(sdir / "other_curves.csv")
    (sdir / "long_runs.csv").rename(sdir / "other_runs.csv")
    assert "Plateau check" not in render_report(tmp_path, ["other"])


def test_summarize_carries_training_p1_and_the_figure_draws_it(tmp_path):
    """Real logs through summarize (train_p_at_1 column only when logged) and the overfit figure."""
    from slidebench.reporting.plots import make_figures
    from slidebench.reporting.summarize import summarize_experiment
    res = tmp_path / "results"
    for lr, tsub in ((1e-2, 150), (5e-3, 150)):
        run = _run({"every_seconds": 1.0, "subset_size": 200, "train_subset_size": tsub})
        run = dataclasses.replace(run, experiment="overfit", params={**run.params, "lr": lr})
        d = res / "raw" / "overfit" / "FAKE"
        d.mkdir(parents=True, exist_ok=True)
        with RunLogWriter(d / f"s3-{lr:g}.jsonl") as log:
            loop.execute(run, fakes.make_dataset(), fakes.FakeTrainer(), log, clock=fakes.CLOCK)
    out = summarize_experiment("overfit", res)
    cur = out["curves"]
    assert "train_p_at_1" in cur.columns and cur["train_p_at_1"].notna().all()
    assert cur["train_p_at_1"].max() > 0
    paths = make_figures(res, ["overfit"], progress=False)
    assert any(p.name == "overfit.png" and p.stat().st_size > 10_000 for p in paths)
    # a run without the key: no such column in its experiment's curves
    run = _run({"every_seconds": 1.0, "subset_size": 200})
    run = dataclasses.replace(run, experiment="plain")
    d = res / "raw" / "plain" / "FAKE"
    d.mkdir(parents=True)
    with RunLogWriter(d / "s3-x.jsonl") as log:
        loop.execute(run, fakes.make_dataset(), fakes.FakeTrainer(), log, clock=fakes.CLOCK)
    assert "train_p_at_1" not in summarize_experiment("plain", res, write=False)["curves"].columns
