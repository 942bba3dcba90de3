# cython: language_level=3
"""Inspection of an LSHIndex's tables (bucket contents, sizes, raw export, the FIFO arrival order)
and the per-query timer of the sampler kernel (paper Fig 4): functions of an index, read through the
tables capsule LSHIndex._capsule() hands out. For tests, docs/lsh.md's tables and the micro-benchmarks;
the training path never calls them. LSHIndex keeps same-named methods that call these."""
import numpy as np
cimport numpy as cnp
from libc.stdlib cimport malloc, calloc, free
from cpython.pycapsule cimport PyCapsule_GetPointer

from lsh_kernels cimport *
from lsh_hash cimport *
from lsh_tables cimport *
from lsh_query cimport *

from slidebench.engine._lsh_config import QUERY_MODES, _as_int

cnp.import_array()


cdef LSHTables* _tables(index) except NULL:
    return <LSHTables*>PyCapsule_GetPointer(index._capsule(), b"slidebench.engine.LSHTables")


def fifo_order(index, l):
    """int64 [n_items]: the arrival order of table `l` in the last build (FIFO keeps, per bucket,
    the last bucket_size ids to arrive): position p holds id (a*p + c) mod n, seeded per table
    and build, so an overflowing bucket keeps an unbiased choice of its ids."""
    cdef LSHTables* t = _tables(index)
    l = _as_int(l, "l")
    if l < 0 or l >= t.L:
        raise ValueError(f"table index l must be in [0, {t.L}), got {l}")
    cdef unsigned long long a = 1, c = 0
    cdef int n = t.n_items
    if n == 0:
        return np.empty(0, dtype=np.int64)
    lsh_fifo_order(lsh_build_stream(t), l, n, &a, &c)
    return ((np.uint64(a) * np.arange(n, dtype=np.uint64) + np.uint64(c)) % np.uint64(n)).astype(np.int64)


def bucket(index, l, key):
    """Ids stored in bucket `key` of table `l` (int32 copy; FIFO: insertion order)."""
    cdef LSHTables* t = _tables(index)
    l = _as_int(l, "l")
    key = _as_int(key, "key")
    if l < 0 or l >= t.L:
        raise ValueError(f"table index l must be in [0, {t.L}), got {l}")
    if key < 0 or key >= (1 << t.range_pow):
        raise ValueError(f"key must be in [0, {1 << t.range_pow}), got {key}")
    if t.n_items == 0:
        return np.empty(0, dtype=np.int32)
    cdef long nb1 = (1 << t.range_pow) + 1
    cdef int s = t.offsets[l * nb1 + key], e = t.offsets[l * nb1 + key + 1]
    out = np.empty(e - s, dtype=np.int32)
    cdef int[::1] o = out
    cdef int i
    cdef int* ids = t.ids + <long>l * t.n_items
    for i in range(e - s):
        o[i] = ids[s + i]
    return out


def bucket_sizes(index):
    """int32 [L, 2**range_pow]: ids held by every bucket (zeros before the first build)."""
    cdef LSHTables* t = _tables(index)
    cdef long nb = 1 << t.range_pow
    out = np.zeros((t.L, nb), dtype=np.int32)
    if t.n_items == 0:
        return out
    cdef int[:, ::1] o = out
    cdef long l, b
    cdef const int* off
    for l in range(t.L):
        off = t.offsets + l * (nb + 1)
        for b in range(nb):
            o[l, b] = off[b + 1] - off[b]
    return out


