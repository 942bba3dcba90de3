# cython: language_level=3
"""LSH hash families and tables: nogil kernels shared by the engine's modules.

This file is an *inline* Cython header: every function is ``cdef inline ... noexcept nogil`` so that
``from lsh_kernels cimport *`` compiles the kernels into the cimporting module and no runtime import
is needed (engine/ is not a Cython package path; see setup.py include_path).

PINNED INTERFACE (used by engine/_core.pyx and engine/_lsh.pyx): the function names, argument lists
and semantics below are the contract between the LSH part and the network part of the engine. Add
struct fields and private helpers freely; change a signature only together with every caller.

Return codes: 0 ok; negative = error (SB_LSH_ENOMEM, SB_LSH_EINVAL).
"""
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset

# hash families
cdef enum:
    SB_SIMHASH = 0
    SB_WTA = 1
    SB_DWTA = 2
    SB_DOPH = 3

# insertion policy when a bucket is full
cdef enum:
    SB_FIFO = 0
    SB_RESERVOIR = 1

# query modes (the LSH samplers; `random` and `full` need no tables and live in the network code)
cdef enum:
    SB_Q_VANILLA = 0     # union of the L hit buckets in table order, stop once `target` distinct ids
    SB_Q_TOPK = 1        # the `target` distinct ids hit by the most tables (ties: smaller id first)
    SB_Q_THRESHOLD = 2   # every id hit by at least `min_hits` tables (capped at max_out)

cdef enum:
    SB_LSH_ENOMEM = -1
    SB_LSH_EINVAL = -2


cdef struct LSHTables:
    int family
    int dim            # length of the vectors hashed
    int K              # hashes (bits for simhash) per key
    int L              # tables
    int range_pow      # 2**range_pow buckets per table
    int bucket_size    # max ids per bucket
    int insertion      # SB_FIFO / SB_RESERVOIR
    int n_items        # ids inserted by the last build (0..n_items-1)
    unsigned long long seed
    # --- table storage (compact, CSR-like, rebuilt in bulk) ---
    int* offsets       # [L * (2**range_pow + 1)]: bucket b of table l holds ids[l*n_items + offsets[..b]: ..b+1]
    int* ids           # [L * n_items]
    # --- hash function parameters: owned by the LSH part, layout private ---
    int* params_i
    float* params_f


cdef inline int lsh_init(LSHTables* t, int family, int dim, int K, int L, int range_pow,
                         int bucket_size, int insertion, unsigned long long seed) noexcept nogil:
    """Validate, zero the struct, draw hash functions from `seed`. No tables yet (n_items = 0)."""
    memset(t, 0, sizeof(LSHTables))
    return SB_LSH_EINVAL  # STUB: the LSH part implements this


cdef inline void lsh_free(LSHTables* t) noexcept nogil:
    free(t.offsets); free(t.ids); free(t.params_i); free(t.params_f)
    t.offsets = NULL; t.ids = NULL; t.params_i = NULL; t.params_f = NULL


cdef inline int lsh_new_functions(LSHTables* t, unsigned long long seed) noexcept nogil:
    """Draw new hash functions (the paper's 'rebuild'); tables must be rebuilt afterwards."""
    return SB_LSH_EINVAL  # STUB


cdef inline void lsh_hash_dense(const LSHTables* t, const float* x, int* keys) noexcept nogil:
    """keys[l] = bucket index in [0, 2**range_pow) of dense vector x[0:dim] in table l, l < L."""
    pass  # STUB


cdef inline void lsh_hash_sparse(const LSHTables* t, const int* idx, const float* val, int nnz,
                                 int* keys) noexcept nogil:
    """Same keys as lsh_hash_dense on the densified vector (idx sorted, unique, < dim)."""
    pass  # STUB


cdef inline int lsh_hash_rows(const LSHTables* t, const float* W, long n, long row_stride,
                              long elem_stride, int* codes, int n_threads) noexcept nogil:
    """codes[i*L + l] = key of row i (element j at W[i*row_stride + j*elem_stride]); parallel."""
    return SB_LSH_EINVAL  # STUB


cdef inline int lsh_insert_all(LSHTables* t, const int* codes, int n, int n_threads) noexcept nogil:
    """Clear the tables and insert ids 0..n-1 with their codes (bulk; FIFO keeps the last
    bucket_size ids in insertion order 0..n-1, reservoir a uniform sample of bucket_size ids,
    seeded from t.seed so builds are deterministic). Parallel over tables."""
    return SB_LSH_EINVAL  # STUB


cdef inline int lsh_build(LSHTables* t, const float* W, long n, long row_stride, long elem_stride,
                          int n_threads) noexcept nogil:
    """lsh_hash_rows + lsh_insert_all (the 'rehash': same functions, refreshed contents)."""
    return SB_LSH_EINVAL  # STUB


cdef inline int lsh_query(const LSHTables* t, const int* keys, int mode, int target, int min_hits,
                          unsigned char* counts, int* out, int* out_counts, int max_out) noexcept nogil:
    """Candidates for one vector with bucket keys `keys[0:L]`.

    `counts` is caller-owned per-thread scratch of n_items bytes, all zero on entry and left all zero
    on return. Writes distinct ids to out[0:ret] (ret <= max_out) and returns ret; for SB_Q_TOPK and
    SB_Q_THRESHOLD the ids come out ordered by hit count, highest first. When out_counts is not NULL,
    out_counts[i] = number of tables whose hit bucket holds out[i] (L <= 255).
    """
    return 0  # STUB
