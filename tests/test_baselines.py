"""Tests of the TensorFlow baselines (slidebench.baselines): tiny shapes, TensorFlow tests marked `tf`.

* one optimiser step of tf_full_softmax (SGD and Adam, both configs) == one step of the engine's
  `full` sampler on the same initial weights and batch (the two sides compute the same model);
* each baseline and configuration learns a tiny planted task;
* no retracing (and, under XLA, one input shape) after the first steps, a short last batch included;
* DeviceUnavailable for device="gpu" without a GPU; clear ValueErrors for bad parameters;
* importing the baseline modules does not import TensorFlow.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from slidebench.contract import Dataset

SYSTEMS = ["tf_full_softmax", "tf_sampled_softmax"]


# ----------------------------------------------------------------------------------------- data


def _csr(rows, cols, vals, shape) -> sp.csr_matrix:
    M = sp.csr_matrix((np.asarray(vals, np.float32), (np.asarray(rows), np.asarray(cols))), shape=shape)
    M.sum_duplicates()
    M.sort_indices()
    M.indices = M.indices.astype(np.int32)
    M.indptr = M.indptr.astype(np.int32)
    return M


def planted(n_train=1200, n_test=400, n_features=300, n_labels=40, seed=0, empty_every=0) -> Dataset:
    """Each label owns 5 prototype features; a sample has 1-3 labels, 3 features of each label's prototype
    and 6 noise features. Rows i with i % empty_every == empty_every - 1 get no labels (when empty_every)."""
    rng = np.random.default_rng(seed)
    proto = [rng.choice(n_features, 5, replace=False) for _ in range(n_labels)]

    def make(n):
        r, c, v, yr, yc = [], [], [], [], []
        for i in range(n):
            labs = rng.choice(n_labels, int(rng.integers(1, 4)), replace=False)
            feats = set(rng.choice(n_features, 6, replace=False).tolist())
            for lab in labs:
                feats.update(rng.choice(proto[lab], 3, replace=False).tolist())
            feats = sorted(feats)
            r += [i] * len(feats)
            c += feats
            v += (0.5 + rng.random(len(feats))).tolist()
            if not (empty_every and i % empty_every == empty_every - 1):
                yr += [i] * len(labs)
                yc += labs.tolist()
        return _csr(r, c, v, (n, n_features)), _csr(yr, yc, np.ones(len(yr)), (n, n_labels))

    Xtr, Ytr = make(n_train)
    Xte, Yte = make(n_test)
    ds = Dataset("planted", Xtr, Ytr, Xte, Yte)
    ds.validate()
    return ds


def p_at_1(top: np.ndarray, Y: sp.csr_matrix) -> float:
    return float(np.mean(np.asarray(Y[np.arange(len(top)), top[:, 0]]).ravel() > 0))


def make_trainer(system, ds, params, seed=0):
    from slidebench.trainers import get_trainer
    tr = get_trainer(system)()
    tr.setup(ds, params, seed=seed, n_threads=1)
    return tr


# ----------------------------------------------------------------------------------------- no TF needed


def test_modules_do_not_import_tensorflow():
    code = ("import sys, slidebench.baselines, slidebench.baselines.full_softmax, slidebench.baselines.sampled_softmax\n"
            "from slidebench.baselines import FULL_CONFIGS, SAMPLED_CONFIGS, DeviceUnavailable\n"
            "assert set(FULL_CONFIGS) == {'paper', 'tuned'} and set(SAMPLED_CONFIGS) == {'paper', 'tuned'}\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("params, match", [
    ({"batch_size": 8, "no_such_key": 1}, "no_such_key"),
    ({"batch_size": 8, "config": "fastest"}, "unknown config 'fastest'"),
    ({"batch_size": 0}, "batch_size"),
    ({}, "batch_size"),
    ({"batch_size": 8, "optimizer": "adagrad"}, "optimizer"),
    ({"batch_size": 8, "hidden": []}, "hidden"),
    ({"batch_size": 8, "lr": -1.0}, "lr"),
    ({"batch_size": 8, "device": "tpu"}, "device"),
    ({"batch_size": 8, "config": "paper", "xla": True}, "xla"),
    ({"batch_size": 8, "config": "paper", "xla_update": True}, "xla_update"),
])
def test_bad_params_are_value_errors(system, params, match):
    from slidebench.trainers import get_trainer
    with pytest.raises(ValueError, match=match):
        get_trainer(system)().setup(planted(n_train=20, n_test=5), params, seed=0, n_threads=1)


@pytest.mark.parametrize("params, match", [
    ({"num_sampled": 0}, "num_sampled"), ({"num_sampled": 1.5}, "num_sampled"),
    ({"multilabel": "all"}, "multilabel"), ({"sampler": "zipf"}, "sampler"),
        ({"true_expected_count": 1}, "true_expected_count"), ({"num_true": "most"}, "num_true"),
    ({"num_true": 0}, "num_true"), ({"config": "tuned", "xla": True}, "XLA"),
])
def test_bad_sampled_params(params, match):
    from slidebench.trainers import get_trainer
    with pytest.raises(ValueError, match=match):
        get_trainer("tf_sampled_softmax")().setup(planted(n_train=20, n_test=5), {"batch_size": 8, **params},
                                                  seed=0, n_threads=1)


def test_configs_are_explicit_and_complete():
    from slidebench.baselines.config import COMMON_KEYS
    from slidebench.baselines.full_softmax import CONFIGS as FC
    from slidebench.baselines.sampled_softmax import CONFIGS as SC, EXTRA_KEYS
    for name in ("paper", "tuned"):
        assert set(FC[name]) == set(COMMON_KEYS)
        assert set(SC[name]) == set(COMMON_KEYS) | set(EXTRA_KEYS)
    assert FC["paper"]["optimizer_impl"] == "keras" and FC["paper"]["input_path"] == "sparse_matmul"
    assert not FC["paper"]["xla"] and FC["tuned"]["xla"]


# ----------------------------------------------------------------------------------------- TF


@pytest.mark.tf
def test_device_gpu_without_gpu_raises_device_unavailable(monkeypatch, tmp_path):
    import tensorflow as tf
    from slidebench.baselines import DeviceUnavailable, tf_runtime
    if tf.config.list_physical_devices("GPU"):
        pytest.fail("this test expects a machine without a visible GPU (tensorflow-cpu); a GPU is visible")
    from slidebench.trainers import get_trainer
    # no driver node at all: decided before TensorFlow is touched
    monkeypatch.setattr(tf_runtime, "GPU_NODES", (str(tmp_path / "no-such-node"),))
    for system in SYSTEMS:
        with pytest.raises(DeviceUnavailable, match="no GPU device node.*not loaded"):
            get_trainer(system)().setup(planted(n_train=20, n_test=5), {"batch_size": 8, "device": "gpu"},
                                        seed=0, n_threads=1)
    # a driver node present but TensorFlow (tensorflow-cpu) sees no GPU: TensorFlow's own answer
    monkeypatch.setattr(tf_runtime, "GPU_NODES", (str(tmp_path),))
    for system in SYSTEMS:
        with pytest.raises(DeviceUnavailable, match="TensorFlow sees no GPU"):
            get_trainer(system)().setup(planted(n_train=20, n_test=5), {"batch_size": 8, "device": "gpu"},
                                        seed=0, n_threads=1)


def _engine_network(n_features, n_labels, optimizer, lr, eps):
    try:
        from slidebench.engine import Network
    except ImportError as e:   # the engine is another part; without it this test cannot pass
        pytest.fail(f"the engine is needed for the equivalence test and does not import: {e}")
    return Network.from_params(n_features, n_labels, {"hidden": [16], "sampler": "full", "optimizer": optimizer,
                                                      "lr": lr, "beta1": 0.9, "beta2": 0.999, "eps": eps},
                               seed=0, n_threads=1)


@pytest.mark.tf
@pytest.mark.parametrize("config, optimizer, n_steps", [
    ("paper", "sgd", 3), ("tuned", "sgd", 3), ("paper", "adam", 1), ("tuned", "adam", 1), ("tuned", "adam", 3)])
def test_one_step_matches_engine_full_mode(config, optimizer, n_steps):
    """Same initial weights, same batches: the weights after the step(s) agree to float32 tolerance.

    Adam over several steps is only comparable for row-sparse (lazy) Adam, which the engine also uses;
    Keras' Adam (paper) keeps moving rows whose gradient is zero, so it is compared after one step.
    Keras' epsilon is the 'epsilon hat' of the Adam paper (added to sqrt(v) before bias correction):
    at step 1 its update equals the textbook one with eps_textbook = eps_keras / sqrt(1 - beta2).
    """
    ds = planted(n_train=96, n_test=8, n_features=120, n_labels=30, empty_every=7)
    lr, eps = (0.05, 1e-8) if optimizer == "sgd" else (1e-3, 1e-8)
    eng_eps = eps / np.sqrt(1 - 0.999) if (config == "paper" and optimizer == "adam") else eps
    net = _engine_network(ds.n_features, ds.n_labels, optimizer, lr, eng_eps)
    tr = make_trainer("tf_full_softmax", ds, {"config": config, "batch_size": 32, "hidden": [16],
                                               "optimizer": optimizer, "lr": lr, "eps": eps})
    w0 = net.get_params()
    tr.set_params(w0)
    np.testing.assert_array_equal(tr.get_params()["W1"], w0["W1"])
    stream = ds.batches(32, 0, shuffle=True)      # the trainer's own stream: same seed, same order
    saw_empty = False
    for _ in range(n_steps):
        b = stream.next_batch()
        saw_empty |= bool((np.diff(b.Y.indptr) == 0).any())
        loss_e = net.train_batch(b.X, b.Y)
        loss_t = tr.train_steps(1).loss
        assert loss_t == pytest.approx(loss_e, rel=1e-4)
    assert saw_empty, "the batches should include a sample without labels"
    pe, pt = net.get_params(), tr.get_params()
    for key in w0:
        delta_e, delta_t = pe[key] - w0[key], pt[key] - w0[key]
        scale = float(np.abs(delta_e).max())
        assert scale > (lr * 0.1 if optimizer == "adam" else 1e-6), f"{key} did not move"
        np.testing.assert_allclose(delta_t, delta_e, atol=2e-3 * scale, rtol=0, err_msg=key)


@pytest.mark.tf
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("config", ["paper", "tuned"])
def test_learns_planted_task(system, config):
    ds = planted()
    tr = make_trainer(system, ds, {"config": config, "batch_size": 64, "hidden": [32], "lr": 1e-2,
                                   **({"num_sampled": 0.25, "sampler": "uniform"} if system == "tf_sampled_softmax" else {})})
    before = p_at_1(tr.predict_topk(ds.X_test, 5), ds.Y_test)
    st = None
    for _ in range(6):
        st = tr.train_steps(19)            # 6 x 19 steps = 6 epochs (1200 / 64 -> 19 batches a pass)
    top = tr.predict_topk(ds.X_test, 5)
    assert top.dtype == np.int32 and top.shape == (ds.X_test.shape[0], 5)
    assert np.isfinite(st.loss) and st.epoch == pytest.approx(6.0)
    after = p_at_1(top, ds.Y_test)
    chance = float(np.diff(ds.Y_test.indptr).mean() / ds.n_labels)      # ~0.05
    assert before < 0.25
    assert after > 0.7 and after > 5 * chance, (before, after)


@pytest.mark.tf
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("config", ["paper", "tuned"])
def test_no_retracing_short_last_batch(system, config):
    ds = planted(n_train=100, n_test=50, empty_every=9)          # batch 32: 32, 32, 32, 4 (short) per epoch
    tr = make_trainer(system, ds, {"config": config, "batch_size": 32, "hidden": [8]})
    tr.train_steps(2)
    d = tr.describe()
    traces = d["traces"]
    assert traces == 1
    tr.train_steps(9)                                            # crosses two epoch ends (two short batches)
    tr.predict_topk(ds.X_test, 3)
    tr.predict_topk(ds.X_test[:7], 3)
    d = tr.describe()
    assert d["traces"] == traces and d["predict_traces"] == 1
    if d["xla"]:
        assert d["xla_input_shapes"] == 1                        # one XLA compilation (padded shapes)
    if d["xla_update"]:
        assert d["update_traces"] == 1


@pytest.mark.tf
def test_describe_params_roundtrip_and_errors():
    ds = planted(n_train=64, n_test=16)
    tr = make_trainer("tf_sampled_softmax", ds, {"config": "tuned", "batch_size": 16, "hidden": [8, 6]})
    d = tr.describe()
    for key in ("system", "config", "n_threads", "device", "tf_version", "xla", "traces", "intra_op_threads",
                "inter_op_threads", "params"):
        assert key in d, key
    assert d["system"] == "tf_sampled_softmax" and d["config"] == "tuned" and d["n_threads"] == 1
    assert d["intra_op_threads"] == 1
    p = tr.get_params()
    assert [p[k].shape for k in ("W0", "W1", "W2")] == [(ds.n_features, 8), (8, 6), (6, ds.n_labels)]
    # setup's warm-up step (tracing/compiling outside the clock) leaves the initial weights untouched
    from slidebench.baselines.base import init_weights
    from slidebench.contract import derive_seed
    init = init_weights([ds.n_features, 8, 6, ds.n_labels], "release", 0.01, derive_seed(0, "init"))
    for i, (w, b) in enumerate(init):
        np.testing.assert_array_equal(p[f"W{i}"], w)
        np.testing.assert_array_equal(p[f"b{i}"], b)
    q = {k: v + 1.0 for k, v in p.items()}
    tr.set_params(q)
    for k, v in tr.get_params().items():
        np.testing.assert_array_equal(v, q[k])
    with pytest.raises(ValueError, match="W1"):
        tr.set_params({**q, "W1": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        tr.set_params({k: v for k, v in q.items() if k != "b0"})
    with pytest.raises(ValueError, match="k must be"):
        tr.predict_topk(ds.X_test, ds.n_labels + 1)
    with pytest.raises(ValueError, match="columns"):
        tr.predict_topk(ds.X_test[:, :10], 1)


@pytest.mark.tf
def test_other_thread_settings_in_same_process_is_a_clear_error():
    ds = planted(n_train=20, n_test=5)
    make_trainer("tf_full_softmax", ds, {"batch_size": 8, "hidden": [4]})        # 1 thread in this process
    from slidebench.trainers import get_trainer
    with pytest.raises(RuntimeError, match="already initialised"):
        get_trainer("tf_full_softmax")().setup(ds, {"batch_size": 8, "hidden": [4]}, seed=0, n_threads=2)


@pytest.mark.tf
@pytest.mark.parametrize("multilabel", ["one_random", "padded"])
def test_sampled_label_encoding(multilabel):
    """padded: own labels cycled to num_true slots (a cyclic window when there are more); one_random: one
    true label; label-less rows are masked (has = 0) and every encoded label is a true label of its row."""
    ds = planted(n_train=64, n_test=8, n_labels=12)
    tr = make_trainer("tf_sampled_softmax", ds, {"config": "tuned", "batch_size": 16, "hidden": [4],
                                                 "multilabel": multilabel, "num_true": 3, "num_sampled": 4})
    Y = _csr([0, 1, 1, 3, 3, 3, 3, 3], [5, 2, 7, 0, 1, 4, 8, 9], np.ones(8), (4, 12))   # |y| = 1, 2, 0, 5
    for _ in range(20):
        labels, has, n_real = tr._encode_y(Y)
        T = 3 if multilabel == "padded" else 1
        assert labels.shape == (4, T) and labels.dtype == np.int64 and n_real == 4
        np.testing.assert_array_equal(has, [1, 1, 0, 1])
        for i in (0, 1, 3):
            true = Y.indices[Y.indptr[i]:Y.indptr[i + 1]]
            assert set(labels[i]) <= set(true)
        if multilabel == "padded":
            np.testing.assert_array_equal(labels[0], [5, 5, 5])
            np.testing.assert_array_equal(labels[1], [2, 7, 2])
            assert len(set(labels[3])) == 3               # a window of 3 distinct labels out of 5
    assert tr.describe()["traces"] == 1
    st = tr.train_steps(3)
    assert np.isfinite(st.loss) and st.counters["num_true"] == (3.0 if multilabel == "padded" else 1.0)


def test_inter_op_threads_default_is_one():
    """TF's inter-op pool is 1 unless a config sets inter_op_threads (docs/baselines.md), whatever the run's
    thread count; intra-op is the run's thread count. Both named configs leave it unset."""
    from slidebench.baselines.config import thread_settings
    from slidebench.baselines.full_softmax import CONFIGS as FC
    from slidebench.baselines.sampled_softmax import CONFIGS as SC
    for cfg in list(FC.values()) + list(SC.values()):
        assert cfg["inter_op_threads"] is None
        assert thread_settings(cfg, 2) == (2, 1)
        assert thread_settings(cfg, 7) == (7, 1)
    assert thread_settings({**FC["tuned"], "inter_op_threads": 3}, 2) == (2, 3)


