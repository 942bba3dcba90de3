# cython: language_level=3
"""LSHIndex: the Python face of the LSH kernels in lsh_kernels.pxd.

Thin ``def`` methods validate and unpack their arguments under the GIL, then call the nogil kernels
(parallel where the kernel is). Used by the tests, by the paper's Table 3 (bulk insertion) and Fig 11
(selection probability under hard thresholding) micro-experiments, and to inspect tables.
See docs/lsh.md for the definitions.
"""
import numpy as np
cimport numpy as cnp
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset
from cython.parallel cimport prange, parallel, threadid
from cpython.pycapsule cimport PyCapsule_New

from lsh_kernels cimport *
from lsh_hash cimport *
from lsh_tables cimport *
from lsh_query cimport *

cnp.import_array()

from slidebench.engine._lsh_config import (  # the configuration rules: engine/_lsh_config.pyx
    FAMILIES, _FAMILY_NAMES, INSERTIONS, _INSERTION_NAMES, QUERY_MODES, MAX_BINS, MAX_TABLES, MAX_RANGE_POW,
    _as_int, check_config, _available_bytes, _check_n_threads)
from slidebench.engine import _lsh_inspect as _inspect


cdef class LSHIndex:
    """L hash tables of 2**range_pow buckets over the rows of a matrix (a layer's neurons).

    LSHIndex(family, dim, K, L, range_pow, bucket_size, insertion="fifo", seed=0)
      family: "simhash" | "wta" | "dwta" | "doph"; insertion: "fifo" | "reservoir".
    """
    cdef LSHTables t
    cdef bint ready

    def __cinit__(self):
        memset(&self.t, 0, sizeof(LSHTables))
        self.ready = False

    def __init__(self, family, dim, K, L, range_pow, bucket_size, insertion="fifo", seed=0):
        fam, ins = check_config(family, dim, K, L, range_pow, bucket_size, insertion)
        seed = _as_int(seed, "seed")
        if seed < 0 or seed >= 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        need = lsh_estimate_bytes(fam, dim, K, L, range_pow, 0, 1)
        avail = _available_bytes()
        if avail is not None and need > avail:
            raise MemoryError(f"LSH tables need about {need:,} bytes (offsets of L*(2**range_pow+1) ints "
                              f"and hash functions) but only {avail:,} are available")
        lsh_free(&self.t)
        rc = lsh_init(&self.t, fam, dim, K, L, range_pow, bucket_size, ins, <unsigned long long>seed)
        if rc == SB_LSH_ENOMEM:
            lsh_free(&self.t)
            raise MemoryError(f"out of memory drawing the hash functions ({need:,} bytes estimated)")
        if rc != 0:
            lsh_free(&self.t)
            raise ValueError(f"LSH configuration refused (code {rc})")
        self.ready = True

    def __dealloc__(self):
        lsh_free(&self.t)

    # ------------------------------------------------------------------ attributes
    @property
    def family(self): return _FAMILY_NAMES[self.t.family]
    @property
    def dim(self): return self.t.dim
    @property
    def K(self): return self.t.K
    @property
    def L(self): return self.t.L
    @property
    def range_pow(self): return self.t.range_pow
    @property
    def n_buckets(self): return 1 << self.t.range_pow
    @property
    def bucket_size(self): return self.t.bucket_size
    @property
    def insertion(self): return _INSERTION_NAMES[self.t.insertion]
    @property
    def seed(self): return int(self.t.seed)
    @property
    def n_items(self):
        """Ids in the tables (0..n_items-1); 0 before the first insert/build or after new_functions."""
        return self.t.n_items
    @property
    def window(self):
        """Coordinates per hash bin (wta/dwta/doph); 0 for simhash."""
        return self.t.window
    @property
    def code_bits(self): return self.t.code_bits
    @property
    def packed(self):
        """True when a key is the plain concatenation of its K codes (K*code_bits <= range_pow)."""
        return bool(self.t.packed)

    @property
    def nbytes(self):
        """Bytes held now: hash functions + bucket offsets + ids."""
        cdef long long nb = self.t.n_params_i * 4 + self.t.n_params_f * 4
        if self.t.offsets != NULL:
            nb += (<long long>self.t.L) * ((1 << self.t.range_pow) + 1) * 4
        if self.t.ids != NULL:
            nb += self.t.ids_cap * 4
        return int(nb)

    @property
    def table_nbytes(self):
        """Bytes of the tables alone (bucket offsets + L * n_items ids; no hash functions)."""
        cdef long nb = 0
        if self.t.offsets != NULL:
            nb += (<long>self.t.L) * ((1L << self.t.range_pow) + 1) * 4
        if self.t.ids != NULL:
            nb += (<long>self.t.L) * self.t.n_items * 4
        return nb

    @property
    def n_builds(self):
        """Builds since the functions were drawn (the build's random stream: reservoir draws, FIFO
        arrival order); settable, to continue a saved stream (network load)."""
        return int(self.t.n_builds)

    @n_builds.setter
    def n_builds(self, value):
        value = _as_int(value, "n_builds")
        if value < 0:
            raise ValueError(f"n_builds must be >= 0, got {value}")
        self.t.n_builds = <unsigned long long>value

    def _capsule(self):
        """The tables as a PyCapsule (name b"slidebench.engine.LSHTables") for the network core
        (engine/_core.pyx), which samples from them in its nogil pass; the capsule does not own them,
        so the core keeps this index alive while it holds the pointer."""
        return PyCapsule_New(<void*>&self.t, b"slidebench.engine.LSHTables", NULL)

    @staticmethod
    def estimate_bytes(n_items, dim, K, L, range_pow, bucket_size, family, n_threads=1):
        """Peak bytes of an index over n_items rows (functions + tables + transient build buffers)."""
        fam, _ = check_config(family, dim, K, L, range_pow, bucket_size)
        n_items = _as_int(n_items, "n_items")
        if n_items < 0:
            raise ValueError(f"n_items must be >= 0, got {n_items}")
        n_threads = _check_n_threads(n_threads)
        return int(lsh_estimate_bytes(fam, dim, K, L, range_pow, n_items, n_threads))

    def __repr__(self):
        return (f"LSHIndex(family={self.family!r}, dim={self.dim}, K={self.K}, L={self.L}, "
                f"range_pow={self.range_pow}, bucket_size={self.bucket_size}, insertion={self.insertion!r}, "
                f"seed={self.seed}, n_items={self.n_items})")

    # ------------------------------------------------------------------ hashing
    def _dense2d(self, X, name):
        try:
            A = np.asarray(X)
        except Exception as exc:
            raise ValueError(f"{name} must be an array of floats: {exc}") from None
        if A.dtype.kind not in "fiub":
            raise ValueError(f"{name} must hold real numbers, got dtype {A.dtype}")
        if A.ndim == 1:
            A = A[None, :]
        if A.ndim != 2:
            raise ValueError(f"{name} must be 1-D or 2-D, got {A.ndim}-D")
        if A.shape[1] != self.t.dim:
            raise ValueError(f"{name} has {A.shape[1]} columns, expected dim={self.t.dim}")
        A = np.ascontiguousarray(A, dtype=np.float32)
        if not np.isfinite(A).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        return A

    def hash(self, X, n_threads=1):
        """Bucket keys of each row of X: int32 [n, L] in [0, 2**range_pow).

        X: dense array [n, dim] or [dim] (converted to float32), or a scipy sparse matrix [n, dim]
        (hashed with the sparse kernel; gives the same keys as the dense form)."""
        n_threads = _check_n_threads(n_threads)
        import scipy.sparse as sp
        if sp.issparse(X):
            return self._hash_csr(X, n_threads)
        A = self._dense2d(X, "X")
        return self._hash_dense_rows(A, n_threads)

    def _hash_dense_rows(self, cnp.ndarray A, int n_threads):
        cdef cnp.ndarray[cnp.int32_t, ndim=2] out = np.empty((A.shape[0], self.t.L), dtype=np.int32)
        cdef const float* W = <const float*>cnp.PyArray_DATA(A)
        cdef long n = A.shape[0], dim = self.t.dim
        cdef int rc
        if n == 0:
            return out
        with nogil:
            rc = lsh_hash_rows(&self.t, W, n, dim, 1, <int*>cnp.PyArray_DATA(out), n_threads)
        self._raise(rc, "hashing")
        return out

    def _hash_csr(self, X, int n_threads):
        import scipy.sparse as sp
        X = sp.csr_matrix(X)
        if X.shape[1] != self.t.dim:
            raise ValueError(f"X has {X.shape[1]} columns, expected dim={self.t.dim}")
        if X.dtype.kind not in "fiub":
            raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()      # sorts the indices too
        data = np.ascontiguousarray(X.data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise ValueError("X holds NaN or infinite values")
        cdef cnp.ndarray[cnp.int32_t, ndim=1] indices = np.ascontiguousarray(X.indices, dtype=np.int32)
        cdef cnp.ndarray[cnp.int64_t, ndim=1] indptr = np.ascontiguousarray(X.indptr, dtype=np.int64)
        cdef cnp.ndarray[cnp.float32_t, ndim=1] vals = data
        cdef long n = X.shape[0], i
        cdef cnp.ndarray[cnp.int32_t, ndim=2] out = np.empty((n, self.t.L), dtype=np.int32)
        cdef int* po = <int*>cnp.PyArray_DATA(out)
        cdef const int* pi = <const int*>cnp.PyArray_DATA(indices)
        cdef const float* pv = <const float*>cnp.PyArray_DATA(vals)
        cdef const long long* pp = <const long long*>cnp.PyArray_DATA(indptr)
        cdef int L = self.t.L
        if n == 0:
            return out
        with nogil, parallel(num_threads=n_threads):
            for i in prange(n, schedule='dynamic', chunksize=32):
                lsh_hash_sparse(&self.t, pi + pp[i], pv + pp[i], <int>(pp[i + 1] - pp[i]), po + i * L)
        return out

    def hash_rows(self, W, n_threads=1):
        """Keys of the rows of a float32 matrix W [n, dim] without copying it: any strides (a transposed
        view such as W0.T of a feature-major [dim, n] matrix is hashed in place). int32 [n, L]."""
        n_threads = _check_n_threads(n_threads)
        cdef cnp.ndarray A = self._strided(W, "W")
        cdef long n = A.shape[0]
        cdef long rs = A.strides[0] // 4, es = A.strides[1] // 4
        cdef cnp.ndarray[cnp.int32_t, ndim=2] out = np.empty((n, self.t.L), dtype=np.int32)
        cdef const float* p = <const float*>cnp.PyArray_DATA(A)
        cdef int rc, nt = n_threads
        if n == 0:
            return out
        with nogil:
            rc = lsh_hash_rows(&self.t, p, n, rs, es, <int*>cnp.PyArray_DATA(out), nt)
        self._raise(rc, "hashing")
        return out

    def _strided(self, W, name):
        if not isinstance(W, np.ndarray):
            raise ValueError(f"{name} must be a numpy float32 array, got {type(W).__name__}")
        if W.ndim != 2:
            raise ValueError(f"{name} must be 2-D [n, dim], got {W.ndim}-D")
        if W.shape[1] != self.t.dim:
            raise ValueError(f"{name} has {W.shape[1]} columns, expected dim={self.t.dim}")
        if W.dtype != np.float32:
            raise ValueError(f"{name} must be float32, got {W.dtype}")
        if W.strides[0] % 4 or W.strides[1] % 4 or W.strides[0] < 0 or W.strides[1] < 0:
            W = np.ascontiguousarray(W)
        if W.shape[0] > 0 and not np.isfinite(W).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        return W

    # ------------------------------------------------------------------ tables
    def insert(self, codes, n_threads=1):
        """Clear the tables and insert ids 0..n-1 with keys codes int [n, L] (bulk, parallel over tables)."""
        n_threads = _check_n_threads(n_threads)
        C = np.asarray(codes)
        if C.ndim != 2 or C.shape[1] != self.t.L:
            raise ValueError(f"codes must be [n, L={self.t.L}], got shape {C.shape}")
        if C.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, got dtype {C.dtype}")
        n = C.shape[0]
        if n * self.t.L >= 2**31:
            raise ValueError(f"too many items: n*L must be < 2**31, got {n}*{self.t.L}")
        if n and (C.min() < 0 or C.max() >= (1 << self.t.range_pow)):
            raise ValueError(f"codes must lie in [0, 2**range_pow={1 << self.t.range_pow}), "
                             f"got range [{C.min()}, {C.max()}]")
        self._preflight(n, n_threads)
        cdef cnp.ndarray Ci = np.ascontiguousarray(C, dtype=np.int32)
        cdef const int* p = <const int*>cnp.PyArray_DATA(Ci)
        cdef int rc, nn = n, nt = n_threads
        with nogil:
            rc = lsh_insert_all(&self.t, p, nn, nt)
        self._raise(rc, "inserting", n, n_threads)

    def build(self, W, n_threads=1):
        """Hash the rows of W [n, dim] float32 (any strides) and insert them as ids 0..n-1 (a 'rehash')."""
        n_threads = _check_n_threads(n_threads)
        cdef cnp.ndarray A = self._strided(W, "W")
        cdef long n = A.shape[0]
        if n * self.t.L >= 2**31:
            raise ValueError(f"too many items: n*L must be < 2**31, got {n}*{self.t.L}")
        self._preflight(n, n_threads)
        cdef long rs = A.strides[0] // 4, es = A.strides[1] // 4
        cdef const float* p = <const float*>cnp.PyArray_DATA(A)
        cdef int rc, nt = n_threads
        with nogil:
            rc = lsh_build(&self.t, p, n, rs, es, nt)
        self._raise(rc, "building", n, n_threads)

    def new_functions(self, seed):
        """Draw new hash functions from `seed` (the paper's 'rebuild'); the tables are emptied."""
        seed = _as_int(seed, "seed")
        if seed < 0 or seed >= 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        rc = lsh_new_functions(&self.t, <unsigned long long>seed)
        self._raise(rc, "drawing hash functions")

    def _preflight(self, n, n_threads):
        fam = self.t.family
        need = lsh_estimate_bytes(fam, self.t.dim, self.t.K, self.t.L, self.t.range_pow, n, n_threads)
        avail = _available_bytes()
        if avail is not None and need - self.nbytes > avail:
            raise MemoryError(f"LSH tables for {n:,} items need about {need:,} bytes but only "
                              f"{avail:,} are available")

    def _raise(self, int rc, what, n=None, n_threads=1):
        if rc == 0:
            return
        if rc == SB_LSH_ENOMEM:
            extra = ""
            if n is not None:
                est = lsh_estimate_bytes(self.t.family, self.t.dim, self.t.K, self.t.L, self.t.range_pow,
                                         n, n_threads)
                extra = f" (about {est:,} bytes needed)"
            raise MemoryError(f"out of memory while {what} the LSH tables{extra}")
        raise ValueError(f"LSH kernel refused {what} (code {rc})")

    # inspection and the query timer live in engine/_lsh_inspect.pyx (functions of an index)
    def fifo_order(self, l):
        """int64 [n_items]: the arrival order of table `l` in the last build (see _lsh_inspect)."""
        return _inspect.fifo_order(self, l)

    def bucket(self, l, key):
        """Ids stored in bucket `key` of table `l` (int32 copy; FIFO: insertion order)."""
        return _inspect.bucket(self, l, key)

    def bucket_sizes(self):
        """int32 [L, 2**range_pow]: ids held by every bucket (zeros before the first build)."""
        return _inspect.bucket_sizes(self)

    def export(self):
        """Copies of the raw tables: (offsets int32 [L, 2**range_pow + 1], ids int32 [L, n_items])."""
        return _inspect.export(self)

    def bucket_stats(self):
        """Summary of the tables: nonempty buckets per table (mean), largest bucket, full buckets, ids stored."""
        return _inspect.bucket_stats(self)

    # ------------------------------------------------------------------ queries
    def _keys_for(self, x):
        import scipy.sparse as sp
        if sp.issparse(x):
            if x.shape[0] != 1:
                raise ValueError(f"query takes one vector; got a sparse matrix with {x.shape[0]} rows")
            return self.hash(x)[0]
        A = np.asarray(x)
        if A.ndim == 2 and A.shape[0] == 1:
            A = A[0]
        if A.ndim != 1:
            raise ValueError(f"query takes one vector [dim]; got shape {A.shape}")
        return self.hash(A)[0]

    def query(self, x, mode="vanilla", target=0, min_hits=1, max_out=None, keys=None):
        """Candidates for one vector x ([dim] dense or a 1-row sparse matrix), or for given `keys` [L].

        mode "vanilla": union of the hit buckets in table order, stopping at `target` distinct ids;
        "topk": the `target` ids hit by most tables; "threshold": ids hit by >= min_hits tables.
        target <= 0: no cap. Returns (ids int32, counts int32): counts[i] = tables whose hit bucket
        holds ids[i]; topk/threshold order: count descending, then id ascending."""
        if mode not in QUERY_MODES:
            raise ValueError(f"unknown query mode {mode!r}; known: {', '.join(QUERY_MODES)}")
        target = _as_int(target, "target")
        min_hits = _as_int(min_hits, "min_hits")
        if mode == "threshold" and (min_hits < 1 or min_hits > self.t.L):
            raise ValueError(f"min_hits must be in 1..L={self.t.L}, got {min_hits}")
        if keys is None:
            if x is None:
                raise ValueError("query needs a vector x or keys")
            k = self._keys_for(x)
        else:
            k = np.asarray(keys)
            if k.shape != (self.t.L,) or k.dtype.kind not in "iu":
                raise ValueError(f"keys must be integers of shape ({self.t.L},), got {k.dtype} {k.shape}")
            if k.min() < 0 or k.max() >= (1 << self.t.range_pow):
                raise ValueError(f"keys must lie in [0, 2**range_pow={1 << self.t.range_pow})")
        cdef long n = self.t.n_items
        if max_out is None:
            max_out = min(n, self.t.L * self.t.bucket_size)
        max_out = _as_int(max_out, "max_out")
        if max_out < 0:
            raise ValueError(f"max_out must be >= 0, got {max_out}")
        if n == 0 or max_out == 0:
            return np.empty(0, np.int32), np.empty(0, np.int32)
        cdef cnp.ndarray kk = np.ascontiguousarray(k, dtype=np.int32)
        cdef cnp.ndarray out = np.empty(max_out, dtype=np.int32)
        cdef cnp.ndarray cnt = np.empty(max_out, dtype=np.int32)
        cdef unsigned char* counts = <unsigned char*>calloc(n, 1)
        if counts == NULL:
            raise MemoryError(f"out of memory for the query scratch ({n} bytes)")
        cdef int rc, md = QUERY_MODES[mode], tg = target, mh = min_hits, mo = max_out
        with nogil:
            rc = lsh_query(&self.t, <const int*>cnp.PyArray_DATA(kk), md, tg, mh, counts,
                           <int*>cnp.PyArray_DATA(out), <int*>cnp.PyArray_DATA(cnt), mo)
        free(counts)
        if rc < 0:
            self._raise(rc, "querying")
        return out[:rc].copy(), cnt[:rc].copy()

    def query_many(self, X, mode="vanilla", target=0, min_hits=1, max_out=None, n_threads=1, keys=None):
        """Batched, parallel query of the rows of X (dense [n, dim] or sparse), or of precomputed
        `keys` int [n, L] (X is then ignored). Returns CSR-like (indptr int64 [n+1], ids int32,
        counts int32); row i's candidates are ids[indptr[i]:indptr[i+1]]."""
        if mode not in QUERY_MODES:
            raise ValueError(f"unknown query mode {mode!r}; known: {', '.join(QUERY_MODES)}")
        n_threads = _check_n_threads(n_threads)
        target = _as_int(target, "target")
        min_hits = _as_int(min_hits, "min_hits")
        if mode == "threshold" and (min_hits < 1 or min_hits > self.t.L):
            raise ValueError(f"min_hits must be in 1..L={self.t.L}, got {min_hits}")
        if keys is None:
            keys = self.hash(X, n_threads=n_threads)
        else:
            keys = np.asarray(keys)
            if keys.ndim != 2 or keys.shape[1] != self.t.L or keys.dtype.kind not in "iu":
                raise ValueError(f"keys must be integers of shape (n, {self.t.L}), got {keys.dtype} {keys.shape}")
            if keys.size and (keys.min() < 0 or keys.max() >= (1 << self.t.range_pow)):
                raise ValueError(f"keys must lie in [0, 2**range_pow={1 << self.t.range_pow})")
        cdef long n = keys.shape[0], ni = self.t.n_items
        if max_out is None:
            max_out = min(ni, self.t.L * self.t.bucket_size)
        max_out = _as_int(max_out, "max_out")
        if max_out < 0:
            raise ValueError(f"max_out must be >= 0, got {max_out}")
        if ni == 0 or max_out == 0 or n == 0:
            return np.zeros(n + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int32)
        cdef int mo = max_out, md = QUERY_MODES[mode], tg = target, mh = min_hits, nt = n_threads
        cdef cnp.ndarray kk = np.ascontiguousarray(keys, dtype=np.int32)
        cdef cnp.ndarray out = np.empty((n, mo), dtype=np.int32)
        cdef cnp.ndarray cnt = np.empty((n, mo), dtype=np.int32)
        cdef cnp.ndarray nres = np.empty(n, dtype=np.int32)
        cdef long qsb = lsh_query_scratch_bytes(&self.t)
        cdef unsigned char* counts = <unsigned char*>calloc(<size_t>nt * ni, 1)
        cdef char* qbuf = <char*>malloc(<size_t>nt * qsb)
        if counts == NULL or qbuf == NULL:
            free(counts); free(qbuf)
            raise MemoryError(f"out of memory for the query scratch ({nt * (ni + qsb)} bytes)")
        cdef int* pk = <int*>cnp.PyArray_DATA(kk)
        cdef int* po = <int*>cnp.PyArray_DATA(out)
        cdef int* pc = <int*>cnp.PyArray_DATA(cnt)
        cdef int* pr = <int*>cnp.PyArray_DATA(nres)
        cdef long i
        cdef int L = self.t.L
        cdef unsigned char* mine = NULL
        cdef char* qmine = NULL
        with nogil, parallel(num_threads=nt):
            mine = counts + <long>threadid() * ni
            qmine = qbuf + <long>threadid() * qsb
            for i in prange(n, schedule='dynamic', chunksize=16):
                pr[i] = lsh_query_buf(&self.t, pk + i * L, md, tg, mh, mine, po + i * mo, pc + i * mo, mo, qmine)
        free(counts)
        free(qbuf)
        if n and nres.min() < 0:
            self._raise(int(nres.min()), "querying")
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(nres, out=indptr[1:])
        sel = np.arange(mo)[None, :] < nres[:, None]
        return indptr, out[sel], cnt[sel]

    def time_queries(self, keys, mode="vanilla", target=0, min_hits=1, max_out=None):
        """Seconds per lsh_query call and mean ids returned over the rows of `keys` (see _lsh_inspect)."""
        return _inspect.time_queries(self, keys, mode, target, min_hits, max_out)
