"""benchmarks/tune_pick.py: the choice rule of `make tune` (no training)."""
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


def test_find_validation_in_nested_identity():
    assert _find({"identity": {"data": {"preset": "amazon", "validation": 0.1}}}, "validation") == 0.1
    assert _find({"identity": {"data": {"preset": "amazon"}}}, "validation") is None