def test_sampled_configs_paper_is_the_release_tuned_learns():
    from slidebench.baselines.sampled_softmax import CONFIGS as SC
    assert {k: SC["paper"][k] for k in ("num_sampled", "multilabel", "sampler", "true_expected_count")} == \
        {"num_sampled": 0.1, "multilabel": "one_random", "sampler": "log_uniform", "true_expected_count": "sampler"}
    assert {k: SC["tuned"][k] for k in ("multilabel", "num_true", "sampler", "true_expected_count")} == \
        {"multilabel": "masked", "num_true": "max", "sampler": "uniform", "true_expected_count": "one"}


def test_num_true_settings():
    from slidebench.baselines.sampled_softmax import num_true_for
    counts = np.array([1, 2, 2, 3, 9, 0])
    assert num_true_for("max", counts) == 9
    assert num_true_for("auto", counts) == int(np.ceil(np.percentile(counts, 90)))
    assert num_true_for(4, counts) == 4
    assert num_true_for("max", np.array([100])) == 64          # capped
    assert num_true_for("max", np.array([], int)) == 1


def _np_sampled_loss(h, W, b, labels, cand, true_ec, samp_ec, remove_hits=True):
    """Reference of tf.nn.sampled_softmax_loss: W [L, d]; true logits shifted by log(true_ec), sampled
    logits by log(samp_ec), sampled classes that are a row's true label removed, targets 1/T per slot."""
    T = labels.shape[1]
    tl = np.einsum("bd,btd->bt", h, W[labels]) + b[labels] - np.log(true_ec)
    sl = h @ W[cand].T + b[cand] - np.log(samp_ec)[None, :]
    if remove_hits:
        hit = (labels[:, :, None] == cand[None, None, :]).any(axis=1)
        sl = np.where(hit, -np.inf, sl)
    z = np.concatenate([tl, sl], axis=1).astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return lse - tl.sum(axis=1) / T


