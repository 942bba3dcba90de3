"""Synthetic look-alikes: determinism, streaming equals in-memory, tiny presets hit their targets,
the planted structure is learnable (kNN) and carried by the labels, load_dataset caching."""
import numpy as np
import pytest

import slidebench.data as data_mod
from slidebench.contract import Dataset
from slidebench.data import (PRESETS, dataset_stats, format_stats, generate, knn_precision, load_dataset,
                             read_xmlrepo, write_files)
from slidebench.data import synthetic as syn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("synth-cache")
    return {p: load_dataset(p, "tiny", seed=0, cache_dir=cache) for p in PRESETS}


def same(a, b):
    return a.shape == b.shape and (a != b).nnz == 0


def test_deterministic_from_seed():
    a = generate("amazon", "tiny", seed=3)
    b = generate("amazon", "tiny", seed=3)
    c = generate("amazon", "tiny", seed=4)
    assert all(same(x, y) for x, y in zip(a, b))
    assert not same(a[0], c[0])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_tiny_matches_targets(tiny, preset):
    ds = tiny[preset]
    ds.validate()
    spec = PRESETS[preset]["tiny"]
    st = dataset_stats(ds)
    assert (st["n_train"], st["n_test"], st["n_features"], st["n_labels"]) == \
        (spec.n_train, spec.n_test, spec.n_features, spec.n_labels)
    assert st["nnz_per_point_mean"] == pytest.approx(spec.nnz_mean, rel=0.08)
    assert st["labels_per_point_mean"] == pytest.approx(spec.labels_mean, rel=0.08)
    assert -1.2 < st["label_zipf_slope"] < -0.4                  # power-law label frequency
    assert st["top1pct_label_share"] > 0.05                       # a head ...
    assert st["frac_labels_unused"] < 0.1                         # ... and a covered long tail
    assert st["empty_feature_points"] == 0 and st["empty_label_points_train"] == 0
    # co-occurrence far above what independent labels would give (max label frequency / n_train)
    indep = np.bincount(ds.Y_train.indices).max() / ds.X_train.shape[0]
    assert st["cooc_top_partner"] > indep + 0.1
    # values: L2-normalised rows, short decimals
    norms = np.sqrt(np.asarray(ds.X_train.multiply(ds.X_train).sum(axis=1)).ravel())
    assert np.allclose(norms, 1.0, atol=1e-3)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_planted_structure_is_learnable_but_not_trivial(tiny, preset):
    ds = tiny[preset]
    p1 = knn_precision(ds, n_eval=500)["p_at_1"]
    assert 0.2 < p1 < 0.8, p1
    # control: the same features with the training labels of shuffled points -> far lower
    perm = np.random.default_rng(0).permutation(ds.Y_train.shape[0])
    ctrl = Dataset("ctrl", ds.X_train, ds.Y_train[perm], ds.X_test, ds.Y_test)
    assert knn_precision(ctrl, n_eval=500)["p_at_1"] < p1 - 0.1


def test_streamed_files_equal_in_memory(tmp_path):
    paths = write_files("delicious", "tiny", tmp_path, seed=1)
    Xtr, Ytr, Xte, Yte = generate("delicious", "tiny", seed=1)
    X, Y = read_xmlrepo(paths["train"], cache=False)
    assert same(X, Xtr) and same(Y, Ytr)
    X, Y = read_xmlrepo(paths["test"], cache=False)
    assert same(X, Xte) and same(Y, Yte)
    assert not list(tmp_path.glob(".*tmp"))


def test_load_dataset_caches_and_reloads(tmp_path, monkeypatch):
    ds = load_dataset("amazon", "tiny", seed=2, cache_dir=tmp_path)
    assert ds.name == "amazon-tiny" and ds.meta["source"] == "synthetic" and len(ds.sha256) == 64
    files = list(tmp_path.glob("amazon-tiny-s2-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(data_mod, "generate", lambda *a, **k: pytest.fail("cache not used"))
    ds2 = load_dataset("amazon", "tiny", seed=2, cache_dir=tmp_path)
    assert same(ds.X_train, ds2.X_train) and same(ds.Y_test, ds2.Y_test) and ds2.sha256 == ds.sha256
    ds2.validate()
    assert load_dataset.__module__ == "slidebench.data"


def test_sha_depends_on_params_and_seed():
    s = PRESETS["amazon"]["tiny"]
    assert syn.spec_sha256(s, 0) != syn.spec_sha256(s, 1)
    assert syn.spec_sha256(s, 0) != syn.spec_sha256(PRESETS["amazon"]["small"], 0)


@pytest.mark.parametrize("args, msg", [(("wiki", "tiny"), "unknown preset"), (("amazon", "huge"), "unknown scale")])
def test_bad_names(args, msg, tmp_path):
    with pytest.raises(ValueError, match=msg):
        load_dataset(*args, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        load_dataset("amazon", "tiny", seed=-1, cache_dir=tmp_path)


def test_format_stats_side_by_side(tiny):
    sts = [dataset_stats(tiny[p]) for p in sorted(PRESETS)]
    table = format_stats(sts)
    lines = table.splitlines()
    assert "amazon-tiny" in lines[0] and "delicious-tiny" in lines[0]
    assert any(l.startswith("labels/point mean") for l in lines)
    assert len({len(l) for l in lines}) == 1                      # aligned
    assert format_stats(sts[0]).count("\n") == table.count("\n")
    with pytest.raises(ValueError):
        format_stats([])


def test_paper_presets_have_real_dimensions():
    d, a = PRESETS["delicious"]["paper"], PRESETS["amazon"]["paper"]
    assert (d.n_features, d.n_labels, d.n_train, d.n_test) == (782585, 205443, 196606, 100095)
    assert (a.n_features, a.n_labels, a.n_train, a.n_test) == (135909, 670091, 490449, 153025)
