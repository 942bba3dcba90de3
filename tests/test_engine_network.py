"""The SLIDE engine's network half: exactness against a NumPy reference, determinism, samplers'
invariants, save/load, predict, and configuration errors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from slidebench.engine import Network, estimate_memory


# ------------------------------------------------------------------------------------ helpers


def csr(dense_or_parts, shape=None) -> sp.csr_matrix:
    m = sp.csr_matrix(dense_or_parts, shape=shape, dtype=np.float32)
    m.indices = m.indices.astype(np.int32)
    m.indptr = m.indptr.astype(np.int32)
    return m


def random_batch(rng, b, n_features, n_labels, nnz=6, max_labels=3, empty_label_rows=()):
    rows, cols, vals = [], [], []
    for i in range(b):
        f = rng.choice(n_features, size=nnz, replace=False)
        rows += [i] * nnz
        cols += list(f)
        vals += list(rng.uniform(0.1, 1.0, nnz))
    X = csr((vals, (rows, cols)), shape=(b, n_features))
    yr, yc = [], []
    for i in range(b):
        if i in empty_label_rows:
            continue
        ys = rng.choice(n_labels, size=rng.integers(1, max_labels + 1), replace=False)
        yr += [i] * len(ys)
        yc += list(ys)
    Y = csr((np.ones(len(yr)), (yr, yc)), shape=(b, n_labels))
    return X, Y


class NumpyNet:
    """Reference of the engine's exact semantics (docs/engine.md) for the `full` sampler."""

    def __init__(self, params: dict, optimizer: str, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        self.p = {k: v.astype(np.float64) for k, v in params.items()}
        self.n_layers = len(params) // 2
        self.opt, self.lr, self.b1, self.b2, self.eps = optimizer, lr, b1, b2, eps
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0

    def forward(self, X):
        a = [X.toarray().astype(np.float64)]
        for l in range(self.n_layers):
            z = a[-1] @ self.p[f"W{l}"] + self.p[f"b{l}"]
            a.append(np.maximum(z, 0) if l < self.n_layers - 1 else z)
        return a

    def loss_and_grads(self, X, Y):
        """The batch loss (sum over samples / batch size) and every parameter's gradient."""
        b = X.shape[0]
        acts = self.forward(X)
        z = acts[-1]
        Yd = Y.toarray() > 0
        ny = Yd.sum(1)
        zmax = z.max(1, keepdims=True)
        e = np.exp(z - zmax)
        p = e / e.sum(1, keepdims=True)
        t = np.where(ny[:, None] > 0, Yd / np.maximum(ny, 1)[:, None], 0.0)
        lse = np.log(e.sum(1)) + zmax[:, 0]
        loss_s = np.where(ny > 0, lse - (Yd * z).sum(1) / np.maximum(ny, 1), 0.0)
        dz = np.where(ny[:, None] > 0, p - t, 0.0) / b
        grads = {}
        for l in range(self.n_layers - 1, -1, -1):
            grads[f"W{l}"] = acts[l].T @ dz
            grads[f"b{l}"] = dz.sum(0)
            if l > 0:
                dz = (dz @ self.p[f"W{l}"].T) * (acts[l] > 0)
        return loss_s.mean(), grads

    def step(self, X, Y):
        loss, grads = self.loss_and_grads(X, Y)
        # touched rows: W0 rows of the features present in the batch; every row of full layers
        touched0 = np.unique(X.indices)
        self.t += 1
        for k, g in grads.items():
            rows = touched0 if k == "W0" else slice(None)
            if self.opt == "sgd":
                self.p[k][rows] -= self.lr * g[rows]
                continue
            m, v = self.m[k], self.v[k]
            m[rows] = self.b1 * m[rows] + (1 - self.b1) * g[rows]
            v[rows] = self.b2 * v[rows] + (1 - self.b2) * g[rows] ** 2
            mhat = m[rows] / (1 - self.b1 ** self.t)
            vhat = v[rows] / (1 - self.b2 ** self.t)
            self.p[k][rows] -= self.lr * mhat / (np.sqrt(vhat) + self.eps)
        return loss


def assert_params_close(net_params, ref_params, rtol=2e-4, atol=2e-6):
    for k, v in ref_params.items():
        np.testing.assert_allclose(net_params[k], v, rtol=rtol, atol=atol, err_msg=k)


# ------------------------------------------------------------------------------- exactness


# 80 = 64 + 16 and 144 = 2 x 64 + 16: the row kernels' 64-wide register blocks and their remainder
@pytest.mark.parametrize("hidden", [[16], [16, 8], [80], [144, 72]])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_full_sampler_step_equals_numpy_reference(hidden, optimizer):
    rng = np.random.default_rng(3)
    F, C, b = 60, 25, 12
    lr = 1e-2 if optimizer == "adam" else 0.5
    net = Network.from_params(F, C, {"hidden": hidden, "sampler": "full", "optimizer": optimizer, "lr": lr,
                                     "init_std": 0.3}, seed=7)
    # non-zero biases so the bias path is exercised too
    params = net.get_params()
    for l in range(len(hidden) + 1):
        params[f"b{l}"] = rng.normal(0, 0.1, params[f"b{l}"].shape).astype(np.float32)
    net.set_params(params)
    ref = NumpyNet(net.get_params(), optimizer, lr=lr)
    for it in range(4):
        X, Y = random_batch(rng, b, F, C, empty_label_rows=(2,) if it == 1 else ())
        loss_ref = ref.step(X, Y)
        loss = net.train_batch(X, Y)
        assert loss == pytest.approx(loss_ref, rel=1e-4, abs=1e-6)
        assert_params_close(net.get_params(), ref.p)
    # the update really moved the weights (not a no-op matching a no-op reference)
    assert not np.allclose(net.get_params()["W1"], NumpyNet(params, optimizer).p["W1"])


def test_untouched_input_rows_are_not_updated():
    rng = np.random.default_rng(0)
    net = Network.from_params(40, 10, {"hidden": [8], "sampler": "full", "lr": 0.05}, seed=1)
    before = net.get_params()["W0"]
    X, Y = random_batch(rng, 4, 40, 10, nnz=3)
    net.train_batch(X, Y)
    after = net.get_params()["W0"]
    present = np.unique(X.indices)
    absent = np.setdiff1d(np.arange(40), present)
    assert np.array_equal(before[absent], after[absent])
    assert not np.allclose(before[present], after[present])


def test_predict_exact_equals_numpy_argsort():
    rng = np.random.default_rng(5)
    F, C = 80, 300
    net = Network.from_params(F, C, {"hidden": [32, 16], "sampler": "random",
                                     "active": 20, "init_std": 0.2}, seed=2, n_threads=2)
    X, Y = random_batch(rng, 64, F, C)
    for _ in range(3):
        net.train_batch(X, Y)
    ref = NumpyNet(net.get_params(), "adam")
    logits = ref.forward(X)[-1]
    top = net.predict_topk(X, 5, mode="exact")
    assert top.shape == (64, 5) and top.dtype == np.int32
    want = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    # ids agree except where two logits tie to float32 precision
    got_vals = np.take_along_axis(logits, top.astype(np.int64), 1)
    want_vals = np.take_along_axis(logits, want, 1)
    np.testing.assert_allclose(got_vals, want_vals, rtol=1e-5, atol=1e-6)
    assert (top == want).mean() > 0.99


# ------------------------------------------------------------------------------ determinism


def _train(params, seed, n_threads, batches, F, C):
    net = Network.from_params(F, C, params, seed=seed, n_threads=n_threads)
    losses = [net.train_batch(X, Y) for X, Y in batches]
    return net.get_params(), losses


@pytest.mark.parametrize("sampler, extra", [
    ("random", {}), ("full", {}),
    # three layers, the hidden ones sampled too: more layers to sort than threads at 2, fewer at 3 and 4
    ("random", {"hidden": [24, 16], "lsh_layers": "all", "active": 0.5}),
])
def test_bitwise_deterministic_one_thread_and_across_threads(sampler, extra):
    rng = np.random.default_rng(11)
    F, C = 100, 400
    batches = [random_batch(rng, 32, F, C) for _ in range(5)]
    params = {"hidden": [24], "sampler": sampler, "active": 30, "lr": 1e-2, **extra}
    p1, l1 = _train(params, 4, 1, batches, F, C)
    p1b, l1b = _train(params, 4, 1, batches, F, C)
    p_other, _ = _train(params, 5, 1, batches, F, C)
    for k in p1:
        assert np.array_equal(p1[k], p1b[k]), k
    # the update phase has no races and a fixed summation order, and which thread sorts or updates
    # what (update_phase hands rows out dynamically) does not matter: n threads == 1 thread
    for nt in (2, 3, 4):
        pn, ln = _train(params, 4, nt, batches, F, C)
        for k in p1:
            assert np.array_equal(p1[k], pn[k]), (nt, k)
        assert l1 == ln, nt
    assert not np.array_equal(p1["W1"], p_other["W1"])   # the seed matters


# ------------------------------------------------------------------------------ samplers


def test_labels_always_active_and_padding_to_min_active():
    rng = np.random.default_rng(2)
    F, C = 50, 1000
    net = Network.from_params(F, C, {"hidden": [16], "sampler": "random", "active": 10, "min_active": 40},
                              seed=3, n_threads=2)
    net.debug_keep_active = True
    for _ in range(3):
        X, Y = random_batch(rng, 16, F, C, max_labels=8, empty_label_rows=(0,))
        net.train_batch(X, Y)
        for s, act in enumerate(net.last_active):
            labels = Y.indices[Y.indptr[s]:Y.indptr[s + 1]]
            assert set(labels) <= set(act.tolist())
            assert len(np.unique(act)) == len(act)          # no duplicates
            assert len(act) >= 40                           # padded up to min_active
            assert len(act) <= 10 + len(labels) + 40
            assert act.min() >= 0 and act.max() < C
    c = net.counters()
    assert 40 <= c["mean_active_out"] <= 60
    assert 0 < c["frac_out_touched"] < 1


def test_random_sampler_active_size_is_target_plus_labels():
    rng = np.random.default_rng(8)
    net = Network.from_params(30, 500, {"hidden": [8], "sampler": "random", "active": 0.1, "min_active": 0},
                              seed=0)
    net.debug_keep_active = True
    X, Y = random_batch(rng, 8, 30, 500, max_labels=2)
    net.train_batch(X, Y)
    for s, act in enumerate(net.last_active):
        labels = Y.indices[Y.indptr[s]:Y.indptr[s + 1]]
        assert len(act) == 50 + len(labels)     # 10% of 500 random neurons + the labels first
        assert list(act[:len(labels)]) == list(labels)


# ------------------------------------------------------------------------------ save / load


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_save_load_then_continue_equals_uninterrupted(tmp_path, optimizer):
    rng = np.random.default_rng(21)
    F, C = 70, 200
    batches = [random_batch(rng, 16, F, C) for _ in range(6)]
    params = {"hidden": [12], "sampler": "random", "active": 20, "optimizer": optimizer, "lr": 1e-2}
    a = Network.from_params(F, C, params, seed=9)
    for X, Y in batches:
        a.train_batch(X, Y)
    b = Network.from_params(F, C, params, seed=9)
    for X, Y in batches[:3]:
        b.train_batch(X, Y)
    b.save(tmp_path / "net.npz")
    c = Network.load(tmp_path / "net.npz")
    assert c.step == 3 and c.samples_seen == 48
    for X, Y in batches[3:]:
        c.train_batch(X, Y)
    pa, pc = a.get_params(), c.get_params()
    for k in pa:
        assert np.array_equal(pa[k], pc[k]), k
    assert c.counters()["steps"] == 6


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        Network.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved"):
        Network.load(tmp_path / "other.npz")


def test_set_params_shape_mismatch():
    net = Network.from_params(10, 5, {"hidden": [4], "sampler": "full"})
    p = net.get_params()
    assert p["W0"].shape == (10, 4) and p["W1"].shape == (4, 5) and p["b1"].shape == (5,)
    p["W1"] = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match="W1 has shape"):
        net.set_params(p)
    with pytest.raises(ValueError, match="missing keys"):
        net.set_params({"W0": p["W0"]})


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("params, match", [
    ({"K": 0}, "'K'"),
    ({"L": 0}, "'L'"),
    ({"hash": "md5"}, "'hash'"),
    ({"range_pow": 40}, "'range_pow'"),
    ({"sampler": "magic"}, "'sampler'"),
    ({"active": -1}, "'active'"),
    ({"hidden": [0]}, "'hidden'"),
    ({"lsh_layers": [5]}, "'lsh_layers'"),
    ({"lr": "fast"}, "'lr'"),
    ({"threshold_m": 60, "L": 50}, "'threshold_m'"),
    ({"learning_rate": 0.1}, "unknown engine param"),
])
def test_bad_config_raises_value_error(params, match):
    with pytest.raises(ValueError, match=match):
        Network.from_params(100, 50, {"sampler": "full", **params})


