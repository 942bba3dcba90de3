"""Micro-experiments (fig4 sampler cost, fig11 hard threshold, tab3 insertion) at tiny sizes."""
from __future__ import annotations

import os
import subprocess
import sys
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slidebench.reporting import micro, plots

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = {"experiment", "scale", "host_cpu", "cores", "n_threads", "seed"}


def test_analytic_curve_is_the_binomial_tail():
    rows = micro.analytic_rows(10, [1, 4, 10], 11)
    assert len(rows) == 33
    for r in rows:
        L, m, p = r["L"], r["m"], r["p"]
        direct = sum(comb(L, j) * p ** j * (1 - p) ** (L - j) for j in range(m, L + 1))
        assert r["prob"] == pytest.approx(direct, abs=1e-12)
        assert r["source"] == "analytic"


def test_per_scale_values_and_errors():
    assert micro.per_scale({"tiny": 1, "small": 2}, "small", "k") == 2
    assert micro.per_scale([1, 2], "tiny", "k") == [1, 2]
    with pytest.raises(ValueError, match="no value for scale 'paper'"):
        micro.per_scale({"tiny": 1}, "paper", "n_labels")


@pytest.mark.parametrize("spec, match", [
    ({"micro": {"measure": "threshold", "Lx": 3}}, "unknown key 'Lx'"),
    ({"micro": {"measure": "nope"}}, "measure must be one of"),
    ({}, r"needs a \[micro\] table"),
    ({"micro": {"measure": "threshold", "m": [11]}}, "every m must be in 1..L=10"),
    ({"micro": {"measure": "insertion", "dim": 0}}, "dim must be an int >= 1"),
])
def test_bad_micro_spec_is_a_clear_error(tmp_path, spec, match):
    with pytest.raises(ValueError, match=match):
        micro.run_micro(spec, scale="tiny", n_threads=1, out_csv=tmp_path / "x.csv", progress=False)
    assert not (tmp_path / "x.csv").exists()


def test_bad_scale_and_threads(tmp_path):
    spec = {"micro": {"measure": "threshold"}}
    with pytest.raises(ValueError, match="scale"):
        micro.run_micro(spec, scale="huge", n_threads=1, out_csv=tmp_path / "x.csv")
    with pytest.raises(ValueError, match="n_threads"):
        micro.run_micro(spec, scale="tiny", n_threads=0, out_csv=tmp_path / "x.csv")


def test_threshold_measured_points_follow_the_binomial_curve(tmp_path):
    pytest.importorskip("slidebench.engine")
    spec = {"experiment": {"name": "fig11"}, "run": {"seeds": [3]},
            "micro": {"measure": "threshold", "n_trials": 24, "n_neurons": 300, "m": [1, 3, 6], "bins": 10}}
    out = micro.run_micro(spec, scale="tiny", n_threads=1, out_csv=tmp_path / "fig11.csv", progress=False)
    df = pd.read_csv(out)
    assert CONTEXT <= set(df.columns)
    assert {"source", "m", "L", "p", "prob", "n_pairs"} <= set(df.columns)
    assert (df["seed"] == 3).all() and (df["L"] == 10).all()
    me = df[df["source"] == "measured"]
    assert set(me["m"]) == {1, 3, 6}
    assert me["n_pairs"].sum() == 3 * 24 * 300
    # the engine's threshold query selects exactly the neurons whose codes collide in >= m tables
    assert (me["agree_with_codes"] == 1.0).all()
    an = np.array([plots.hard_threshold_prob(p, 10, int(m)) for p, m in zip(me["p"], me["m"])])
    err = np.abs(me["prob"].to_numpy() - an)
    # bins hold ~700 pairs: binomial noise sd <= 0.02; p is estimated from 400 functions
    assert err.mean() < 0.04, me.assign(analytic=an)
    assert err.max() < 0.15, me.assign(analytic=an)
    # the curves really are different for different m (a broken query would give one curve)
    mid = me[(me["p"] > 0.3) & (me["p"] < 0.5)].groupby("m")["prob"].mean()
    assert mid[1] > mid[3] > mid[6]


def test_insertion_rows(tmp_path):
    pytest.importorskip("slidebench.engine")
    spec = {"experiment": {"name": "tab3"},
            "micro": {"measure": "insertion", "n_neurons": {"tiny": 3000}, "repeats": 2, "range_pow": 12}}
    out = micro.run_micro(spec, scale="tiny", n_threads=1, out_csv=tmp_path / "tab3.csv", progress=False)
    df = pd.read_csv(out)
    assert CONTEXT <= set(df.columns)
    assert list(df["operation"]) == ["hash_rows", "insert_fifo", "insert_reservoir", "rebuild_fifo",
                                     "rebuild_reservoir"]
    assert (df["n_neurons"] == 3000).all() and (df["repeats"] == 2).all()
    assert (df["seconds_min"] > 0).all()
    assert (df["seconds_min"] <= df["seconds_median"]).all() and (df["seconds_median"] <= df["seconds_max"]).all()


def test_fig4_through_the_cli_at_tiny_scale(tmp_path):
    """The experiment file itself, through the runner (a child process), at scale tiny."""
    pytest.importorskip("slidebench.engine")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    res = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "slidebench", "run", str(ROOT / "experiments" / "fig4.toml"),
                        "--scale", "tiny", "--threads", "1", "--results-dir", str(res)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    df = pd.read_csv(res / "summary" / "fig4.csv")
    assert CONTEXT <= set(df.columns)
    assert {"sampler", "what", "us_per_sample", "us_per_sample_min", "us_per_sample_max", "active_mean"} \
        <= set(df.columns)
    q = df[df["what"] == "query"]
    assert {"hash only", "vanilla", "topk", "threshold"} == set(q["sampler"])
    k = df[df["what"] == "kernel"]            # compiled kernels alone (LSHIndex.time_queries)
    assert {"hash only", "vanilla", "topk", "threshold"} == set(k["sampler"])
    t = df[df["what"] == "train"]
    assert {"vanilla", "topk", "threshold", "random", "full"} == set(t["sampler"])
    assert (df["us_per_sample"] > 0).all()
    full = t.set_index("sampler")
    # the full sampler computes every output neuron; the LSH ones far fewer
    assert full.loc["full", "active_mean"] == pytest.approx(full.loc["full", "n_labels"])
    assert full.loc["vanilla", "active_mean"] < full.loc["full", "active_mean"]
    # and the figure draws from it
    assert plots.make_figures(res, ["fig4"], progress=False)
