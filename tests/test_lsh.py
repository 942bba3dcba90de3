"""LSH part of the engine: hash families against their theory, tables, samplers, validation.

The theory checks compare the engine's collision rate over many independent hash functions (tables)
with a probability computed independently here (closed form, or a small NumPy Monte Carlo of the
family's definition with fresh randomness). Keys are made equal to the raw codes by choosing K=1 and
range_pow >= code_bits (packed keys), so a key collision is a code collision.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidebench.engine import LSHIndex

FAMILIES = ["simhash", "wta", "dwta", "doph"]


def _agreement(family, x, y, *, range_pow, seeds=4, L=255, dim=None):
    """Fraction of (seed, table) pairs whose K=1 key is equal for x and y."""
    dim = dim or x.shape[0]
    agree = []
    for s in range(seeds):
        idx = LSHIndex(family, dim, 1, L, range_pow, 8, seed=1000 + s)
        k = idx.hash(np.stack([x, y]).astype(np.float32))
        agree.append(k[0] == k[1])
    return float(np.concatenate(agree).mean())


# ------------------------------------------------------------------------------ hash families vs theory

@pytest.mark.parametrize("cos", [0.9, 0.5, 0.0, -0.6])
def test_simhash_bit_agreement_tracks_angle(cos):
    rng = np.random.default_rng(1)
    dim = 300
    x = rng.standard_normal(dim)
    x /= np.linalg.norm(x)
    z = rng.standard_normal(dim)
    z -= z @ x * x
    z /= np.linalg.norm(z)
    y = cos * x + np.sqrt(1 - cos**2) * z
    theory = 1 - np.arccos(cos) / np.pi
    got = _agreement("simhash", x, y, range_pow=1)
    assert abs(got - theory) < 0.06, (got, theory)


@pytest.mark.parametrize("size, overlap", [(600, 500), (600, 300), (600, 100), (50, 40), (50, 20)])
def test_doph_collision_tracks_jaccard(size, overlap):
    # size 50 of 3000: most windows are empty for both sets, densification carries the estimate
    rng = np.random.default_rng(2)
    dim = 3000
    perm = rng.permutation(dim)
    a = perm[:size]
    b = np.concatenate([perm[:overlap], perm[size:2 * size - overlap]])
    x = np.zeros(dim); x[a] = rng.random(a.size) + 0.1
    y = np.zeros(dim); y[b] = rng.random(b.size) + 0.1
    y[rng.random(dim) < 0.3] = -1.0         # negative entries are outside the set
    y[a[:overlap]] = np.abs(y[a[:overlap]]) + 0.1
    jac = overlap / (2 * size - overlap)
    idx = LSHIndex("doph", dim, 1, 255, 16, 8)
    assert idx.packed and idx.code_bits >= 1
    got = _agreement("doph", x, y, range_pow=16)
    assert abs(got - jac) < 0.06, (got, jac)


def _wta_codes(v, windows):
    """Independent WTA definition: argmax position (first on ties) of v within each window."""
    return np.argmax(v[windows], axis=1)


def _random_windows(rng, n, dim, w):
    return np.argsort(rng.random((n, dim)), axis=1)[:, :w]


@pytest.mark.parametrize("noise", [0.3, 1.0])
def test_wta_collision_matches_monte_carlo(noise):
    rng = np.random.default_rng(3)
    dim = 64
    x = rng.standard_normal(dim)
    y = x + noise * rng.standard_normal(dim)
    win = _random_windows(rng, 20000, dim, 8)
    mc = float((_wta_codes(x, win) == _wta_codes(y, win)).mean())
    got = _agreement("wta", x, y, range_pow=3)
    assert abs(got - mc) < 0.06, (got, mc)


def _dwta_mc(x, y, dim, w, n_bins, trials, rng):
    """Independent DWTA: random windows; an all-zero window borrows the code of the first non-empty
    bin of a random probe sequence (the same sequence for both vectors)."""
    agree = []
    for _ in range(trials):
        win = _random_windows(rng, n_bins, dim, w)
        cx, cy = _wta_codes(x, win), _wta_codes(y, win)
        ex, ey = ~(x[win] != 0).any(1), ~(y[win] != 0).any(1)
        for b in range(n_bins):
            if not (ex[b] or ey[b]):
                agree.append(cx[b] == cy[b])
                continue
            probes = rng.integers(0, n_bins, size=4 * n_bins)
            bx = b if not ex[b] else probes[np.argmax(~ex[probes])]
            by = b if not ey[b] else probes[np.argmax(~ey[probes])]
            agree.append(cx[bx] == cy[by])
    return float(np.mean(agree))


def test_dwta_collision_matches_monte_carlo():
    rng = np.random.default_rng(4)
    dim = 128
    x = np.where(rng.random(dim) < 0.12, rng.random(dim), 0.0)
    y = np.where(rng.random(dim) < 0.5, x, np.where(rng.random(dim) < 0.12, rng.random(dim), 0.0))
    # densification matters here: a good share of the windows are empty
    win = _random_windows(rng, 2000, dim, 8)
    assert (~(x[win] != 0).any(1)).mean() > 0.2
    mc = _dwta_mc(x, y, dim, 8, 255, 12, rng)
    got = _agreement("dwta", x, y, range_pow=3)
    # plain WTA (empty windows all give code 0) collides more often: the test can tell them apart
    wta = _agreement("wta", x, y, range_pow=3)
    assert wta - mc > 0.1, (wta, mc)
    assert abs(got - mc) < 0.06, (got, mc)


def test_dwta_equals_wta_on_vectors_without_zeros():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((50, 40)).astype(np.float32)
    a = LSHIndex("wta", 40, 4, 20, 12, 8, seed=9).hash(X)
    b = LSHIndex("dwta", 40, 4, 20, 12, 8, seed=9).hash(X)
    assert np.array_equal(a, b)


def test_dwta_densifies_empty_windows():
    # a vector with a single nonzero: almost every window is empty, DWTA still gives a proper code
    idx = LSHIndex("dwta", 128, 2, 30, 6, 8, seed=1)
    x = np.zeros(128, np.float32)
    x[7] = 1.0
    keys = idx.hash(x)[0]
    wta_keys = LSHIndex("wta", 128, 2, 30, 6, 8, seed=1).hash(x)[0]
    assert (wta_keys == 0).mean() > 0.8           # WTA: empty windows give code 0
    assert len(np.unique(keys)) > 1               # DWTA: borrowed codes of the one non-empty window


# ------------------------------------------------------------------------------ dense == sparse, ranges

@st.composite
def _vectors(draw):
    family = draw(st.sampled_from(FAMILIES))
    dim = draw(st.integers(1, 200))
    K = draw(st.integers(1, 12))
    L = draw(st.integers(1, 12))
    range_pow = draw(st.integers(1, 20))
    n = draw(st.integers(1, 6))
    density = draw(st.sampled_from([0.0, 0.02, 0.2, 0.7, 1.0]))
    seed = draw(st.integers(0, 2**32))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    X[rng.random((n, dim)) >= density] = 0
    if draw(st.booleans()):
        X = np.abs(X)
    if draw(st.booleans()):                      # ties
        X = np.round(X)
    return family, dim, K, L, range_pow, X, seed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_vectors())
def test_dense_and_sparse_hashing_agree_and_keys_in_range(case):
    family, dim, K, L, range_pow, X, seed = case
    idx = LSHIndex(family, dim, K, L, range_pow, 4, seed=seed)
    kd = idx.hash(X)
    # sparse form that also stores some explicit zeros: they must not change anything
    rng = np.random.default_rng(seed + 1)
    keep = (X != 0) | (rng.random(X.shape) < 0.1)
    rows, cols = np.nonzero(keep)
    Xs = sp.csr_matrix((X[rows, cols], (rows, cols)), shape=X.shape)
    Xs = sp.csr_matrix((Xs.data, Xs.indices, Xs.indptr), shape=X.shape)   # no pruning of zeros
    ks = idx.hash(Xs)
    assert kd.shape == (X.shape[0], L) and kd.dtype == np.int32
    assert np.array_equal(kd, ks)
    assert kd.min() >= 0 and kd.max() < 2**range_pow
    assert np.array_equal(idx.hash_rows(X), kd)
    assert np.array_equal(idx.hash_rows(np.asfortranarray(X)), kd)


@pytest.mark.parametrize("family", FAMILIES)
def test_large_dim_dense_and_sparse_agree(family):
    # dim 60,000 x K*L 300: the simhash projection matrix (72 MB) is over the storage limit and is
    # regenerated per coordinate; wta/doph cut their windows from a single permutation
    dim = 60000
    rng = np.random.default_rng(13)
    X = np.zeros((2, dim), np.float32)
    for r in range(2):
        cols = rng.choice(dim, 300, replace=False)
        X[r, cols] = rng.standard_normal(300)
    idx = LSHIndex(family, dim, 6, 50, 18, 16, seed=4)
    if family == "simhash":
        assert idx.nbytes < 1e6        # nothing stored
    kd = idx.hash(X)
    assert np.array_equal(kd, idx.hash(sp.csr_matrix(X)))
    assert kd.min() >= 0 and kd.max() < 2**18
    assert (kd[0] != kd[1]).any()


def test_explicit_zeros_in_sparse_input():
    idx = LSHIndex("dwta", 10, 3, 5, 9, 4, seed=3)
    x = np.array([0, 0.5, 0, -1, 0, 0, 2, 0, 0, 0.1], np.float32)
    Xs = sp.csr_matrix((np.array([0.0, 0.5, -1, 0, 2, 0.1], np.float32),
                        np.array([0, 1, 3, 4, 6, 9]), np.array([0, 6])), shape=(1, 10))
    assert np.array_equal(idx.hash(x), idx.hash(Xs))


def test_wide_keys_are_folded_and_spread():
    idx = LSHIndex("dwta", 128, 10, 8, 12, 8, seed=0)    # 30 bits of codes folded into 12
    assert not idx.packed
    rng = np.random.default_rng(0)
    keys = idx.hash(rng.standard_normal((4000, 128)))
    assert keys.max() < 2**12
    # a good fold reaches most buckets
    assert len(np.unique(keys[:, 0])) > 0.5 * 2**12


def test_key_packing_uses_log2_of_window():
    # K=6 codes of 3 bits fill 18 bits exactly: a random set reaches far more than 3.6% of 2**18
    idx = LSHIndex("dwta", 128, 6, 1, 18, 8, seed=0)
    assert idx.packed and idx.code_bits == 3 and idx.window == 8
    keys = idx.hash(np.random.default_rng(1).standard_normal((50000, 128)))[:, 0]
    assert len(np.unique(keys)) > 0.1 * 2**18
    assert keys.max() >= 2**17


def test_hash_rows_strided_view():
    rng = np.random.default_rng(6)
    W0 = rng.standard_normal((64, 300)).astype(np.float32)   # feature-major [dim, n]: neuron = column
    idx = LSHIndex("simhash", 64, 5, 7, 10, 16, seed=2)
    assert np.array_equal(idx.hash_rows(W0.T), idx.hash(np.ascontiguousarray(W0.T)))


# ------------------------------------------------------------------------------ tables

def _bucket_lists(idx):
    off, ids = idx.export()
    return off, ids


def test_every_inserted_neuron_is_retrievable():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((3000, 64)).astype(np.float32)
    for family in FAMILIES:
        idx = LSHIndex(family, 64, 6, 10, 18, 128, seed=3)
        idx.build(W)
        sizes = idx.bucket_sizes()
        if sizes.max() >= idx.bucket_size:   # doph on dense gaussians may overflow; not this test's case
            continue
        assert sizes.sum() == 10 * 3000
        for i in range(0, 3000, 97):
            ids, counts = idx.query(W[i], mode="vanilla")
            pos = np.flatnonzero(ids == i)
            assert pos.size == 1, (family, i)
            assert counts[pos[0]] == 10


def test_bucket_size_never_exceeded_and_fifo_keeps_last():
    rng = np.random.default_rng(8)
    n, L, bs = 5000, 6, 16
    idx = LSHIndex("simhash", 32, 3, L, 5, bs, insertion="fifo", seed=1)
    W = rng.standard_normal((n, 32)).astype(np.float32)
    codes = idx.hash_rows(W)
    idx.insert(codes)
    sizes = idx.bucket_sizes()
    assert sizes.max() <= bs
    for l in range(L):
        cnt = np.bincount(codes[:, l], minlength=2**5)
        assert np.array_equal(sizes[l], np.minimum(cnt, bs))
        order = idx.fifo_order(l)          # arrival order of this table in this build
        assert np.array_equal(np.sort(order), np.arange(n))
        for key in range(2**5):
            arrivals = order[codes[order, l] == key]
            assert np.array_equal(idx.bucket(l, key), arrivals[-bs:])
    # each table (and each build) has its own arrival order
    assert not np.array_equal(idx.fifo_order(0), idx.fifo_order(1))
    before = idx.fifo_order(0)
    idx.insert(codes)
    assert not np.array_equal(before, idx.fifo_order(0))


@pytest.mark.parametrize("insertion", ["fifo", "reservoir"])
def test_overflowing_buckets_store_every_neuron_with_equal_chance(insertion):
    # SimHash K=4 on 20,000 random rows: 16 buckets of 128 per table hold about 10% of the rows.
    # With arrival order 0..n-1 FIFO kept only the highest ids (14% stored, none below 10,000).
    rng = np.random.default_rng(11)
    n, L = 20000, 50
    W = rng.standard_normal((n, 32)).astype(np.float32)
    idx = LSHIndex("simhash", 32, 4, L, 18, 128, insertion=insertion, seed=3)
    idx.build(W, n_threads=2)
    _, ids = idx.export()
    stored = np.zeros(n)
    for l in range(L):
        stored[ids[l][: int(idx.bucket_sizes()[l].sum())]] += 1
    low, high = stored[: n // 2].sum(), stored[n // 2:].sum()
    assert 0.8 <= low / high <= 1.25, (low, high)
    assert (stored > 0).mean() >= 0.90, (stored > 0).mean()


def test_reservoir_sizes_and_membership():
    rng = np.random.default_rng(9)
    n, L, bs = 4000, 5, 8
    idx = LSHIndex("wta", 16, 2, L, 6, bs, insertion="reservoir", seed=4)
    codes = idx.hash_rows(rng.standard_normal((n, 16)).astype(np.float32))
    idx.insert(codes)
    sizes = idx.bucket_sizes()
    for l in range(L):
        cnt = np.bincount(codes[:, l], minlength=2**6)
        assert np.array_equal(sizes[l], np.minimum(cnt, bs))
        for key in np.flatnonzero(cnt):
            got = idx.bucket(l, key)
            assert len(set(got.tolist())) == len(got)
            assert set(got.tolist()) <= set(np.flatnonzero(codes[:, l] == key).tolist())


def test_reservoir_is_uniform():
    # 100 ids in one bucket of 10 slots: each id kept with probability 1/10 (the release's 1/count
    # rule would favour the first ids heavily). Chi-square over 600 builds (different streams).
    n, bs, builds = 100, 10, 600
    kept = np.zeros(n)
    codes = np.zeros((n, 1), np.int32)
    for s in range(3):
        idx = LSHIndex("simhash", 4, 1, 1, 1, bs, insertion="reservoir", seed=s)
        for _ in range(builds // 3):
            idx.insert(codes)
            b = idx.bucket(0, 0)
            assert len(b) == bs
            kept[b] += 1
    expected = builds * bs / n
    chi2 = float(((kept - expected) ** 2 / expected).sum())
    # 99 degrees of freedom: mean 99, sd ~14; 190 is far in the tail
    assert chi2 < 190, chi2
    first_half, second_half = kept[:50].sum(), kept[50:].sum()
    assert abs(first_half - second_half) < 0.15 * kept.sum()


@pytest.mark.parametrize("insertion", ["fifo", "reservoir"])
@pytest.mark.parametrize("family", FAMILIES)
def test_build_deterministic_across_threads(family, insertion):
    rng = np.random.default_rng(10)
    W = rng.standard_normal((2000, 48)).astype(np.float32)
    a = LSHIndex(family, 48, 4, 12, 10, 4, insertion=insertion, seed=5)
    b = LSHIndex(family, 48, 4, 12, 10, 4, insertion=insertion, seed=5)
    a.build(W, n_threads=1)
    b.build(W, n_threads=2)
    oa, ia = a.export()
    ob, ib = b.export()
    assert np.array_equal(oa, ob) and np.array_equal(ia, ib)
    assert np.array_equal(a.hash(W, n_threads=1), b.hash(sp.csr_matrix(W), n_threads=2))


def test_new_functions_changes_keys_and_empties_tables():
    rng = np.random.default_rng(11)
    W = rng.standard_normal((500, 32)).astype(np.float32)
    idx = LSHIndex("dwta", 32, 4, 8, 12, 16, seed=1)
    idx.build(W)
    k1 = idx.hash(W)
    assert idx.n_items == 500
    idx.new_functions(2)
    assert idx.n_items == 0
    assert len(idx.query(W[0])[0]) == 0
    k2 = idx.hash(W)
    assert (k1 != k2).mean() > 0.5
    idx.build(W)
    assert idx.n_items == 500 and 0 in idx.query(W[0])[0]
    same = LSHIndex("dwta", 32, 4, 8, 12, 16, seed=2)
    assert np.array_equal(same.hash(W), k2)


def test_memory_for_benchmark_shape():
    est = LSHIndex.estimate_bytes(50000, 128, 6, 50, 18, 128, "dwta")
    assert est < 200e6
    idx = LSHIndex("dwta", 128, 6, 50, 18, 128)
    idx.insert(np.zeros((50000, 50), np.int32))
    tables = 50 * (2**18 + 1) * 4 + 50 * 50000 * 4
    assert tables <= idx.nbytes < tables + 1e6
    assert idx.nbytes < est


# ------------------------------------------------------------------------------ samplers

def _numpy_hits(idx, x):
    keys = idx.hash(x)[0]
    hits = np.zeros(idx.n_items, np.int64)
    for l in range(idx.L):
        hits[idx.bucket(l, keys[l])] += 1
    return keys, hits


@pytest.fixture(scope="module")
def sampler_index():
    rng = np.random.default_rng(12)
    W = rng.standard_normal((4000, 32)).astype(np.float32)
    idx = LSHIndex("simhash", 32, 5, 20, 10, 64, seed=7)
    idx.build(W)
    Q = rng.standard_normal((25, 32)).astype(np.float32)
    return idx, Q


@pytest.mark.parametrize("m", [1, 2, 4, 8])
def test_threshold_selects_exactly_ids_hit_m_times(sampler_index, m):
    idx, Q = sampler_index
    for x in Q:
        _, hits = _numpy_hits(idx, x)
        ids, counts = idx.query(x, mode="threshold", min_hits=m)
        expect = np.flatnonzero(hits >= m)
        assert np.array_equal(np.sort(ids), expect)
        assert np.array_equal(counts, hits[ids])
        # ordered by count desc, then id asc
        order = np.lexsort((ids, -counts))
        assert np.array_equal(order, np.arange(len(ids)))


@pytest.mark.parametrize("target", [1, 10, 100, 5000])
def test_topk_returns_most_hit_ids(sampler_index, target):
    idx, Q = sampler_index
    for x in Q:
        _, hits = _numpy_hits(idx, x)
        ids, counts = idx.query(x, mode="topk", target=target)
        hit_ids = np.flatnonzero(hits)
        ref = hit_ids[np.lexsort((hit_ids, -hits[hit_ids]))][:target]
        assert np.array_equal(ids, ref)
        assert np.array_equal(counts, hits[ids])


@pytest.mark.parametrize("target", [0, 5, 50, 400])
def test_vanilla_is_union_subset_without_duplicates(sampler_index, target):
    idx, Q = sampler_index
    for x in Q:
        keys, hits = _numpy_hits(idx, x)
        ids, counts = idx.query(x, mode="vanilla", target=target)
        union = np.flatnonzero(hits)
        assert len(np.unique(ids)) == len(ids)
        assert set(ids.tolist()) <= set(union.tolist())
        assert np.array_equal(counts, hits[ids])
        if target == 0 or target >= len(union):
            assert len(ids) == len(union)
        else:
            assert len(ids) == target
            # table order: the first buckets' ids come first
            first = idx.bucket(0, keys[0])
            assert np.array_equal(ids[:min(len(first), target)], first[:target])


def test_query_max_out_and_counts_scratch_left_clean(sampler_index):
    idx, Q = sampler_index
    a = idx.query(Q[0], mode="threshold", min_hits=1, max_out=7)
    full = idx.query(Q[0], mode="threshold", min_hits=1)
    assert len(a[0]) == min(7, len(full[0]))
    assert np.array_equal(a[0], full[0][:7])
    # query_many uses one counts scratch per thread for all rows: results equal single queries
    indptr, ids, counts = idx.query_many(Q, mode="topk", target=30, n_threads=2)
    by_keys = idx.query_many(None, mode="topk", target=30, keys=idx.hash(Q))
    assert all(np.array_equal(a, b) for a, b in zip((indptr, ids, counts), by_keys))
    for i, x in enumerate(Q):
        r = idx.query(x, mode="topk", target=30)
        assert np.array_equal(ids[indptr[i]:indptr[i + 1]], r[0])
        assert np.array_equal(counts[indptr[i]:indptr[i + 1]], r[1])


def test_time_queries_counts_the_same_ids(sampler_index):
    idx, Q = sampler_index
    keys = idx.hash(Q)
    for mode in ("vanilla", "topk", "threshold"):
        secs, mean_ids = idx.time_queries(keys, mode=mode, target=40, min_hits=2)
        indptr, _, _ = idx.query_many(None, mode=mode, target=40, min_hits=2, keys=keys)
        assert secs > 0
        assert mean_ids == pytest.approx(np.diff(indptr).mean())


def test_query_by_keys_equals_query_by_vector(sampler_index):
    idx, Q = sampler_index
    keys = idx.hash(Q[3])[0]
    a = idx.query(None, mode="threshold", min_hits=2, keys=keys)
    b = idx.query(Q[3], mode="threshold", min_hits=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, msg", [
    (dict(K=0), "K must be >= 1, got 0"),
    (dict(L=0), "L must be in 1..255, got 0"),
    (dict(L=256), "L must be in 1..255"),
    (dict(range_pow=40), "range_pow must be in 1..30"),
    (dict(range_pow=0), "range_pow must be in 1..30"),
    (dict(family="minhash"), "unknown hash family 'minhash'"),
    (dict(dim=0), "dim must be >= 1, got 0"),
    (dict(bucket_size=0), "bucket_size must be >= 1"),
    (dict(insertion="lifo"), "unknown insertion 'lifo'"),
    (dict(K=100, L=50), "K*L must be <= 4096"),
    (dict(K=2.5), "K must be an integer"),
])
def test_bad_configuration_raises_clear_error(kwargs, msg):
    cfg = dict(family="dwta", dim=16, K=4, L=8, range_pow=10, bucket_size=8)
    cfg.update(kwargs)
    with pytest.raises(ValueError) as e:
        LSHIndex(**cfg)
    assert msg in str(e.value)
    if "insertion" not in kwargs and not isinstance(cfg["K"], float):
        with pytest.raises(ValueError):
            LSHIndex.estimate_bytes(10, cfg["dim"], cfg["K"], cfg["L"], cfg["range_pow"], cfg["bucket_size"],
                                    cfg["family"])


def test_range_pow_too_large_for_memory_is_a_memory_error():
    # 255 tables x 2**30 buckets of offsets = 1.1 TB: refused up front with the estimate, no crash
    with pytest.raises(MemoryError, match=r"need about [\d,]+ bytes"):
        LSHIndex("dwta", 16, 4, 255, 30, 8)


def test_empty_insert_and_queries_on_empty_tables():
    idx = LSHIndex("wta", 16, 2, 4, 6, 8)
    x = np.ones(16, np.float32)
    assert len(idx.query(x)[0]) == 0                       # never built
    idx.insert(np.zeros((0, 4), np.int32))
    assert idx.n_items == 0 and len(idx.query(x, mode="topk", target=5)[0]) == 0
    idx.build(np.ones((3, 16), np.float32))
    assert sorted(idx.query(x)[0].tolist()) == [0, 1, 2]   # identical rows share every bucket


def test_bad_inputs_raise_clear_errors():
    idx = LSHIndex("dwta", 16, 4, 8, 10, 8)
    with pytest.raises(ValueError, match="columns, expected dim=16"):
        idx.hash(np.zeros((3, 15), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        idx.hash(np.full(16, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 2\*\*range_pow"):
        idx.insert(np.full((5, 8), 1024, np.int32))
    with pytest.raises(ValueError, match="codes must be"):
        idx.insert(np.zeros((5, 7), np.int32))
    with pytest.raises(ValueError, match="float32"):
        idx.build(np.zeros((5, 16), np.float64))
    with pytest.raises(ValueError, match="unknown query mode"):
        idx.query(np.zeros(16), mode="best")
    with pytest.raises(ValueError, match="min_hits must be in 1..L=8"):
        idx.query(np.zeros(16), mode="threshold", min_hits=9)
    with pytest.raises(ValueError, match="table index l"):
        idx.bucket(8, 0)
    with pytest.raises(ValueError, match="key must be in"):
        idx.bucket(0, 1024)
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        idx.hash(np.zeros(16), n_threads=0)