def test_range_pow_too_large_for_memory_raises_memory_error():
    params = {"sampler": "vanilla", "range_pow": 30, "L": 255}
    est = estimate_memory(100, 50, params)
    assert est > 255 * 2**30 * 4
    with pytest.raises(MemoryError, match="needs about"):
        Network.from_params(100, 50, params)


def test_bad_batches_raise_value_error():
    rng = np.random.default_rng(0)
    net = Network.from_params(20, 10, {"hidden": [4], "sampler": "full"})
    X, Y = random_batch(rng, 4, 20, 10, nnz=3)
    Ybad = Y.copy()
    Ybad.indices = Ybad.indices.copy()
    Ybad.indices[0] = 10                       # label id out of range
    with pytest.raises(ValueError, match="labels out of range"):
        net.train_batch(X, Ybad)
    with pytest.raises(ValueError, match="float32"):
        net.train_batch(X.astype(np.float64), Y)
    with pytest.raises(ValueError, match="columns"):
        net.train_batch(csr(np.ones((4, 21))), Y)
    with pytest.raises(ValueError, match="rows"):
        net.train_batch(X[:3], Y)
    with pytest.raises(ValueError, match="CSR"):
        net.train_batch(X.toarray(), Y)
    with pytest.raises(ValueError, match="k must be"):
        net.predict_topk(X, 0)
    with pytest.raises(ValueError, match="mode"):
        net.predict_topk(X, 2, mode="fast")
    with pytest.raises(ValueError, match="n_threads"):
        Network.from_params(20, 10, {"sampler": "full"}, n_threads=0)