@pytest.mark.tf
@pytest.mark.parametrize("tec", ["one", "sampler"])
@pytest.mark.parametrize("sampler", ["uniform", "log_uniform", "unigram"])
def test_sampled_expected_count_path(tec, sampler):
    """The trainer's own sampled values and loss: with true_expected_count='one' the labels' expected count
    is exactly 1 (no shift of the true logits) while the sampled ones keep the sampler's; 'sampler' keeps
    TF's; the loss equals a numpy reference of the sampled softmax for the values used."""
    import tensorflow as tf
    ds = planted(n_train=64, n_test=8, n_labels=40)
    tr = make_trainer("tf_sampled_softmax", ds, {"config": "tuned", "batch_size": 16, "hidden": [6],
                                                 "num_sampled": 10, "true_expected_count": tec,
                                                 "sampler": sampler, "multilabel": "padded"})
    assert tr.num_true == int(np.diff(ds.Y_train.indptr).max())           # num_true = "max": all labels
    labels, has, _ = tr._encode_y(ds.Y_train[:8])
    assert labels.shape == (8, tr.num_true)
    for i in range(8):                                  # every label of the row is among its slots
        true = set(ds.Y_train.indices[ds.Y_train.indptr[i]:ds.Y_train.indptr[i + 1]].tolist())
        assert set(labels[i].tolist()) == true
    cand, true_ec, samp_ec = (t.numpy() for t in tr._sampled_values(tf.constant(labels)))
    assert cand.shape == (10,) and len(set(cand.tolist())) == 10 and cand.max() < ds.n_labels
    assert np.all(samp_ec > 0) and np.all(samp_ec <= 1)
    if tec == "one":
        np.testing.assert_array_equal(true_ec, np.ones_like(true_ec))
    else:
        assert np.all(true_ec < 1)                      # the sampler's probability, as TF's default
    if sampler == "uniform":                           # uniform: every class has the same expected count
        np.testing.assert_allclose(samp_ec, samp_ec[0], rtol=1e-6)
    h = np.random.default_rng(1).random((8, 6)).astype(np.float32)
    W = tr.Ws[-1].numpy()
    W = W + np.random.default_rng(2).standard_normal(W.shape).astype(np.float32)   # non-trivial logits
    tr.Ws[-1].assign(W)
    bias = tr.bs[-1].numpy()
    got = tr._sampled_loss(tf.constant(h), tf.constant(labels), (tf.constant(cand), tf.constant(true_ec),
                                                                  tf.constant(samp_ec))).numpy()
    want = _np_sampled_loss(h, W, bias, labels, cand, true_ec, samp_ec)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    # the correction matters: with uniform sampling and the sampler's expected count on the labels too,
    # the loss equals the uncorrected one (every logit shifted alike); with 'one' it does not
    flat = _np_sampled_loss(h, W, bias, labels, cand, np.ones_like(true_ec), np.ones_like(samp_ec))
    if sampler == "uniform" and tec == "sampler":
        np.testing.assert_allclose(got, flat, rtol=2e-4, atol=2e-4)
    if tec == "one":
        assert np.abs(got - flat).max() > 0.1
    st = tr.train_steps(2)
    assert np.isfinite(st.loss)


