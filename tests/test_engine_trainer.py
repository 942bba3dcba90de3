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
                    "K": 6, "L": 16, "range_pow": 10, "active": 0.1, "lr": 3e-3, "hidden": [32]},
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
