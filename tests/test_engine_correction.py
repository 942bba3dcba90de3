"""The explicit active set (labels + LSH share + random block), its counters, the sampling
correction against a NumPy reference, K = "auto", and the configuration errors of those keys."""
from __future__ import annotations

import math

import numpy as np
import pytest

from slidebench.engine import Network
from slidebench.engine.network import auto_K, expected_candidates, parse_config

from test_engine_network import NumpyNet, assert_params_close, random_batch


def reference_log_q(ref: NumpyNet, h, j_ids, parts, n_out, family=None, K=1, L=1):
    """log inclusion probability of each active output neuron, computed independently of the engine:
    labels 0; others log(clip(q_lsh + (1 - q_lsh) q_rand, 1/n_out, 1)) with q_rand = n_rand /
    (n_out - n_labels - n_lsh) and q_lsh = 1 - (1 - P^K)^L, P = 1 - angle/pi for SimHash and, for
    DOPH, the Jaccard similarity of the positive supports {h > 0} and {w_j > 0} (1 if both empty)."""
    ny, nl, nr = parts
    qr = nr / (n_out - ny - nl) if n_out > ny + nl else 0.0
    W = ref.p[f"W{ref.n_layers - 1}"]             # Keras layout [fan_in, n_out]
    out = np.zeros(len(j_ids))
    for i, j in enumerate(j_ids):
        if i < ny:
            continue
        ql = 0.0
        if family == "simhash":
            w = W[:, j]
            c = float(h @ w / (np.linalg.norm(h) * np.linalg.norm(w)))
            pc = 1 - math.acos(min(1.0, max(-1.0, c))) / math.pi
            ql = 1 - (1 - pc ** K) ** L
        elif family == "doph":
            hs, ws = h > 0, W[:, j] > 0
            uni = int((hs | ws).sum())
            pc = 1.0 if uni == 0 else int((hs & ws).sum()) / uni
            ql = 1 - (1 - pc ** K) ** L
        q = ql + (1 - ql) * qr
        out[i] = math.log(min(1.0, max(q, 1.0 / n_out)))
    return out


def corrected_reference_step(ref: NumpyNet, X, Y, active, parts, family=None, K=1, L=1):
    """One Adam step of the corrected objective: softmax over the active set of z_j - log q_j (labels
    q = 1), loss logsumexp(z - log q) - mean of the labels' z, gradient p' - t on the active set."""
    b = X.shape[0]
    nL = ref.n_layers
    x = X.toarray().astype(np.float64)
    a = [x]
    for l in range(nL):
        z = a[-1] @ ref.p[f"W{l}"] + ref.p[f"b{l}"]
        a.append(np.maximum(z, 0) if l < nL - 1 else z)
    z = a[-1]
    n_out = z.shape[1]
    Yd = Y.toarray() > 0
    ny = Yd.sum(1)
    dz = np.zeros_like(z)
    losses = np.zeros(b)
    mask = np.zeros_like(z, bool)
    for s in range(b):
        A = np.asarray(active[s])
        mask[s, A] = True
        if ny[s] == 0:
            continue
        assert set(np.flatnonzero(Yd[s])) == set(A[: parts[s][0]].tolist()), "labels first"
        lq = reference_log_q(ref, a[-2][s], A, parts[s], n_out, family, K, L)
        zc = z[s, A] - lq
        m = zc.max()
        e = np.exp(zc - m)
        p = e / e.sum()
        t = np.zeros(len(A))
        t[: parts[s][0]] = 1.0 / ny[s]
        losses[s] = np.log(e.sum()) + m - z[s, A[: parts[s][0]]].mean()
        dz[s, A] = (p - t) / b
    grads = {}
    d = dz
    for l in range(nL - 1, -1, -1):
        grads[f"W{l}"] = a[l].T @ d
        grads[f"b{l}"] = d.sum(0)
        if l > 0:
            d = (d @ ref.p[f"W{l}"].T) * (a[l] > 0)
    ref.t += 1
    for k, g in grads.items():
        l = int(k[1:])
        if k == "W0":
            sel = (np.unique(X.indices), slice(None))
        elif l == nL - 1:
            sel = (slice(None), mask.any(0)) if k.startswith("W") else (mask.any(0),)
        else:
            sel = (slice(None),) if k.startswith("b") else (slice(None), slice(None))
        m_, v_ = ref.m[k], ref.v[k]
        m_[sel] = ref.b1 * m_[sel] + (1 - ref.b1) * g[sel]
        v_[sel] = ref.b2 * v_[sel] + (1 - ref.b2) * g[sel] ** 2
        ref.p[k][sel] -= ref.lr * (m_[sel] / (1 - ref.b1 ** ref.t)) / (np.sqrt(v_[sel] / (1 - ref.b2 ** ref.t)) + ref.eps)
    return losses.mean()


