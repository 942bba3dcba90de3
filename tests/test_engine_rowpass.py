"""The row-ordered training step (`out_pass="row"`, engine/net_rowpass.pxd): bitwise identical at any
thread count, and equal to the sample pass where it must be (the same logits, loss, output deltas and
output-layer update; hidden deltas up to rounding). Its runs against the NumPy references are the
out_pass="row" cases of test_engine_network.py (masked, hidden 80 and 144) and
test_engine_correction.py (the corrected loss)."""
from __future__ import annotations

import numpy as np
import pytest

from slidebench.engine import Network, parse_config
from test_engine_network import random_batch


def _batches(seed, sizes, F, C):
    rng = np.random.default_rng(seed)
    return [random_batch(rng, b, F, C, empty_label_rows=(2,)) for b in sizes]


def _train(params, nt, batches, F, C, out_pass):
    net = Network.from_params(F, C, params, seed=7, n_threads=nt, out_pass=out_pass)
    losses = [net.train_batch(X, Y) for X, Y in batches]
    return net.get_params(), losses


@pytest.mark.parametrize("params", [
    {"hidden": [144], "sampler": "random", "active": 40, "correction": "logq"},
    {"hidden": [24], "sampler": "vanilla", "hash": "dwta", "K": 2, "L": 8, "range_pow": 6, "active": 30},
])
def test_row_step_bitwise_identical_at_any_thread_count(params):
    """Chunks of rows with their own hidden-delta buffers, summed in chunk order: the thread count does
    not change a bit; batch sizes change between steps (the buffers are regrown or reused)."""
    F, C = 100, 400
    batches = _batches(11, [32, 16, 40, 32], F, C)
    params = {**params, "lr": 1e-2}
    p1, l1 = _train(params, 1, batches, F, C, "row")
    p1b, l1b = _train(params, 1, batches, F, C, "row")
    assert l1 == l1b
    for k in p1:
        assert np.array_equal(p1[k], p1b[k]), k
    for nt in (2, 3, 5):
        pn, ln = _train(params, nt, batches, F, C, "row")
        assert ln == l1, nt
        for k in p1:
            assert np.array_equal(p1[k], pn[k]), (nt, k)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_row_step_against_the_sample_pass(optimizer):
    """Same active sets and logits: the first step's loss and output-layer update are bitwise the
    sample pass's; the hidden deltas are summed in another order, so layer 0 agrees to rounding, and
    after several steps the two runs stay close."""
    F, C = 100, 400
    params = {"hidden": [144], "sampler": "random", "active": 40, "lr": 1e-2, "correction": "logq",
              "optimizer": optimizer}
    batches = _batches(12, [32] * 6, F, C)
    ps, ls = _train(params, 2, batches[:1], F, C, "sample")
    pr, lr_ = _train(params, 2, batches[:1], F, C, "row")
    assert ls == lr_
    assert np.array_equal(ps["W1"], pr["W1"]) and np.array_equal(ps["b1"], pr["b1"])
    # Adam's first step is lr * g / |g| per element: rounding in a tiny g can move it by a few 1e-5
    np.testing.assert_allclose(pr["W0"], ps["W0"], rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(pr["b0"], ps["b0"], rtol=2e-4, atol=2e-6)
    ps, ls = _train(params, 2, batches, F, C, "sample")
    pr, lr_ = _train(params, 2, batches, F, C, "row")
    np.testing.assert_allclose(lr_, ls, rtol=1e-4)
    for k in ps:
        np.testing.assert_allclose(pr[k], ps[k], rtol=1e-3, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("params", [
    {"hidden": [16, 8], "sampler": "random", "active": 10},                 # two hidden layers
    {"hidden": [16], "sampler": "full"},                                    # a full output layer
    {"hidden": [16], "sampler": "random", "lsh_layers": "all", "active": 0.5},   # a sampled hidden layer
])
def test_row_pass_refuses_shapes_it_does_not_run(params):
    with pytest.raises(ValueError, match="out_pass='row' needs one hidden layer computed in full"):
        Network.from_params(20, 50, params, out_pass="row")


def test_unknown_out_pass_is_a_clear_error():
    with pytest.raises(ValueError, match="out_pass must be 'sample' or 'row'"):
        Network.from_params(20, 50, {"hidden": [16], "sampler": "random", "active": 10}, out_pass="rows")


@pytest.mark.parametrize("params", [
    {"hidden": [16, 8], "sampler": "random", "active": 10},
    {"hidden": [16], "sampler": "full"},
    {"hidden": [16], "sampler": "random", "lsh_layers": "all", "active": 0.5},
])
def test_out_pass_param_refuses_shapes_it_does_not_run(params):
    """The experiment-file route (param 'out_pass') is checked by parse_config, before anything is built."""
    with pytest.raises(ValueError, match="param 'out_pass' = 'row' needs one hidden layer"):
        parse_config(20, 50, dict(params, out_pass="row"))
    with pytest.raises(ValueError, match="out_pass"):
        parse_config(20, 50, {"hidden": [16], "sampler": "random", "active": 10, "out_pass": "rows"})


def test_out_pass_param_is_the_row_step_and_the_keyword_overrides_it():
    F, C = 40, 60
    params = {"hidden": [24], "sampler": "random", "active": 12, "lr": 1e-2}
    batches = _batches(5, [16, 16, 16], F, C)
    p_kw, l_kw = _train(params, 2, batches, F, C, "row")
    p_par, l_par = _train(dict(params, out_pass="row"), 2, batches, F, C, None)
    p_smp, l_smp = _train(dict(params, out_pass="row"), 2, batches, F, C, "sample")
    p_def, l_def = _train(params, 2, batches, F, C, None)
    assert l_par == l_kw
    for k in p_kw:
        assert np.array_equal(p_par[k], p_kw[k]), k
        assert np.array_equal(p_smp[k], p_def[k]), k        # the keyword wins over the param
    assert any(not np.array_equal(p_kw[k], p_def[k]) for k in p_kw)   # the two orders differ (rounding)
