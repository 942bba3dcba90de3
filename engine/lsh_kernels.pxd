# cython: language_level=3
"""LSH hash families and tables: nogil kernels shared by the engine's modules.

This file is an *inline* Cython header: every function is ``cdef inline ... noexcept nogil`` so that
``from lsh_kernels cimport *`` compiles the kernels into the cimporting module and no runtime import
is needed (engine/ is not a Cython package path; see setup.py include_path).

Split by seam: this file holds the definitions (enums, the LSHTables struct, configuration checks,
init/free, hash-function draws); lsh_hash.pxd the hashing, lsh_tables.pxd the bulk insertion and
builds, lsh_query.pxd the queries. Modules cimport * from all four.

PINNED INTERFACE (used by engine/_core.pyx and engine/_lsh.pyx): the function names, argument lists
and semantics below are the contract between the LSH part and the network part of the engine. Add
struct fields and private helpers freely; change a signature only together with every caller.

Return codes: 0 ok; negative = error (SB_LSH_ENOMEM, SB_LSH_EINVAL).

Definitions (docs/lsh.md has the long form):
- A configuration has n_bins = K*L hash codes per vector; the codes of table l are codes[l*K:(l+1)*K].
- simhash: code = sign bit of a sparse +-1 projection (each coordinate is +1 / -1 / 0 with
  probability 85/256 each), 1 bit per code.
- wta / dwta: each code looks at a window of `window` coordinates (window = largest power of two
  <= min(8, dim)) taken from a seeded permutation of the coordinates (permutations are chained; a
  window never spans two permutations, so its coordinates are distinct); code = position (0..window-1)
  of the largest value, zeros counted as 0, ties to the smaller position; log2(window) bits.
  dwta: a window holding only zeros is *empty* and borrows the code of a non-empty bin found by a
  seeded probe sequence over all K*L bins (32 hashed probes, then a cyclic scan); an all-zero vector
  gets code 0 everywhere.
- doph: densified one-permutation MinHash of the set S = {j : x[j] > 0}; windows of
  max(dim // (K*L), min(dim, 8)) coordinates of chained permutations; code = global slot
  bin*window + (first position in the window whose coordinate is in S), i.e. the MinHash value in
  the concatenated permuted order; empty windows copy the code of a probed bin as in dwta (so two
  vectors' borrowed codes agree only when borrowed from the same bin); ceil(log2(K*L*window)) bits.
- key of table l: the K codes concatenated (code k at bit k*code_bits) when K*code_bits <= range_pow,
  else a 64-bit mix of the K codes folded to its top range_pow bits.
"""
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
from cython.parallel cimport prange, parallel, threadid

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define SB_PREFETCH(p) __builtin_prefetch((const void*)(p), 0, 1)
    #else
    #define SB_PREFETCH(p) ((void)0)
    #endif
    """
    void SB_PREFETCH(const void* p) nogil

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

# limits and constants
cdef enum:
    SB_MAX_BINS = 4096            # K*L at most (per-call hashing scratch lives on the stack)
    SB_MAX_TABLES = 255           # counts are bytes
    SB_MAX_RANGE_POW = 30
    SB_WTA_MAX_WINDOW = 8
    SB_DENSIFY_PROBES = 32
    SB_ROWS_TILE = 16             # rows gathered together by lsh_hash_rows when elem_stride != 1

# lsh_config_error results (which argument is wrong)
cdef enum:
    SB_CFG_OK = 0
    SB_CFG_FAMILY = 1
    SB_CFG_DIM = 2
    SB_CFG_K = 3
    SB_CFG_L = 4
    SB_CFG_RANGE_POW = 5
    SB_CFG_BUCKET_SIZE = 6
    SB_CFG_INSERTION = 7
    SB_CFG_BINS = 8              # K*L > SB_MAX_BINS

# simhash projections are stored as a dense float32 [dim, K*L] matrix when it takes at most this many
# bytes, else regenerated per coordinate from the seed (same values, no memory)
cdef enum:
    SB_SIMHASH_TABLE_MAX_BYTES = 67108864


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
    # --- geometry of the hash functions (set by lsh_new_functions) ---
    int n_bins         # K*L codes per vector
    int window         # coordinates per bin (wta/dwta/doph); 0 for simhash
    int code_bits      # bits per code
    int packed         # 1: key = concatenated codes; 0: key = folded 64-bit mix of the codes
    int n_perms        # chained permutations (wta/dwta/doph)
    int win_per_perm   # windows cut from one permutation
    long ids_cap       # ints allocated at ids
    long long n_params_i
    long long n_params_f
    unsigned long long n_builds   # lsh_insert_all calls since the functions were drawn


# ------------------------------------------------------------------------------------- helpers

cdef inline unsigned long long _sb_mix64(unsigned long long z) noexcept nogil:
    """splitmix64 finaliser: a bijective 64-bit mixer."""
    z = (z ^ (z >> 30)) * <unsigned long long>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <unsigned long long>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline unsigned long long _sb_next(unsigned long long* state) noexcept nogil:
    state[0] += <unsigned long long>0x9E3779B97F4A7C15ULL
    return _sb_mix64(state[0])


cdef inline unsigned int _sb_below(unsigned long long h, unsigned int n) noexcept nogil:
    """Map 64 random bits to [0, n) (multiply-shift on the top 32 bits; bias < n / 2**32)."""
    return <unsigned int>(((h >> 32) * <unsigned long long>n) >> 32)


cdef inline unsigned long long _sb_subseed(unsigned long long seed, unsigned long long purpose) noexcept nogil:
    return _sb_mix64(_sb_mix64(seed ^ (purpose * <unsigned long long>0xD1B54A32D192ED03ULL)) + purpose)


cdef inline int lsh_config_error(int family, int dim, int K, int L, int range_pow, int bucket_size,
                                 int insertion) noexcept nogil:
    """SB_CFG_OK, or the SB_CFG_* code of the first invalid argument."""
    if family < SB_SIMHASH or family > SB_DOPH:
        return SB_CFG_FAMILY
    if dim < 1:
        return SB_CFG_DIM
    if K < 1:
        return SB_CFG_K
    if L < 1 or L > SB_MAX_TABLES:
        return SB_CFG_L
    if range_pow < 1 or range_pow > SB_MAX_RANGE_POW:
        return SB_CFG_RANGE_POW
    if bucket_size < 1:
        return SB_CFG_BUCKET_SIZE
    if insertion != SB_FIFO and insertion != SB_RESERVOIR:
        return SB_CFG_INSERTION
    if <long long>K * L > SB_MAX_BINS:
        return SB_CFG_BINS
    return SB_CFG_OK


cdef inline void _sb_geometry(int family, int dim, int n_bins, int* window, int* code_bits,
                              int* win_per_perm, int* n_perms) noexcept nogil:
    cdef int w = 0, cb = 1, wpp = 0, np_ = 0, lim
    if family == SB_WTA or family == SB_DWTA:
        lim = dim if dim < SB_WTA_MAX_WINDOW else SB_WTA_MAX_WINDOW
        w = 1
        cb = 0
        while w * 2 <= lim:
            w *= 2
            cb += 1
    elif family == SB_DOPH:
        w = dim if dim < SB_WTA_MAX_WINDOW else SB_WTA_MAX_WINDOW
        if dim // n_bins > w:
            w = dim // n_bins
        cb = 0          # codes are global slots bin*w + position (one-permutation MinHash values)
        while (<long long>1 << cb) < <long long>n_bins * w:
            cb += 1
    if family != SB_SIMHASH:
        wpp = dim // w
        np_ = (n_bins + wpp - 1) // wpp
    window[0] = w
    code_bits[0] = cb
    win_per_perm[0] = wpp
    n_perms[0] = np_


cdef inline long long lsh_estimate_bytes(int family, int dim, int K, int L, int range_pow, long n_items,
                                         int n_threads) noexcept nogil:
    """Peak bytes of one LSHTables: functions + tables + the transient codes and per-thread scratch of
    a build with n_threads threads. -1 for an invalid configuration."""
    cdef int w, cb, wpp, np_
    cdef long long nbins = <long long>K * L, total = 0, nb = (<long long>1) << range_pow
    if lsh_config_error(family, dim, K, L, range_pow, 1, SB_FIFO) != 0 or n_items < 0:
        return -1
    if n_threads < 1:
        n_threads = 1
    _sb_geometry(family, dim, <int>nbins, &w, &cb, &wpp, &np_)
    if family == SB_SIMHASH:
        if <long long>dim * nbins * 4 <= SB_SIMHASH_TABLE_MAX_BYTES:
            total += <long long>dim * nbins * 4
    else:
        total += (<long long>np_ * dim + nbins * w) * 4
    total += L * (nb + 1) * 4 + <long long>L * n_items * 4          # offsets + ids
    total += <long long>L * n_items * 4 * 2                           # codes + transposed codes
    total += <long long>n_threads * nb * 4                             # insert cursors
    return total


cdef inline int lsh_init(LSHTables* t, int family, int dim, int K, int L, int range_pow,
                         int bucket_size, int insertion, unsigned long long seed) noexcept nogil:
    """Validate, zero the struct, draw hash functions from `seed`. No tables yet (n_items = 0)."""
    memset(t, 0, sizeof(LSHTables))
    if lsh_config_error(family, dim, K, L, range_pow, bucket_size, insertion) != SB_CFG_OK:
        return SB_LSH_EINVAL
    t.family = family
    t.dim = dim
    t.K = K
    t.L = L
    t.range_pow = range_pow
    t.bucket_size = bucket_size
    t.insertion = insertion
    return lsh_new_functions(t, seed)


cdef inline void lsh_free(LSHTables* t) noexcept nogil:
    free(t.offsets); free(t.ids); free(t.params_i); free(t.params_f)
    t.offsets = NULL; t.ids = NULL; t.params_i = NULL; t.params_f = NULL
    t.ids_cap = 0; t.n_items = 0; t.n_params_i = 0; t.n_params_f = 0


cdef inline void _sb_simhash_coord(const LSHTables* t, int j, float* out) noexcept nogil:
    """The K*L projection entries of coordinate j: +1, -1 or 0 with probability 85/256 each."""
    cdef unsigned long long base = _sb_mix64(_sb_subseed(t.seed, 1) ^ <unsigned long long>j)
    cdef unsigned long long word = 0
    cdef unsigned int byte
    cdef int p
    for p in range(t.n_bins):
        if (p & 7) == 0:
            word = _sb_mix64(base + <unsigned long long>(p >> 3) + 1)
        byte = <unsigned int>((word >> (8 * (p & 7))) & 255)
        if byte < 85:
            out[p] = 1.0
        elif byte < 170:
            out[p] = -1.0
        else:
            out[p] = 0.0


cdef inline int lsh_new_functions(LSHTables* t, unsigned long long seed) noexcept nogil:
    """Draw new hash functions (the paper's 'rebuild'); tables must be rebuilt afterwards."""
    cdef int w, cb, wpp, np_, q, pos, c, win, slot, j
    cdef long long nbins
    cdef int* perm
    cdef int* slot_of
    cdef int* coord_of
    cdef unsigned long long st
    cdef unsigned int r
    if lsh_config_error(t.family, t.dim, t.K, t.L, t.range_pow, t.bucket_size, t.insertion) != SB_CFG_OK:
        return SB_LSH_EINVAL
    free(t.params_i); free(t.params_f)
    t.params_i = NULL; t.params_f = NULL; t.n_params_i = 0; t.n_params_f = 0
    t.seed = seed
    t.n_items = 0           # the tables no longer match the functions
    t.n_builds = 0
    nbins = <long long>t.K * t.L
    t.n_bins = <int>nbins
    _sb_geometry(t.family, t.dim, t.n_bins, &w, &cb, &wpp, &np_)
    t.window = w
    t.code_bits = cb
    t.win_per_perm = wpp
    t.n_perms = np_
    t.packed = 1 if <long long>t.K * cb <= t.range_pow else 0
    if t.family == SB_SIMHASH:
        if <long long>t.dim * nbins * 4 <= SB_SIMHASH_TABLE_MAX_BYTES:
            t.params_f = <float*>malloc(<size_t>t.dim * nbins * 4)
            if t.params_f == NULL:
                return SB_LSH_ENOMEM
            t.n_params_f = <long long>t.dim * nbins
            for j in range(t.dim):
                _sb_simhash_coord(t, j, t.params_f + <long>j * nbins)
        return 0
    # window families: slot_of[q*dim + coord] (slot = bin*window + position, or -1), coord_of[slot]
    t.n_params_i = <long long>np_ * t.dim + nbins * w
    t.params_i = <int*>malloc(<size_t>t.n_params_i * 4)
    perm = <int*>malloc(<size_t>t.dim * 4)
    if t.params_i == NULL or perm == NULL:
        free(perm); free(t.params_i); t.params_i = NULL; t.n_params_i = 0
        return SB_LSH_ENOMEM
    slot_of = t.params_i
    coord_of = t.params_i + <long>np_ * t.dim
    st = _sb_subseed(seed, 2)
    for q in range(np_):
        for pos in range(t.dim):
            perm[pos] = pos
        for pos in range(t.dim - 1, 0, -1):        # Fisher-Yates
            r = _sb_below(_sb_next(&st), <unsigned int>(pos + 1))
            c = perm[pos]; perm[pos] = perm[r]; perm[r] = c
        for pos in range(t.dim):
            c = perm[pos]
            win = q * wpp + pos // w
            if pos < wpp * w and win < t.n_bins:
                slot = win * w + pos % w
                slot_of[<long>q * t.dim + c] = slot
                coord_of[slot] = c
            else:
                slot_of[<long>q * t.dim + c] = -1
    free(perm)
    return 0