@pytest.mark.parametrize("sampler, extra, family", [
    ("random", {}, None),
    ("vanilla", {"hash": "simhash", "K": 2, "L": 4, "random_active": 0.3}, "simhash"),
    ("topk", {"hash": "simhash", "K": 3, "L": 6, "random_active": 4}, "simhash"),
])
@pytest.mark.parametrize("out_pass", ["sample", "row"])     # row: the row-ordered step (net_rowpass.pxd)
def test_corrected_step_equals_numpy_reference(sampler, extra, family, out_pass):
    rng = np.random.default_rng(21)
    F, C, b = 50, 80, 10
    params = {"hidden": [16], "sampler": sampler, "active": 20, "lr": 1e-2, "init_std": 0.3,
              "correction": "logq", "range_pow": 8, "bucket_size": 16, **extra}
    net = Network.from_params(F, C, params, seed=5, n_threads=2, out_pass=out_pass)
    net.debug_keep_active = True
    ref = NumpyNet(net.get_params(), "adam", lr=1e-2)
    for it in range(3):
        X, Y = random_batch(rng, b, F, C, empty_label_rows=(3,) if it == 1 else ())
        loss = net.train_batch(X, Y)
        parts = net.last_active_parts
        if extra.get("random_active"):
            assert (parts[:, 2][np.diff(Y.indptr) > 0] >= net.cfg.rand_block(1)).all()
        loss_ref = corrected_reference_step(ref, X, Y, net.last_active, parts, family,
                                            extra.get("K", 1), extra.get("L", 1))
        assert loss == pytest.approx(loss_ref, rel=2e-4, abs=1e-6)
        assert_params_close(net.get_params(), ref.p, rtol=5e-4, atol=5e-6)
    # the correction changes the objective: the uncorrected run differs
    plain = Network.from_params(F, C, {**params, "correction": "none"}, seed=5)
    rng = np.random.default_rng(21)
    X, Y = random_batch(rng, b, F, C)
    corr = Network.from_params(F, C, params, seed=5)
    assert plain.train_batch(X, Y) != pytest.approx(corr.train_batch(X, Y), rel=1e-3)


def test_doph_corrected_step_equals_numpy_reference():
    """The DOPH path of the correction (P = Jaccard of the positive supports, the output layer's
    input dense): the engine's log q, loss and Adam step against the NumPy reference, with the LSH
    part really in use."""
    rng = np.random.default_rng(23)
    F, C, b, K, L = 50, 80, 10, 2, 4
    params = {"hidden": [16], "sampler": "vanilla", "active": 20, "lr": 1e-2, "init_std": 0.3,
              "correction": "logq", "range_pow": 8, "bucket_size": 16, "hash": "doph", "K": K, "L": L,
              "random_active": 0.3}
    net = Network.from_params(F, C, params, seed=5, n_threads=2)
    net.debug_keep_active = True
    ref = NumpyNet(net.get_params(), "adam", lr=1e-2)
    n_lsh = 0
    for it in range(3):
        X, Y = random_batch(rng, b, F, C, empty_label_rows=(3,) if it == 1 else ())
        # the inputs of the output layer before the step, for the log q check below
        x = X.toarray().astype(np.float64)
        h = np.maximum(x @ ref.p["W0"] + ref.p["b0"], 0)
        W_before = ref.p["W1"].copy()
        loss = net.train_batch(X, Y)
        parts = net.last_active_parts
        n_lsh += int(parts[:, 1].sum())
        for s, (A, part, lq) in enumerate(zip(net.last_active, parts, net.last_logq)):
            if part[0] == 0:
                continue
            snap = NumpyNet({**ref.p, "W1": W_before}, "adam", lr=1e-2)
            expect = reference_log_q(snap, h[s], A, part, C, "doph", K, L)
            np.testing.assert_allclose(lq[: len(A)], expect, rtol=1e-5, atol=1e-5)
        loss_ref = corrected_reference_step(ref, X, Y, net.last_active, parts, "doph", K, L)
        assert loss == pytest.approx(loss_ref, rel=2e-4, abs=1e-6)
        assert_params_close(net.get_params(), ref.p, rtol=5e-4, atol=5e-6)
    assert n_lsh > 0, "the DOPH tables returned no candidates: the LSH path was not exercised"


