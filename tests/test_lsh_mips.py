"""benchmarks/lsh_mips_recall.py: the MIPS transform's defining property, and the probe on the real path."""
import numpy as np
from hypothesis import given, settings, strategies as st

from benchmarks.lsh_mips_recall import VARIANTS, augment, probe, queries


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 40), st.integers(1, 12), st.sampled_from(["mips", "centered"]))
def test_mips_rows_share_one_norm_and_angle_orders_like_the_logit(seed, n, d, variant):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=(n, 1))       # skewed row norms
    b = rng.normal(size=n)
    h = np.abs(rng.normal(size=(1, d))).astype(np.float32)                  # ReLU-like: positive orthant
    mu = np.abs(rng.normal(size=d))
    A = augment(W, b, variant, mu).astype(np.float64)
    q = queries(h, variant, mu).astype(np.float64)[0]
    norms = np.linalg.norm(A, axis=1)
    assert np.allclose(norms, norms.max(), rtol=1e-5)
    assert q[-1] == 0.0 and q[-2] == 1.0
    cos = A @ q / (norms * np.linalg.norm(q))
    logit = W.astype(np.float32).astype(np.float64) @ h[0].astype(np.float64) + b.astype(np.float32)
    # the cosine is logit / (M |q|): the same order, up to float32 rounding of the stored rows
    assert np.allclose(cos * norms.max() * np.linalg.norm(q), logit, rtol=1e-4, atol=1e-4)
    if variant == "centered":
        assert np.allclose(q[:-2], h[0] - mu.astype(np.float32), atol=1e-6)


def test_plain_and_bias_variants_keep_the_rows():
    W = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = np.array([1.0, 2.0, 3.0], np.float32)
    assert np.array_equal(augment(W, b, "plain"), W)
    assert np.array_equal(augment(W, b, "bias"), np.hstack([W, b[:, None]]))
    assert np.array_equal(queries(W, "bias")[:, -1], np.ones(3, np.float32))
    assert set(VARIANTS) == {"plain", "bias", "mips", "centered"}


def test_probe_on_a_trained_engine_network():
    """A few steps of the engine on delicious-small: the numpy top-10 is the engine's exact predict's,
    every variant answers within the cap, and the engine's own recall is reported for an LSH network."""
    r = probe({"dataset": "delicious", "system": "lsh+rand+corr", "steps": 3, "K": [6], "L": 4,
               "cap": 200, "rows": 16, "hash_seeds": 2, "bucket_size": 64})
    assert r["top10_agrees_with_engine"] == 1.0
    assert r["uniform_recall"] == 200 / 20000
    assert 0.0 <= r["engine_lsh_recall"] <= 1.0
    assert {x["variant"] for x in r["results"]} == set(VARIANTS)
    assert r["angle_ceiling"]["mips"] == 1.0 and r["angle_ceiling"]["centered"] == 1.0   # angle = logit order
    for x in r["results"]:
        assert 0 < x["candidates"] <= 200 and 0.0 <= x["recall_at_10"] <= 1.0
        # 2^6 buckets of 64 slots hold at most 4,096 of the 20,000 rows in a table
        assert 0.0 < x["stored"] <= 64 * 64 / 20000 + 1e-9


def test_bad_arguments_fail_before_any_training(capsys):
    import pytest
    from benchmarks.lsh_mips_recall import main
    for argv in (["--L", "400"], ["--cap", "0"], ["--K", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--L must be at most 255" in err and "--cap" in err


def test_sampling_evidence_systems_train_on_the_engine():
    """Every SLIDE system of benchmarks/sampling_evidence.py (the probes included) is a configuration
    the engine accepts and trains, with the active-set composition its name says."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    import fakes
    from benchmarks.sampling_evidence import SYSTEMS
    from slidebench.trainers import get_trainer

    data = fakes.make_dataset(n_train=256, n_test=64, n_labels=1500)
    for name, (system, params) in SYSTEMS.items():
        if system != "slide" or name == "paper":
            continue
        tr = get_trainer("slide")()
        tr.setup(data, dict(params, lr=1e-3), seed=0, n_threads=1)
        c = tr.train_steps(2).counters
        assert abs(c["active_lsh"] + c["active_random"] + c["active_labels"] - 1000) <= 2 or name == "full", name
        if name.startswith("lsh+rand"):
            assert c["active_random"] == 500 and c["active_lsh"] <= 500, (name, c)
        if name.endswith("/b4096"):
            assert tr.net.describe()["table_bytes"] > 0 and tr.net.cfg.bucket_size == 4096
