"""benchmarks/tune_pick.py: the choice rule of `make tune` (no training)."""
import pytest

from benchmarks.tune_pick import _find, choose


def _row(ds, label, lr, p1, **kw):
    return {"dataset": ds, "label": label, "params": {"lr": lr, **kw}, "final_p_at_1": p1, "validation": 0.1}


def test_choose_highest_validation_p1_per_dataset_and_label():
    rows = [_row("a", "SLIDE", 1e-3, 0.10), _row("a", "SLIDE", 3e-3, 0.20), _row("a", "SLIDE", 1e-2, 0.15),
            _row("b", "SLIDE", 1e-3, 0.30), _row("b", "SLIDE", 1e-2, 0.05),
            _row("a", "TF", 1e-3, 0.12, num_sampled=0.1), _row("a", "TF", 1e-2, 0.11, num_sampled=0.02)]
    best = choose(rows)
    assert best[("a", "SLIDE")]["params"]["lr"] == 3e-3
    assert best[("b", "SLIDE")]["params"]["lr"] == 1e-3
    assert best[("a", "TF")]["params"] == {"lr": 1e-3, "num_sampled": 0.1}


def test_ties_go_to_the_smaller_learning_rate():
    rows = [_row("a", "S", 1e-2, 0.2001), _row("a", "S", 1e-3, 0.2004), _row("a", "S", 3e-3, 0.1999)]
    assert choose(rows)[("a", "S")]["params"]["lr"] == 1e-3


def test_ties_on_p1_go_to_the_lower_training_loss_before_the_learning_rate():
    rows = [_row("a", "S", 1e-3, 0.007, ), _row("a", "S", 5e-3, 0.007), _row("a", "S", 2e-2, 0.007)]
    for r, loss in zip(rows, (12.0, 11.9, 12.1)):
        r["train_loss"] = loss
    assert choose(rows)[("a", "S")]["params"]["lr"] == 5e-3
    # a higher P@1 still wins over a lower loss
    rows.append({**_row("a", "S", 1e-2, 0.010), "train_loss": 12.2})
    assert choose(rows)[("a", "S")]["params"]["lr"] == 1e-2


def test_find_validation_in_nested_identity():
    assert _find({"identity": {"data": {"preset": "amazon", "validation": 0.1}}}, "validation") == 0.1
    assert _find({"identity": {"data": {"preset": "amazon"}}}, "validation") is None


def test_compare_reference_parses_the_verdict_ratio_and_its_bounds():
    from benchmarks.compare_reference import first_ratio
    assert first_ratio("amazon-medium: < 0.94x [0.86, 0.98] to P@1 0.219 (85% of the best)") == ("<", 0.94, 0.86, 0.98)
    assert first_ratio("median speedup 4.3x [3.4, 4.8] at 50%") == ("", 4.3, 3.4, 4.8)
    assert first_ratio("FIFO 0.0582 s vs reservoir 0.0797 s (0.73x; paper 2.1x)") == ("", 0.73, 0.73, 0.73)
    assert first_ratio("no GPU run") is None


def test_compare_reference_also_widens_the_spread_to_the_earlier_runs(monkeypatch, capsys):
    import pandas as pd

    import benchmarks.compare_reference as cr

    def t(measured, verdict="holds"):
        return pd.DataFrame({"claim": ["c1"], "experiment": ["fig5"], "verdict": [verdict],
                             "measured": [measured]}).set_index("claim")
    tables = {"ref": t("2.2x [2.1, 2.4]"), "old": t("1.9x [1.9, 2.0]"), "new": t("1.95x [1.9, 2.0]"),
              "flip": t("2.2x [2.1, 2.4]", "does not hold")}
    monkeypatch.setattr(cr, "table", lambda d, only: (tables[d], {}))
    assert cr.main(["ref", "new", "--drift", "1"]) == 1       # 1.95 is outside the reference's [2.1, 2.4]
    assert "OUTSIDE" in capsys.readouterr().out
    assert cr.main(["ref", "new", "--also", "old", "--drift", "1"]) == 0      # inside the union [1.9, 2.4]
    out = capsys.readouterr().out
    assert "union over the reference and 1 earlier run" in out and "[1.90, 2.40]" in out
    assert cr.main(["ref", "flip", "--also", "old"]) == 1     # a verdict that flips is never excused