def test_uniform_correction_is_exact_log_of_block_share():
    rng = np.random.default_rng(2)
    F, C = 30, 200
    net = Network.from_params(F, C, {"hidden": [8], "sampler": "random", "active": 25, "correction": "logq"}, seed=1)
    net.debug_keep_active = True
    X, Y = random_batch(rng, 6, F, C, max_labels=3)
    net.train_batch(X, Y)
    for s, (lq, (ny, nl, nr)) in enumerate(zip(net.last_logq, net.last_active_parts)):
        assert nl == 0 and nr == 25
        assert np.all(lq[:ny] == 0)
        np.testing.assert_allclose(lq[ny:], math.log(25 / (C - ny)), rtol=1e-6)


def test_dwta_correction_uses_hit_fraction():
    rng = np.random.default_rng(4)
    F, C, L = 40, 300, 8
    net = Network.from_params(F, C, {"hidden": [16], "sampler": "vanilla", "hash": "dwta", "K": 2, "L": L,
                                     "active": 40, "random_active": 10, "correction": "logq"}, seed=2)
    net.debug_keep_active = True
    X, Y = random_batch(rng, 8, F, C)
    net.train_batch(X, Y)
    for lq, (ny, nl, nr) in zip(net.last_logq, net.last_active_parts):
        qr = nr / (C - ny - nl)
        grid = [math.log(max(1 / C, (1 - (1 - c / L) ** L) + (1 - (1 - (1 - c / L) ** L)) * qr)) for c in range(1, L + 1)]
        for v in lq[ny:ny + nl]:
            assert min(abs(v - g) for g in grid) < 1e-5
        np.testing.assert_allclose(lq[ny + nl:], math.log(qr), rtol=1e-5)
        assert nl > 0


# ------------------------------------------------------------------------ composition + counters


def test_active_set_composition_and_counters():
    rng = np.random.default_rng(7)
    F, C = 60, 500
    net = Network.from_params(F, C, {"hidden": [16], "sampler": "topk", "hash": "simhash", "K": 3, "L": 10,
                                     "active": 50, "random_active": 0.2, "range_pow": 10}, seed=3)
    assert net.cfg.rand_block(1) == 10 and net.cfg.lsh_cap(1) == 40
    net.debug_keep_active = True
    for _ in range(3):
        X, Y = random_batch(rng, 12, F, C)
        net.train_batch(X, Y)
        parts = net.last_active_parts
        for A, (ny, nl, nr), y in zip(net.last_active, parts, np.split(Y.indices, Y.indptr[1:-1])):
            assert ny == len(set(y.tolist()))
            assert nl <= 40 and nr >= 10
            assert len(A) == ny + nl + nr == len(set(A.tolist()))
            assert len(A) >= 50                 # padding to min_active (= the target)
    c = net.counters()
    for key in ("active_labels", "active_lsh", "active_random"):
        assert key in c and c[key] >= 0
    assert c["active_lsh"] > 0 and c["active_random"] >= 10
    assert c["active_labels"] + c["active_lsh"] + c["active_random"] == pytest.approx(c["mean_active_out"])


def test_zero_random_block_keeps_lsh_share_and_paper_padding():
    rng = np.random.default_rng(8)
    net = Network.from_params(60, 500, {"hidden": [16], "sampler": "vanilla", "hash": "dwta", "K": 6, "L": 10,
                                        "active": 50}, seed=3)
    assert net.cfg.rand_block(1) == 0 and net.cfg.lsh_cap(1) == 50
    net.debug_keep_active = True
    X, Y = random_batch(rng, 12, 60, 500)
    net.train_batch(X, Y)
    # DWTA K=6 finds few candidates: the padding (counted as random) fills up to 50
    for A, (ny, nl, nr) in zip(net.last_active, net.last_active_parts):
        assert len(A) == max(50, ny + nl) and nr == len(A) - ny - nl