def _np_masked_loss(h, W, b, Y, cand, samp_ec, remove_hits=True):
    """Reference of the multi-label sampled softmax ('masked'): softmax over each sample's labels (each
    once, expected count 1) and the sampled classes (logits minus log samp_ec, labels of the sample
    removed), cross-entropy against 1/|y| on each label; 0 for a label-less sample."""
    out = np.zeros(Y.shape[0])
    for i in range(Y.shape[0]):
        y = Y.indices[Y.indptr[i]:Y.indptr[i + 1]]
        if len(y) == 0:
            continue
        tl = h[i] @ W[y].T + b[y]
        keep = ~np.isin(cand, y) if remove_hits else np.ones(len(cand), bool)
        sl = (h[i] @ W[cand].T + b[cand] - np.log(samp_ec))[keep]
        z = np.concatenate([tl, sl]).astype(np.float64)
        lse = z.max() + np.log(np.exp(z - z.max()).sum())
        out[i] = lse - tl.mean()
    return out


@pytest.mark.tf
@pytest.mark.parametrize("hits", [True, False])
def test_masked_multilabel_loss_matches_reference_and_tf_for_one_label(hits):
    """multilabel='masked': every label once, unused slots out of the softmax, target 1/|y|. Its loss
    equals a numpy reference of that objective (rows with 1, 2, 3 and 0 labels at num_true 3; sampled
    classes that are labels removed), and for a one-label row it equals tf.nn.sampled_softmax_loss with
    num_true = 1 on the same sampled values. 'padded' cycles the one label into all 3 slots, so its
    loss differs (the label enters the denominator 3 times): the bug 'masked' fixes."""
    import tensorflow as tf
    ds = planted(n_train=64, n_test=8, n_labels=12)
    tr = make_trainer("tf_sampled_softmax", ds, {"config": "tuned", "batch_size": 16, "hidden": [5],
                                                 "multilabel": "masked", "num_true": 3, "num_sampled": 6,
                                                 "remove_accidental_hits": hits})
    Y = _csr([0, 1, 1, 2, 2, 2], [5, 2, 7, 0, 1, 4], np.ones(6), (4, 12))   # |y| = 1, 2, 3, 0
    labels, mask, has, n_real = tr._encode_y(Y)
    np.testing.assert_array_equal(mask, [[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(labels[:3][mask[:3] > 0], [5, 2, 7, 0, 1, 4])
    np.testing.assert_array_equal(has, [1, 1, 1, 0])
    rng = np.random.default_rng(3)
    h = rng.standard_normal((4, 5)).astype(np.float32)
    W = 0.3 * rng.standard_normal(tr.Ws[-1].shape).astype(np.float32)
    tr.Ws[-1].assign(W)
    bias = rng.standard_normal(tr.bs[-1].shape).astype(np.float32)
    bias[5] = 8.0                     # row 0's label is likely: where cycling it changes the loss most
    tr.bs[-1].assign(bias)
    cand = np.array([5, 9, 2, 11, 0, 3], np.int64)               # hits: 5 (row 0), 2 (row 1), 0 (row 2)
    samp_ec = np.full(6, 0.5, np.float32)
    sv = (tf.constant(cand), tf.ones((4, 3), tf.float32), tf.constant(samp_ec))
    got = tr._masked_sampled_loss(tf.constant(h), tf.constant(labels), tf.constant(mask), sv).numpy()
    want = _np_masked_loss(h, W, bias, Y, cand, samp_ec, remove_hits=hits)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    one = tf.nn.sampled_softmax_loss(weights=tr.Ws[-1], biases=tr.bs[-1], labels=tf.constant(labels[:1, :1]),
                                     inputs=tf.constant(h[:1]), num_sampled=6, num_classes=12, num_true=1,
                                     sampled_values=(tf.constant(cand), tf.ones((1, 1)), tf.constant(samp_ec)),
                                     remove_accidental_hits=hits).numpy()
    np.testing.assert_allclose(got[0], one[0], rtol=2e-4, atol=2e-4)
    cycled = _np_sampled_loss(h[:1], W, bias, np.full((1, 3), 5), cand, np.ones((1, 3)), samp_ec, hits)
    assert cycled[0] - got[0] > 0.3       # the label 3 times in the denominator: log((3 + x) / (1 + x))
    st = tr.train_steps(3)
    assert np.isfinite(st.loss) and tr.describe()["traces"] == 1


def test_sampled_bad_multilabel_names_the_key():
    from slidebench.baselines.sampled_softmax import MULTILABEL
    assert MULTILABEL == ("one_random", "padded", "masked")
    ds = planted(n_train=20, n_test=5)
    with pytest.raises(ValueError, match="multilabel"):
        make_trainer("tf_sampled_softmax", ds, {"config": "tuned", "batch_size": 8, "hidden": [4],
                                                "multilabel": "cycled"})

def test_roofline_accounting_env_and_csv(tmp_path):
    """The roofline's FLOP count (three 128 x 128 x N products a step), its child environment (the
    OpenBLAS pins dropped, threads fixed) and the CSV the report reads."""
    import csv
    from slidebench.baselines import roofline
    assert roofline.output_layer_flops(128, 128, 200_000) == 3 * 2 * 128 * 128 * 200_000
    env = roofline.child_env(2, {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "PATH": "/bin"})
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env and env["PATH"] == "/bin"
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "2"
    row = {"n_labels": 200000, "threads": 2, "tf_gflops": 130.0, "sgemm_gflops": 200.0, "fraction": 0.65,
           "openblas_coretype": "SkylakeX", "tf_ms_per_step": 151.0}
    path = roofline.write_csv([row], tmp_path / "summary" / "roofline.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["n_labels", "threads", "tf_gflops", "sgemm_gflops", "fraction", "openblas_coretype"]
    assert rows[0]["openblas_coretype"] == "SkylakeX" and float(rows[0]["fraction"]) == 0.65


@pytest.mark.tf
@pytest.mark.parametrize("n_cols", [129, 200, 1000, 4097, 4160])
def test_block_top_k_equals_tf_top_k_ties_included(n_cols):
    """The predict's two-pass top-k (baselines/topk.py) returns tf.math.top_k's indices exactly, on logits
    with many ties (small integers; rows of one repeated value), widths not a multiple of the block, and a
    k above the number of blocks (its fallback)."""
    from slidebench.baselines.tf_runtime import configure_tf
    from slidebench.baselines.topk import block_top_k
    tf, _ = configure_tf(1, 1, "cpu")                  # the thread settings every test here uses
    rng = np.random.default_rng(n_cols)
    z = rng.integers(-3, 4, size=(40, n_cols)).astype(np.float32)
    z[0] = 1.0
    z[1, -1] = 9.0                                     # the best label in the padded last block
    z[2] = rng.standard_normal(n_cols).astype(np.float32)
    f = tf.function(lambda x, k: block_top_k(tf, x, k),
                    input_signature=[tf.TensorSpec([None, n_cols], tf.float32), tf.TensorSpec([], tf.int32)])
    for k in (1, 5, 17, -(-n_cols // 64) + 1):
        got = f(tf.constant(z), tf.constant(k, tf.int32)).numpy()
        want = tf.math.top_k(tf.constant(z), k=k, sorted=True).indices.numpy()
        np.testing.assert_array_equal(got, want, err_msg=f"k={k}")
    with pytest.raises(ValueError, match="block"):
        block_top_k(tf, tf.constant(z), 5, block=0)
    from slidebench.baselines.topk import pick_block
    assert (pick_block(200_000), pick_block(100_000), pick_block(4097)) == (64, 32, 64)


@pytest.mark.tf
@pytest.mark.parametrize("system", SYSTEMS)
def test_predict_topk_is_the_exact_top_k_of_the_logits(system):
    """Through the real predict path with more labels than two blocks: the top 5 of the numpy logits."""
    ds = planted(n_train=64, n_test=50, n_labels=300)
    tr = make_trainer(system, ds, {"config": "tuned", "batch_size": 32, "hidden": [16], "lr": 1e-2})
    tr.train_steps(3)
    p = tr.get_params()
    X = ds.X_test.toarray()
    h = np.maximum(X @ p["W0"][:ds.n_features] + p["b0"], 0)
    W1 = p["W1"] if p["W1"].shape[0] == h.shape[1] else p["W1"].T
    z = (h @ W1[:, :ds.n_labels] + p["b1"][:ds.n_labels]).astype(np.float32)
    want = np.argsort(-z, axis=1, kind="stable")[:, :5]
    got = tr.predict_topk(ds.X_test, 5)
    gap = np.sort(z, axis=1)[:, ::-1]
    clear = (gap[:, :5] - gap[:, 1:6]).min(axis=1) > 1e-4       # rows without a near-tie in their top 6
    assert clear.sum() > 40
    np.testing.assert_array_equal(got[clear], want[clear])
