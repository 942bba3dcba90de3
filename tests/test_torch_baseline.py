"""torch_full_softmax: the dense full softmax in PyTorch (TF full softmax's stand-in on GPU machines).

Checked without PyTorch (run everywhere): params validation, the registry, that importing the module
does not import PyTorch. Checked with PyTorch (skipped, and reported so by ``-ra``, where it is not
installed; the suite's extras do not pull it in, since PyPI's default build is several GB of CUDA):
the loss and its gradients against the engine tests' NumPy reference (NumpyNet: the same model and
loss), one Adam step against its textbook update, determinism, learning on a planted set, the
harness end to end on the CPU, and DeviceUnavailable for ``device = "gpu"`` without CUDA.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from slidebench.baselines.torch_full_softmax import CONFIGS, TorchFullSoftmaxTrainer, encode_labels, resolve
from test_baselines import p_at_1, planted
from test_engine_network import NumpyNet

# ----------------------------------------------------------------------------------- no PyTorch needed


def test_module_does_not_import_torch_and_is_registered():
    code = ("import sys, slidebench.baselines.torch_full_softmax\n"
            "from slidebench.trainers import get_trainer, validate_params\n"
            "cls = get_trainer('torch_full_softmax')\n"
            "validate_params('torch_full_softmax', {'batch_size': 8, 'lr': 1e-3}, 10, 5)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print(cls.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "TorchFullSoftmaxTrainer"


@pytest.mark.parametrize("params, match", [
    ({"batch_size": 8, "lr": -1.0}, "'lr'"),
    ({"batch_size": 8, "lr": float("nan")}, "'lr'"),
    ({"batch_size": 8, "beta2": 1.0}, "'beta2'"),
    ({"batch_size": 8, "hidden": []}, "'hidden'"),
    ({"batch_size": 8, "device": "tpu"}, "'device'"),
    ({"batch_size": 8, "tf32": "yes"}, "'tf32'"),
    ({"batch_size": 0}, "'batch_size'"),
    ({"batch_size": 8, "num_sampled": 10}, "unknown parameter 'num_sampled'"),
    ({"batch_size": 8, "config": "paper"}, "unknown config 'paper'"),
])
def test_bad_params_name_the_key(params, match):
    with pytest.raises(ValueError, match=match):
        TorchFullSoftmaxTrainer.validate_params(params, 10, 5)


def test_config_is_explicit_and_default_means_tuned():
    p = resolve({"batch_size": 8, "config": "default"})
    assert p["config"] == "tuned" and set(CONFIGS["tuned"]) <= set(p)
    assert p["device"] == "gpu" and p["tf32"] is True           # TensorFlow's default on GPUs


def test_encode_labels_weights_and_empty_rows():
    ds = planted(n_train=30, n_test=10, empty_every=4)
    rows, ids, w, has = encode_labels(ds.Y_train)
    counts = np.diff(ds.Y_train.indptr)
    assert np.allclose(np.bincount(rows, weights=w, minlength=30)[counts > 0], 1.0)
    assert np.array_equal(has, (counts > 0).astype(np.float32)) and has.min() == 0


# ----------------------------------------------------------------------------------- with PyTorch

def _torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch to run these)")


def _trainer(ds, seed=0, **params):
    tr = TorchFullSoftmaxTrainer()
    tr.setup(ds, {"batch_size": 32, "device": "cpu", **params}, seed=seed, n_threads=1)
    return tr


def test_loss_and_gradients_match_numpy_reference():
    _torch()
    ds = planted(n_train=64, n_test=16, empty_every=5)
    tr = _trainer(ds, hidden=[24], init="normal", init_std=0.3)
    X, Y = ds.X_train[:32], ds.Y_train[:32]
    ref_loss, ref_g = NumpyNet(tr.get_params(), "adam").loss_and_grads(X, Y)
    loss = tr.loss(X, Y)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-5)
    got = {"W0": tr.Ws[0].grad, "b0": tr.bs[0].grad, "W1": tr.Ws[1].grad, "b1": tr.bs[1].grad}
    for k, g in got.items():
        np.testing.assert_allclose(g.numpy(), ref_g[k], rtol=2e-4, atol=1e-6, err_msg=k)


def test_first_adam_step_is_the_textbook_update():
    _torch()
    ds = planted(n_train=64, n_test=16)
    lr, eps = 1e-2, 1e-8
    tr = _trainer(ds, hidden=[16], lr=lr, eps=eps)
    ref = NumpyNet(tr.get_params(), "adam", lr=lr, eps=eps)
    rows = tr.stream._order[:32]
    ref.step(tr.stream.X[rows], tr.stream.Y[rows])     # step 1: m_hat = g, v_hat = g^2: lr * g / (|g| + eps)
    tr.train_steps(1)
    after = tr.get_params()
    for k, want in ref.p.items():
        np.testing.assert_allclose(after[k], want, atol=2e-5 * lr * 100, err_msg=k)


def test_deterministic_for_a_seed_and_setup_leaves_the_start_untouched():
    _torch()
    ds = planted(n_train=200, n_test=40)
    a, b = _trainer(ds, seed=4), _trainer(ds, seed=4)
    from slidebench.baselines.base import init_weights
    from slidebench.contract import derive_seed
    init = init_weights([ds.n_features, 128, ds.n_labels], "release", 0.01, derive_seed(4, "init"))
    np.testing.assert_array_equal(a.get_params()["W1"], init[1][0])    # the warm-up step was undone
    a.train_steps(5)
    b.train_steps(5)
    for k, v in a.get_params().items():
        np.testing.assert_array_equal(v, b.get_params()[k], err_msg=k)
    c = _trainer(ds, seed=5)
    c.train_steps(5)
    assert not np.array_equal(c.get_params()["W1"], a.get_params()["W1"])


def test_learns_the_planted_set_and_predicts_topk():
    _torch()
    ds = planted()
    tr = _trainer(ds, lr=1e-2)
    before = p_at_1(tr.predict_topk(ds.X_test, 1), ds.Y_test)
    stats = tr.train_steps(200)
    top = tr.predict_topk(ds.X_test, 3)
    assert top.shape == (400, 3) and top.dtype == np.int32
    assert all(len(set(r)) == 3 for r in top)
    assert p_at_1(top, ds.Y_test) > max(0.6, before + 0.4)
    assert stats.n_steps == 200 and np.isfinite(stats.loss) and tr.describe()["library"] == "pytorch"
    with pytest.raises(ValueError, match="k must be"):
        tr.predict_topk(ds.X_test, 0)


def test_gpu_without_cuda_is_device_unavailable():
    torch = _torch()
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    from slidebench.baselines import DeviceUnavailable
    with pytest.raises(DeviceUnavailable, match="no CUDA"):
        TorchFullSoftmaxTrainer().setup(planted(n_train=40, n_test=10), {"batch_size": 8}, seed=0, n_threads=1)


def test_harness_runs_it_and_logs_a_gpu_row_as_skipped(tmp_path):
    """Through the real runner: the CPU row trains; the GPU row (no CUDA here) is logged as skipped."""
    torch = _torch()
    import json

    exp = tmp_path / "torchrun.toml"
    exp.write_text("""
[experiment]
name = "torchrun"
kind = "train"
[data]
preset = "amazon"
scale = "tiny"
seed = 0
[budget]
train_seconds = 1.5
[eval]
every_seconds = 0.5
subset_size = 100
[run]
seeds = [0]
threads = [1]
batch_sizes = [32]
[[systems]]
label = "dense-cpu"
system = "torch_full_softmax"
params = { lr = 1e-2, device = "cpu" }
[[systems]]
label = "dense-gpu"
system = "torch_full_softmax"
params = { lr = 1e-2 }
""")
    out = subprocess.run([sys.executable, "-m", "slidebench", "run", str(exp), "--quiet",
                          "--results-dir", str(tmp_path / "r")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    stops = {}
    for log in (tmp_path / "r" / "raw" / "torchrun").glob("*/*.jsonl"):
        recs = [json.loads(x) for x in log.read_text().splitlines()]
        stops[log.parent.name] = next(r for r in recs if r["type"] == "run_stop")
    assert stops["dense-cpu"]["status"] == "budget_time" and stops["dense-cpu"]["steps"] > 10
    if not torch.cuda.is_available():
        assert stops["dense-gpu"]["status"] == "skipped" and "CUDA" in stops["dense-gpu"]["reason"]