# ------------------------------------------------------------------- sampled hidden layers


def masked_reference_step(ref: NumpyNet, X, Y, active):
    """One step of the engine's semantics with given active sets per layer and sample (inactive
    neurons count as 0; softmax over the output's active set; touched rows = features in the batch
    for W0, union of active sets for neuron-major layers and for every layer's biases)."""
    b = X.shape[0]
    L = ref.n_layers
    masks = []
    for l in range(L):
        n = ref.p[f"b{l}"].shape[0]
        m = np.zeros((b, n), bool)
        for s in range(b):
            m[s, active[l][s]] = True
        masks.append(m)
    a = [X.toarray().astype(np.float64)]
    for l in range(L):
        z = a[-1] @ ref.p[f"W{l}"] + ref.p[f"b{l}"]
        if l < L - 1:
            z = np.maximum(z, 0)
        a.append(np.where(masks[l], z, 0.0))
    z = a[-1]
    Yd = Y.toarray() > 0
    ny = Yd.sum(1)
    zm = np.where(masks[-1], z, -np.inf)
    zmax = zm.max(1, keepdims=True)
    e = np.where(masks[-1], np.exp(zm - zmax), 0.0)
    p = e / e.sum(1, keepdims=True)
    t = np.where(ny[:, None] > 0, Yd / np.maximum(ny, 1)[:, None], 0.0)
    assert np.all(masks[-1][Yd]), "labels must be active"
    loss = np.where(ny > 0, np.log(e.sum(1)) + zmax[:, 0] - (Yd * np.where(masks[-1], z, 0)).sum(1) / np.maximum(ny, 1), 0)
    dz = np.where(ny[:, None] > 0, p - t, 0.0) / b * masks[-1]
    grads = {}
    for l in range(L - 1, -1, -1):
        grads[f"W{l}"] = a[l].T @ dz
        grads[f"b{l}"] = dz.sum(0)
        if l > 0:
            dz = (dz @ ref.p[f"W{l}"].T) * (a[l] > 0) * masks[l - 1]
    ref.t += 1
    for k, g in grads.items():
        l = int(k[1:])
        if k == "W0":
            sel = (np.unique(X.indices), slice(None))
        elif k.startswith("W"):
            sel = (slice(None), masks[l].any(0))          # Keras layout: neuron j is column j
        else:
            sel = (masks[l].any(0),)
        m, v = ref.m[k], ref.v[k]
        m[sel] = ref.b1 * m[sel] + (1 - ref.b1) * g[sel]
        v[sel] = ref.b2 * v[sel] + (1 - ref.b2) * g[sel] ** 2
        ref.p[k][sel] -= ref.lr * (m[sel] / (1 - ref.b1 ** ref.t)) / (np.sqrt(v[sel] / (1 - ref.b2 ** ref.t)) + ref.eps)
    return loss.mean()


