"""SlideTrainer: the Trainer contract on top of the engine."""
from __future__ import annotations

import math

import numpy as np
import pytest

from slidebench.contract import Dataset, Trainer
from slidebench.trainers import get_trainer

from test_engine_sampling import planted


@pytest.fixture(scope="module")
def data() -> Dataset:
    Xtr, Ytr = planted(1500, F=500, C=100, seed=0)
    Xte, Yte = planted(300, F=500, C=100, seed=1)
    ds = Dataset("planted", Xtr, Ytr, Xte, Yte)
    ds.validate()
    return ds


def test_registry_returns_slide_trainer():
    cls = get_trainer("slide")
    assert cls.system == "slide"
    assert isinstance(cls(), Trainer)


@pytest.mark.parametrize("sampler", ["vanilla", "random"])
def test_setup_train_predict_describe(data, sampler):
    tr = get_trainer("slide")()
    tr.setup(data, {"batch_size": 64, "shuffle": True, "config": "default", "sampler": sampler, "hash": "simhash",
                    "K": 6, "L": 16, "range_pow": 10, "active": 0.1, "lr": 3e-3, "hidden": [32],
                    "correction": "none"},   # the contract, not the sampling (LSH-only + correction: docs)
             seed=3, n_threads=2)
    st = tr.train_steps(10)
    assert st.n_steps == 10 and st.n_samples == 640
    assert math.isfinite(st.loss) and st.loss > 0
    assert st.epoch == pytest.approx(640 / 1500, abs=0.05)
    assert st.counters["samples"] == 640
    first = st.loss
    for _ in range(6):
        st = tr.train_steps(24)       # a few epochs
    assert st.loss < first
    top = tr.predict_topk(data.X_test, 5)
    assert top.shape == (300, 5) and top.dtype == np.int32
    p1 = np.mean(np.asarray(data.Y_test[np.arange(300), top[:, 0]]).ravel() > 0)
    assert p1 > 0.3                       # it learned something (chance is ~1.5%)
    d = tr.describe()
    assert d["system"] == "slide" and d["config"] == "default" and d["n_threads"] == 2 and d["device"] == "cpu"
    assert d["build"]["openmp"] is True
    assert d["counters"]["steps"] == 154


def test_same_seed_same_result(data):
    def run():
        tr = get_trainer("slide")()
        tr.setup(data, {"batch_size": 50, "sampler": "random", "active": 10, "hidden": [16]}, seed=5, n_threads=1)
        st = tr.train_steps(12)
        return st.loss, tr.predict_topk(data.X_test, 3)
    (l1, t1), (l2, t2) = run(), run()
    assert l1 == l2 and np.array_equal(t1, t2)


def test_paper_config_and_errors(data):
    tr = get_trainer("slide")()
    tr.setup(data, {"batch_size": 32, "config": "paper", "range_pow": 10, "L": 8}, seed=0, n_threads=1)
    assert tr.net.cfg.lr == pytest.approx(1e-4) and tr.net.cfg.hash == "dwta"
    assert tr.describe()["config"] == "paper"
    with pytest.raises(ValueError, match="unknown config"):
        get_trainer("slide")().setup(data, {"batch_size": 32, "config": "fastest"}, seed=0, n_threads=1)
    with pytest.raises(ValueError, match="unknown engine param"):
        get_trainer("slide")().setup(data, {"batch_size": 32, "learning_rate": 1}, seed=0, n_threads=1)
    with pytest.raises(ValueError, match="batch_size"):
        get_trainer("slide")().setup(data, {"sampler": "full"}, seed=0, n_threads=1)
    with pytest.raises(RuntimeError, match="setup"):
        get_trainer("slide")().train_steps(1)


