"""The network with LSH-sampled layers: labels active, determinism across threads, refresh schedules,
save/load with tables, approximate predict, and learning on a planted task against `full`."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from slidebench.engine import Network

from test_engine_network import NumpyNet, random_batch


def planted(n, F=2000, C=500, proto=12, keep=8, noise=4, seed=0, max_labels=2):
    """Each label owns a prototype of `proto` features; a sample draws 1..max_labels labels and
    `keep` features of each label's prototype plus `noise` uniform features (values 1)."""
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(1234).choice(F, size=(C, proto))
    rows, cols, yr, yc = [], [], [], []
    for i in range(n):
        ys = rng.choice(C, size=rng.integers(1, max_labels + 1), replace=False)
        f = set()
        for y in ys:
            f.update(rng.choice(protos[y], keep, replace=False).tolist())
        f.update(rng.choice(F, noise).tolist())
        f = sorted(f)
        rows += [i] * len(f)
        cols += f
        yr += [i] * len(ys)
        yc += sorted(ys.tolist())
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, F), dtype=np.float32)
    Y = sp.csr_matrix((np.ones(len(yr), np.float32), (yr, yc)), shape=(n, C), dtype=np.float32)
    for M in (X, Y):
        M.indices = M.indices.astype(np.int32)
        M.indptr = M.indptr.astype(np.int32)
    return X, Y


def p_at_1(net, X, Y, mode="exact"):
    top = net.predict_topk(X, 1, mode=mode)[:, 0]
    return float(np.mean(np.asarray(Y[np.arange(X.shape[0]), top]).ravel() > 0))


LSH = {"hidden": [32], "hash": "simhash", "K": 6, "L": 20, "range_pow": 10, "active": 0.05}


@pytest.mark.parametrize("sampler", ["vanilla", "topk", "threshold"])
def test_lsh_labels_always_active_and_candidates_used(sampler):
    rng = np.random.default_rng(1)
    F, C = 200, 800
    net = Network.from_params(F, C, {**LSH, "sampler": sampler, "threshold_m": 2, "min_active": 30}, seed=2,
                              n_threads=2)
    net.debug_keep_active = True
    for _ in range(4):
        X, Y = random_batch(rng, 32, F, C, nnz=10, max_labels=6, empty_label_rows=(3,))
        net.train_batch(X, Y)
        for s, act in enumerate(net.last_active):
            labels = Y.indices[Y.indptr[s]:Y.indptr[s + 1]]
            assert list(act[:len(labels)]) == list(labels)      # labels first, always active
            assert len(np.unique(act)) == len(act)
            assert len(act) >= 30
            assert len(act) <= net.cfg.target(1) + len(labels) + 30
    c = net.counters()
    assert c["mean_lsh_candidates"] > 0                          # the tables did return neurons
    assert c["table_bytes"] > 0


@pytest.mark.parametrize("sampler", ["vanilla", "topk", "threshold"])
def test_lsh_training_bitwise_deterministic_across_threads(sampler):
    rng = np.random.default_rng(4)
    F, C = 150, 600
    batches = [random_batch(rng, 32, F, C, nnz=8) for _ in range(6)]
    params = {**LSH, "sampler": sampler, "rehash_every": 64, "rebuild_every": 128, "lr": 1e-2}
    runs = []
    for nt in (1, 1, 2):
        net = Network.from_params(F, C, params, seed=3, n_threads=nt)
        losses = [net.train_batch(X, Y) for X, Y in batches]
        runs.append((net.get_params(), losses, net.counters()))
    (p1, l1, c1), (p1b, l1b, _), (p2, l2, _) = runs
    assert c1["rehashes"] >= 1 and c1["rebuilds"] >= 1
    assert l1 == l1b == l2
    for k in p1:
        assert np.array_equal(p1[k], p1b[k]), k
        assert np.array_equal(p1[k], p2[k]), k


def test_fixed_schedule_counts_rehash_and_rebuild():
    rng = np.random.default_rng(0)
    net = Network.from_params(50, 300, {**LSH, "sampler": "vanilla", "rehash_every": 100, "rebuild_every": 400})
    X, Y = random_batch(rng, 50, 50, 300)
    for _ in range(17):          # 850 samples: refresh checks happen before each batch
        net.train_batch(X, Y)
    c = net.counters()
    # before batch i (i = 0..16) the samples seen are 50 i; rebuild at 400, 800 (resets the rehash
    # clock), rehash whenever 100 samples passed since the last refresh
    assert c["rebuilds"] == 2
    assert c["rehashes"] == 6


def test_exponential_schedule_intervals_grow():
    rng = np.random.default_rng(0)
    net = Network.from_params(50, 300, {**LSH, "sampler": "vanilla", "rehash": "exponential", "rehash_n0": 2,
                                        "rehash_decay": 0.7, "rebuild_every": 10**9})
    X, Y = random_batch(rng, 8, 50, 300)
    at = []
    for i in range(40):
        before = net.counters()["rehashes"]
        net.train_batch(X, Y)
        if net.counters()["rehashes"] > before:
            at.append(i)
    gaps = np.diff(at)
    # intervals round(2 * e^(0.7 i)) = 2, 4, 8, 16 batches
    assert list(gaps[:3]) == [4, 8, 16]
    assert at[0] == 2