@pytest.mark.parametrize("hidden", [[16], [16, 12]])
def test_sampled_hidden_layers_equal_masked_numpy_reference(hidden):
    """lsh_layers="all" with the random sampler: sampled layer 0 (feature-major gather and scatter),
    sparse inputs to later layers (gather dot, scatter gradient), sampled output."""
    rng = np.random.default_rng(12)
    F, C, b = 40, 30, 10
    net = Network.from_params(F, C, {"hidden": hidden, "sampler": "random", "lsh_layers": "all", "active": 0.5,
                                     "lr": 1e-2, "init_std": 0.3}, seed=3, n_threads=2)
    net.debug_keep_active = True
    ref = NumpyNet(net.get_params(), "adam", lr=1e-2)
    for it in range(3):
        X, Y = random_batch(rng, b, F, C, empty_label_rows=(4,) if it == 2 else ())
        loss = net.train_batch(X, Y)
        act = net.last_active_layers
        for l, n in enumerate(hidden):      # hidden layers really sampled: half of each layer per sample
            assert all(len(a) == net.cfg.target(l) == -(-n // 2) for a in act[l])
        loss_ref = masked_reference_step(ref, X, Y, act)
        assert loss == pytest.approx(loss_ref, rel=1e-4, abs=1e-6)
        assert_params_close(net.get_params(), ref.p)


@pytest.mark.parametrize("hidden, out_pass", [([80], "sample"), ([144, 72], "sample"), ([80], "row"), ([144], "row")])
def test_sampled_output_over_wide_hidden_layers_equals_masked_numpy_reference(hidden, out_pass):
    """The default shape: hidden layers computed in full, the output sampled (random). Hidden widths
    past 64 run the row kernels' register blocks (sb_axpy_rows, sb_dot_rows; for the row-ordered step,
    net_rowpass.pxd, sb_dot_row_samples and sb_axpy_row_scatter) and their remainder in the forward,
    the backward through the active rows and the updates."""
    rng = np.random.default_rng(13)
    F, C, b = 50, 120, 16
    net = Network.from_params(F, C, {"hidden": hidden, "sampler": "random", "active": 30, "lr": 1e-2,
                                     "init_std": 0.2}, seed=4, n_threads=2, out_pass=out_pass)
    net.debug_keep_active = True
    ref = NumpyNet(net.get_params(), "adam", lr=1e-2)
    for it in range(3):
        X, Y = random_batch(rng, b, F, C, empty_label_rows=(3,) if it == 1 else ())
        loss = net.train_batch(X, Y)
        out = net.last_active_layers[-1]
        assert all(len(a) < C for a in out)                 # the output really sampled
        act = [[np.arange(n)] * b for n in hidden] + [out]
        loss_ref = masked_reference_step(ref, X, Y, act)
        assert loss == pytest.approx(loss_ref, rel=1e-4, abs=1e-6)
        assert_params_close(net.get_params(), ref.p)


def test_engine_imports_nothing_from_the_harness():
    import ast
    from pathlib import Path

    import slidebench.engine as eng
    from slidebench.contract import derive_seed as harness_seed
    from slidebench.engine.config import derive_seed as engine_seed
    here = Path(eng.__file__).resolve().parent
    for f in list(here.glob("*.py")) + list(here.glob("*.pyx")) + list(here.glob("*.pxd")):
        text = f.read_text()
        if f.suffix == ".py":
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ImportFrom):
                    assert node.level <= 1 and not (node.module or "").startswith("slidebench"), (f.name, node.module)
        assert "slidebench.contract" not in text and "from .." not in text, f.name
    for seed, purpose in [(0, "init"), (7, "engine"), (123456, "slide")]:
        assert engine_seed(seed, purpose) == harness_seed(seed, purpose)