def test_compare_reference_widens_a_ratio_by_the_drift_and_reads_bounds_one_sided(monkeypatch, capsys):
    import pandas as pd

    import benchmarks.compare_reference as cr

    def t(measured, verdict="holds"):
        return pd.DataFrame({"claim": ["c1"], "experiment": ["fig5"], "verdict": [verdict],
                             "measured": [measured]}).set_index("claim")
    tables = {"ref": t("2.0x [1.8, 2.2]"), "near": t("1.5x [1.4, 1.6]"), "far": t("1.2x [1.1, 1.3]"),
              "lb": t("> 1.2x [1.0, 1.2]"), "lb_up": t("> 1.6x [1.4, 1.7]"), "lb_down": t("> 0.9x [0.8, 1.0]"),
              "exact_low": t("0.8x [0.7, 0.9]")}
    monkeypatch.setattr(cr, "table", lambda d, only: (tables[d], {}))
    assert cr.main(["ref", "near", "--drift", "1.4"]) == 0    # 1.5 in [1.8/1.4, 2.2*1.4] = [1.29, 3.08]
    assert "inside the stated spread (outside the seeds' range)" in capsys.readouterr().out
    assert cr.main(["ref", "far", "--drift", "1.4"]) == 1     # 1.2 below 1.29
    assert "OUTSIDE" in capsys.readouterr().out
    assert cr.main(["ref", "near", "--drift", "1"]) == 1      # the seeds' range alone
    # two lower bounds are both true whatever their values; a lower bound only needs to stay below the top
    assert cr.main(["lb", "lb_up"]) == 0 and cr.main(["lb", "lb_down"]) == 0
    assert cr.main(["ref", "lb_up", "--drift", "1.4"]) == 0
    # a measured ratio must not fall below a lower bound by more than the drift: 0.8 < 1.0 / 1.2
    assert cr.main(["lb", "exact_low", "--drift", "1.2"]) == 1
    assert cr.main(["lb", "exact_low", "--drift", "1.4"]) == 0     # 0.8 >= 1.0 / 1.4
    with pytest.raises(SystemExit):
        cr.main(["ref", "near", "--drift", "0.5"])


def test_compare_reference_compares_ratios_at_the_references_level(monkeypatch, capsys):
    """The verdict quotes the ratio at the highest level the baseline reached in every seed, and that
    level can move between runs (delicious: 70% of the best, then 60%). A rerun is compared at the
    reference's level, read from its own speedup table, with its own headline ratio printed beside."""
    import types

    import pandas as pd

    import benchmarks.compare_reference as cr

    def sp(rows):
        return pd.DataFrame([{"dataset": "delicious-medium", "slide": "SLIDE", "slide_config": "default",
                              "baseline": "TF-CPU", "baseline_system": "tf_full_softmax", "baseline_config": "tuned",
                              "baseline_device": "cpu", "level_frac": f, "speedup_median": m, "speedup_min": lo,
                              "speedup_max": hi, "bound": ""} for f, m, lo, hi in rows])

    def t(measured):
        return pd.DataFrame({"claim": ["delicious-cpu"], "experiment": ["fig5"], "verdict": ["holds"],
                             "measured": [measured]}).set_index("claim")
    ref = (t("delicious-medium: 1.3x [1.2, 1.5] to P@1 0.144 (70% of the best; TF-CPU reached it in 3/3 "
             "seeds, SLIDE in 3/3)"), {"fig5": types.SimpleNamespace(speedup=sp([(0.6, 1.5, 1.45, 1.7),
                                                                                  (0.7, 1.29, 1.19, 1.49)]))})
    new = (t("delicious-medium: 1.6x [1.6, 1.7] to P@1 0.125 (60% of the best; TF-CPU reached it in 3/3 "
             "seeds, SLIDE in 3/3)"), {"fig5": types.SimpleNamespace(speedup=sp([(0.6, 1.6, 1.6, 1.7),
                                                                                  (0.7, 1.40, 1.2, 1.5)]))})
    monkeypatch.setattr(cr, "table", lambda d, only: {"ref": ref, "new": new}[d])
    assert cr.main(["ref", "new"]) == 0            # at 70%: 1.40 inside [1.19, 1.49]
    out = capsys.readouterr().out
    assert "1.29x [1.19, 1.49] (70%)" in out and "1.40x [1.20, 1.50]" in out
    assert "own headline ratio: 1.60x [1.60, 1.70] at 60%" in out
    new[1]["fig5"].speedup.loc[1, "speedup_median"] = 1.6   # the same level, now outside the seeds' spread
    assert cr.main(["ref", "new", "--drift", "1"]) == 1
    assert "OUTSIDE" in capsys.readouterr().out


def test_compare_reference_says_not_rerun_for_a_gpu_claim_whose_runs_the_rerun_lacks(monkeypatch, capsys):
    """The GPU claims read gpu_lr / gpu (a lent GPU machine); a 2-core headline rerun has neither. That
    is 'not rerun', not a disagreement; a rerun that has them is compared as usual."""
    import pandas as pd

    import benchmarks.compare_reference as cr
    from slidebench.reporting.summaries import Summary

    def t(verdict):
        return pd.DataFrame({"claim": ["amazon-gpu"], "experiment": ["fig5"], "verdict": [verdict],
                             "measured": ["-"]}).set_index("claim")
    gpu = {"gpu_lr": Summary("gpu_lr", runs=pd.DataFrame({"seed": [0]}))}
    tables = {"ref": (t("does not hold"), gpu), "cpu": (t("not measured here (no GPU)"), {}),
              "gpu2": (t("holds"), gpu)}
    monkeypatch.setattr(cr, "table", lambda d, only: tables[d])
    assert cr.main(["ref", "cpu"]) == 0
    assert "not rerun: the reference reads gpu_lr" in capsys.readouterr().out
    assert cr.main(["ref", "gpu2"]) == 1           # both have the GPU runs: a flipped verdict counts