def test_save_load_with_tables_continues_identically(tmp_path):
    rng = np.random.default_rng(6)
    F, C = 100, 400
    batches = [random_batch(rng, 16, F, C) for _ in range(6)]
    # save at a rehash boundary: the loaded net rebuilds its tables from the same weights
    params = {**LSH, "sampler": "vanilla", "insertion": "fifo", "rehash_every": 48, "rebuild_every": 10**6}
    a = Network.from_params(F, C, params, seed=1)
    for X, Y in batches:
        a.train_batch(X, Y)
    b = Network.from_params(F, C, params, seed=1)
    for X, Y in batches[:3]:
        b.train_batch(X, Y)
    b.save(tmp_path / "n.npz")
    c = Network.load(tmp_path / "n.npz", n_threads=2)
    for X, Y in batches[3:]:
        c.train_batch(X, Y)
    pa, pc = a.get_params(), c.get_params()
    for k in pa:
        assert np.array_equal(pa[k], pc[k]), k


def test_predict_lsh_mode_scores_only_candidates():
    rng = np.random.default_rng(9)
    F, C = 120, 500
    net = Network.from_params(F, C, {**LSH, "sampler": "vanilla", "init_std": 0.2}, seed=0, n_threads=2)
    X, Y = random_batch(rng, 40, F, C)
    exact = net.predict_topk(X, 5, mode="exact")
    approx = net.predict_topk(X, 5, mode="lsh")
    assert approx.shape == (40, 5) and approx.min() >= 0 and approx.max() < C
    assert all(len(set(r)) == 5 for r in approx)
    # approximate top-k ids are ordered by their exact logits (they are scored exactly)
    logits = NumpyNet(net.get_params(), "adam").forward(X)[-1]
    v = np.take_along_axis(logits, approx.astype(np.int64), 1)
    assert np.all(np.diff(v, axis=1) <= 1e-5)
    # and never beat the exact top-1
    assert np.all(v[:, 0] <= logits[np.arange(40), exact[:, 0]] + 1e-5)


@pytest.mark.slow
def test_lsh_learns_within_two_points_of_full_at_a_fraction_of_the_work():
    X, Y = planted(4000)
    Xt, Yt = planted(1000, seed=1)
    base = {"hidden": [64], "lr": 3e-3}
    lsh = {**base, "sampler": "vanilla", "hash": "simhash", "K": 8, "L": 50, "range_pow": 14, "active": 0.05,
           "rehash_every": 1280, "rebuild_every": 12800}
    res = {}
    for name, params in (("full", {**base, "sampler": "full"}), ("lsh", lsh)):
        net = Network.from_params(X.shape[1], Y.shape[1], params, seed=0, n_threads=2)
        for _ in range(3):
            for b in range(0, X.shape[0], 128):
                net.train_batch(X[b:b + 128], Y[b:b + 128])
        res[name] = (p_at_1(net, Xt, Yt), net.counters())
    (p_full, _), (p_lsh, c) = res["full"], res["lsh"]
    print(f"\nplanted task P@1: full {p_full:.3f}, lsh {p_lsh:.3f}; lsh active fraction "
          f"{c['frac_out_active']:.3f}, output rows touched per batch {c['frac_out_touched']:.3f}, "
          f"LSH candidates per sample {c['mean_lsh_candidates']:.1f}, rehashes {c['rehashes']}")
    assert p_full > 0.8                      # the task is learnable
    assert p_lsh >= p_full - 0.02
    assert c["frac_out_active"] < 0.07       # at about 5% of the output layer's work
    assert c["mean_lsh_candidates"] > 5      # the tables, not only the padding, chose neurons


def test_lsh_on_every_layer_runs_deterministically():
    """lsh_layers="all": layer 0's tables hash the columns of the feature-major W0 and are queried
    with the sparse input; the output's with the sampled hidden layer (densified)."""
    rng = np.random.default_rng(7)
    F, C = 300, 400
    batches = [random_batch(rng, 24, F, C, nnz=12) for _ in range(4)]
    params = {"hidden": [48], "sampler": "vanilla", "lsh_layers": "all", "hash": "simhash", "K": 4, "L": 12,
              "range_pow": 8, "active": 0.25, "rehash_every": 48, "lr": 1e-2}
    out = []
    for nt in (1, 2):
        net = Network.from_params(F, C, params, seed=5, n_threads=nt)
        net.debug_keep_active = True
        losses = [net.train_batch(X, Y) for X, Y in batches]
        act = net.last_active_layers
        assert all(len(a) == 12 for a in act[0])             # 25% of 48 hidden neurons
        X, Y = batches[-1]
        for s, a in enumerate(act[1]):
            labels = Y.indices[Y.indptr[s]:Y.indptr[s + 1]]
            assert list(a[:len(labels)]) == list(labels)
        assert np.isfinite(losses).all()
        assert net.counters()["rehashes"] >= 1
        out.append((losses, net.get_params(), net.predict_topk(X, 3, mode="lsh")))
    assert out[0][0] == out[1][0]
    for k in out[0][1]:
        assert np.array_equal(out[0][1][k], out[1][1][k]), k
    assert np.array_equal(out[0][2], out[1][2])


def test_rehash_every_auto_scales_with_the_cost_model():
    from slidebench.engine.network import parse_config
    base = {"sampler": "vanilla", "hash": "dwta", "K": 4, "L": 50, "rehash_every": "auto", "batch_size": 128}
    small = parse_config(135909, 20000, {**base, "active": 1000}).rehash_samples()
    big = parse_config(135909, 670091, {**base, "active": 1000}).rehash_samples()
    dense_step = parse_config(135909, 670091, {**base, "active": 3000}).rehash_samples()
    assert small % 128 == 0 and big % 128 == 0
    assert big > 10 * small                 # more neurons to rehash -> rarer rehashes
    assert dense_step < big                 # dearer steps -> a rehash is a smaller share
    assert parse_config(100, 50, {**base, "rehash_every": 640}).rehash_samples() == 640
    with pytest.raises(ValueError, match="'rehash_every'"):
        parse_config(100, 50, {**base, "rehash_every": "sometimes"})