@pytest.mark.parametrize("params, match", [
    ({"random_active": -1}, "'random_active'"),
    ({"random_active": 60}, "'random_active'"),
    ({"lsh_active": 51}, "'lsh_active'"),
    ({"lsh_active": 40, "random_active": 20}, "'lsh_active'"),
    ({"lsh_active": "many"}, "'lsh_active'"),
    ({"correction": "magic"}, "'correction'"),
    ({"K": "sometimes"}, "'K'"),
])
def test_bad_sampling_config_raises_value_error(params, match):
    with pytest.raises(ValueError, match=match):
        Network.from_params(100, 500, {"sampler": "vanilla", "active": 50, **params})


# ------------------------------------------------------------------------------------ K auto


def test_expected_candidates_formula():
    # DWTA windows of 8: P = 8^-K (+ 2^-range_pow folding); matches the measured table in docs/lsh.md
    assert expected_candidates("dwta", 128, 50000, 6, 50, 18, 128) == pytest.approx(
        50000 * (1 - (1 - (8.0 ** -6 + (1 - 8.0 ** -6) * 2 ** -18)) ** 50))
    assert 500 < expected_candidates("dwta", 128, 50000, 4, 50, 18, 128) < 700
    assert 4000 < expected_candidates("simhash", 128, 50000, 9, 50, 18, 128) < 5000
    # capped by what the hit buckets can hold
    assert expected_candidates("simhash", 128, 50000, 1, 50, 18, 4) == 200


@pytest.mark.parametrize("family", ["dwta", "wta", "simhash", "doph"])
def test_auto_K_is_the_most_selective_K_that_fills_the_share(family):
    n, L, rp, bs = 50000, 50, 18, 128
    for share in (50, 250, 1000):
        K = auto_K(family, 128, n, L, rp, bs, share)
        assert expected_candidates(family, 128, n, K, L, rp, bs) >= 2 * share or K == 1
        assert expected_candidates(family, 128, n, K + 1, L, rp, bs) < 2 * share
    cfg = parse_config(1000, n, {"sampler": "vanilla", "K": "auto", "hash": family, "active": 500,
                                 "random_active": 250})
    assert cfg.K_for(1) == auto_K(family, 128, n, 50, 18, 128, 250)


def test_auto_K_network_returns_about_the_share():
    rng = np.random.default_rng(3)
    F, C = 80, 20000
    net = Network.from_params(F, C, {"hidden": [32], "sampler": "vanilla", "hash": "dwta", "K": "auto", "L": 20,
                                     "active": 200, "random_active": 0}, seed=1)
    assert net.describe()["K"] == [auto_K("dwta", 32, C, 20, 18, 128, 200)]
    net.debug_keep_active = True
    X, Y = random_batch(rng, 16, F, C)
    net.train_batch(X, Y)
    # the share is mostly filled by LSH (random vectors; the formula's premise)
    assert net.last_active_parts[:, 1].mean() > 0.5 * 200


# ------------------------------------------------------------------------------------ recall


def test_lsh_recall_against_exact_top10():
    rng = np.random.default_rng(5)
    F, C = 60, 3000
    net = Network.from_params(F, C, {"hidden": [32], "sampler": "topk", "hash": "simhash", "K": 4, "L": 30,
                                     "active": 300, "init_std": 0.1}, seed=2)
    X, _ = random_batch(rng, 40, F, C, nnz=10)
    cands = net.lsh_candidates(X)
    assert all(len(c) <= 300 for c in cands) and any(len(c) > 0 for c in cands)
    r = net.lsh_recall(X, 10)
    top = net.predict_topk(X, 10)
    manual = np.mean([len(set(c.tolist()) & set(t.tolist())) / 10 for c, t in zip(cands, top)])
    assert r == pytest.approx(manual)
    assert r > 300 / C * 2             # well above a random 300 of 3000 (0.1)
    with pytest.raises(ValueError, match="LSH tables"):
        Network.from_params(F, C, {"hidden": [8], "sampler": "random"}).lsh_candidates(X)