def export(index):
    """Copies of the raw tables: (offsets int32 [L, 2**range_pow + 1], ids int32 [L, n_items]); table l's
    bucket b is ids[l, offsets[l, b]:offsets[l, b + 1]], slots past offsets[l, -1] are zero."""
    cdef LSHTables* t = _tables(index)
    cdef long nb1 = (1 << t.range_pow) + 1, n = t.n_items
    off = np.zeros((t.L, nb1), dtype=np.int32)
    ids = np.zeros((t.L, n), dtype=np.int32)
    if n == 0:
        return off, ids
    cdef int[:, ::1] o = off
    cdef int[:, ::1] d = ids
    cdef long l, b
    for l in range(t.L):
        for b in range(nb1):
            o[l, b] = t.offsets[l * nb1 + b]
        for b in range(t.offsets[l * nb1 + nb1 - 1]):   # slots past the last bucket are unused
            d[l, b] = t.ids[l * n + b]
    return off, ids


def bucket_stats(index):
    """Summary of the tables: nonempty buckets per table (mean), largest bucket, full buckets, ids stored."""
    cdef LSHTables* t = _tables(index)
    sizes = bucket_sizes(index)
    return {"n_items": t.n_items, "nonempty_per_table": float((sizes > 0).sum(1).mean()),
            "max_bucket": int(sizes.max()), "full_buckets": int((sizes >= t.bucket_size).sum()),
            "ids_stored": int(sizes.sum()), "mean_nonempty_size": float(sizes[sizes > 0].mean())
            if (sizes > 0).any() else 0.0}


def time_queries(index, keys, mode="vanilla", target=0, min_hits=1, max_out=None):
    """Seconds per lsh_query call (the sampler kernel alone: no hashing, no Python per query),
    over the rows of `keys` int [n, L] run back to back on one thread; also returns the mean
    number of ids returned. For the sampler-cost figure (paper Fig 4)."""
    cdef LSHTables* t = _tables(index)
    if mode not in QUERY_MODES:
        raise ValueError(f"unknown query mode {mode!r}; known: {', '.join(QUERY_MODES)}")
    K = np.asarray(keys)
    if K.ndim != 2 or K.shape[1] != t.L or K.dtype.kind not in "iu":
        raise ValueError(f"keys must be integers of shape (n, {t.L}), got {K.dtype} {K.shape}")
    if K.shape[0] == 0:
        raise ValueError("keys must hold at least one row")
    if K.min() < 0 or K.max() >= (1 << t.range_pow):
        raise ValueError(f"keys must lie in [0, 2**range_pow={1 << t.range_pow})")
    if t.n_items == 0:
        raise ValueError("the tables are empty: insert() or build() first")
    target = _as_int(target, "target")
    min_hits = _as_int(min_hits, "min_hits")
    if max_out is None:
        max_out = min(t.n_items, t.L * t.bucket_size)
    max_out = _as_int(max_out, "max_out")
    if max_out < 1:
        raise ValueError(f"max_out must be >= 1, got {max_out}")
    cdef cnp.ndarray kk = np.ascontiguousarray(K, dtype=np.int32)
    cdef cnp.ndarray out = np.empty(max_out, dtype=np.int32)
    cdef unsigned char* counts = <unsigned char*>calloc(t.n_items, 1)
    cdef char* qbuf = <char*>malloc(<size_t>lsh_query_scratch_bytes(t))
    if counts == NULL or qbuf == NULL:
        free(counts); free(qbuf)
        raise MemoryError(f"out of memory for the query scratch ({t.n_items} bytes)")
    cdef long i, n = K.shape[0], total = 0
    cdef int rc = 0, md = QUERY_MODES[mode], tg = target, mh = min_hits, mo = max_out, L = t.L
    cdef int* pk = <int*>cnp.PyArray_DATA(kk)
    cdef int* po = <int*>cnp.PyArray_DATA(out)
    from time import perf_counter
    t0 = perf_counter()
    with nogil:
        for i in range(n):
            rc = lsh_query_buf(t, pk + i * L, md, tg, mh, counts, po, NULL, mo, qbuf)
            if rc < 0:
                break
            total += rc
    secs = perf_counter() - t0
    free(counts)
    free(qbuf)
    if rc < 0:
        index._raise(rc, "querying")
    return secs / n, total / <double>n