@pytest.mark.parametrize("config, extra, order", [
    ("default", {}, "row"), ("paper", {"range_pow": 10, "L": 8}, "row"), ("lsh", {"range_pow": 10, "L": 8, "lsh_active": 10, "random_active": 10}, "row"),
    ("default", {"hidden": [32, 16]}, "sample"),        # two hidden layers: the row order does not run them
    ("default", {"sampler": "full"}, "sample"),          # nothing sampled
    ("default", {"out_pass": "sample"}, "sample"),       # named in the params: kept
])
def test_named_configs_train_in_the_row_order_where_the_shape_runs_it(data, config, extra, order):
    tr = get_trainer("slide")()
    tr.setup(data, {"batch_size": 32, "config": config, "active": 20, **extra}, seed=0, n_threads=2)
    assert tr.net.out_pass == order and tr.describe()["engine"]["out_pass"] == order
    assert math.isfinite(tr.train_steps(2).loss)
    with pytest.raises(ValueError, match="param 'out_pass' = 'row' needs one hidden layer"):
        get_trainer("slide")().setup(data, {"batch_size": 32, "hidden": [32, 16], "out_pass": "row"},
                                     seed=0, n_threads=1)


def test_step_counters_carry_the_active_set_composition(data):
    tr = get_trainer("slide")()
    tr.setup(data, {"batch_size": 64, "sampler": "topk", "hash": "simhash", "K": 3, "L": 8, "range_pow": 8,
                    "active": 30, "random_active": 10, "hidden": [16]}, seed=1, n_threads=1)
    st = tr.train_steps(5)
    c = st.counters
    assert c["active_random"] >= 10 and 0 < c["active_lsh"] <= 20 and c["active_labels"] >= 1
    assert c["active_labels"] + c["active_lsh"] + c["active_random"] == pytest.approx(c["mean_active_out"])
    rf = get_trainer("slide")()
    rf.setup(data, {"batch_size": 64, "sampler": "full", "hidden": [16]}, seed=1, n_threads=1)
    c = rf.train_steps(2).counters
    assert c["active_lsh"] == 0 and c["active_random"] == 0 and c["active_labels"] >= 1


def test_eval_metrics_recall_for_lsh_and_empty_otherwise(data):
    tr = get_trainer("slide")()
    # init_std 0.1: with the default 0.01 the biases (which the tables do not see) decide an
    # almost untrained network's top-10
    tr.setup(data, {"batch_size": 64, "sampler": "topk", "hash": "simhash", "K": 3, "L": 10, "range_pow": 8,
                    "active": 30, "hidden": [16], "init_std": 0.1}, seed=2, n_threads=1)
    tr.train_steps(5)
    m = tr.eval_metrics(data.X_test)
    assert set(m) == {"lsh_recall_at_10"} and 0.0 <= m["lsh_recall_at_10"] <= 1.0
    rows = tr._recall_rows.copy()
    assert len(rows) == 256                          # a fixed sample of at most 256 of the 300 rows
    assert tr.eval_metrics(data.X_test) == m         # untimed, no side effect, same rows
    assert np.array_equal(rows, tr._recall_rows)
    # a direct recount: LSH candidates against the exact top-10 on those rows
    X = data.X_test[rows]
    cands = tr.net.lsh_candidates(X)
    top = tr.net.predict_topk(X, 10)
    manual = np.mean([len(set(c.tolist()) & set(t.tolist())) / 10 for c, t in zip(cands, top)])
    assert m["lsh_recall_at_10"] == pytest.approx(manual)
    assert m["lsh_recall_at_10"] > 30 / 100          # above a random 30 of 100 labels
    for sampler in ("random", "full"):
        t2 = get_trainer("slide")()
        t2.setup(data, {"batch_size": 64, "sampler": sampler, "hidden": [16], "active": 30}, seed=2, n_threads=1)
        assert t2.eval_metrics(data.X_test) == {}


def test_asv_default_step_is_the_trainers_default():
    """benchmarks/bench_engine.py's TrainStepDefault says it times the step the headline runs: it must
    build the network from the trainer's own resolution of `default`, pass order included."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_engine
    finally:
        sys.path.pop(0)
    from slidebench.trainers.slide import SlideTrainer
    b = bench_engine.TrainStepDefault()
    b.setup(1)
    want = SlideTrainer._engine_params({"config": "default", "batch_size": bench_engine.BATCH},
                                       bench_engine.N_FEATURES, bench_engine.N_LABELS)
    assert b.net.out_pass == want["out_pass"] == "row"
    assert (b.net.cfg.sampler, b.net.cfg.correction, b.net.cfg.lr) == (want["sampler"], want["correction"], want["lr"])
    b.time_train_step(1)
