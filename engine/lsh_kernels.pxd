# cython: language_level=3
"""LSH hash families and tables: nogil kernels shared by the engine's modules.

This file is an *inline* Cython header: every function is ``cdef inline ... noexcept nogil`` so that
``from lsh_kernels cimport *`` compiles the kernels into the cimporting module and no runtime import
is needed (engine/ is not a Cython package path; see setup.py include_path).

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


# ------------------------------------------------------------------------------------- hashing

cdef inline void _sb_densify(const LSHTables* t, int* codes, const unsigned char* empty) noexcept nogil:
    """Empty bins borrow the code of a non-empty bin found by a seeded probe sequence."""
    cdef int b, a, b2, i, found, nonempty = 0, nb = t.n_bins
    cdef unsigned long long ps = _sb_subseed(t.seed, 3)
    for b in range(nb):
        if not empty[b]:
            nonempty += 1
    if nonempty == nb:
        return
    if nonempty == 0:
        for b in range(nb):
            codes[b] = 0
        return
    for b in range(nb):
        if not empty[b]:
            continue
        found = -1
        for a in range(1, SB_DENSIFY_PROBES + 1):
            b2 = <int>_sb_below(_sb_mix64(ps + <unsigned long long>b * 0x9E3779B97F4A7C15ULL + a),
                                <unsigned int>nb)
            if not empty[b2]:
                found = b2
                break
        if found < 0:
            b2 = <int>_sb_below(_sb_mix64(ps + <unsigned long long>b * 0x9E3779B97F4A7C15ULL
                                          + SB_DENSIFY_PROBES + 1), <unsigned int>nb)
            for i in range(nb):
                if not empty[b2]:
                    found = b2
                    break
                b2 += 1
                if b2 == nb:
                    b2 = 0
        codes[b] = codes[found]


cdef inline void _sb_keys(const LSHTables* t, const int* codes, int* keys) noexcept nogil:
    cdef int l, k, K = t.K, cb = t.code_bits
    cdef unsigned long long key, h, ks
    if t.packed:
        for l in range(t.L):
            key = 0
            for k in range(K):
                key |= (<unsigned long long>codes[l * K + k]) << (k * cb)
            keys[l] = <int>key
    else:
        ks = _sb_subseed(t.seed, 4)
        for l in range(t.L):
            h = _sb_mix64(ks ^ <unsigned long long>l)
            for k in range(K):
                h = _sb_mix64(h + (<unsigned long long>codes[l * K + k] + 1) * 0x9E3779B97F4A7C15ULL)
            keys[l] = <int>(h >> (64 - t.range_pow))


cdef inline void _sb_simhash_axpy(const LSHTables* t, int j, float v, float* acc, float* tmp) noexcept nogil:
    cdef const float* row
    cdef int p, nb = t.n_bins
    if t.params_f != NULL:
        row = t.params_f + <long>j * nb
    else:
        _sb_simhash_coord(t, j, tmp)
        row = tmp
    for p in range(nb):
        acc[p] += v * row[p]


cdef inline void lsh_hash_dense(const LSHTables* t, const float* x, int* keys) noexcept nogil:
    """keys[l] = bucket index in [0, 2**range_pow) of dense vector x[0:dim] in table l, l < L."""
    cdef float acc[SB_MAX_BINS]
    cdef float tmp[SB_MAX_BINS]
    cdef int codes[SB_MAX_BINS]
    cdef unsigned char empty[SB_MAX_BINS]
    cdef int j, b, p, w = t.window, nb = t.n_bins, bp, nz, gt
    cdef float v, best
    cdef const int* base
    if t.family == SB_SIMHASH:
        for b in range(nb):
            acc[b] = 0.0
        for j in range(t.dim):
            v = x[j]
            if v != 0:
                _sb_simhash_axpy(t, j, v, acc, tmp)
        for b in range(nb):
            codes[b] = 1 if acc[b] > 0 else 0
    elif t.family == SB_DOPH:
        for b in range(nb):
            base = t.params_i + <long>t.n_perms * t.dim + <long>b * w
            bp = w
            for p in range(w):
                if x[base[p]] > 0:
                    bp = p
                    break
            if bp == w:
                codes[b] = 0
                empty[b] = 1
            else:
                codes[b] = b * w + bp
                empty[b] = 0
        _sb_densify(t, codes, empty)
    else:   # wta / dwta
        for b in range(nb):
            base = t.params_i + <long>t.n_perms * t.dim + <long>b * w
            best = x[base[0]]
            bp = 0
            nz = best != 0
            for p in range(1, w):       # branch-free: the comparisons are data-dependent coin flips
                v = x[base[p]]
                nz = nz | (v != 0)
                gt = v > best
                bp = p if gt else bp
                best = v if gt else best
            codes[b] = bp
            empty[b] = 0 if nz else 1
        if t.family == SB_DWTA:
            _sb_densify(t, codes, empty)
    _sb_keys(t, codes, keys)


cdef inline void lsh_hash_sparse(const LSHTables* t, const int* idx, const float* val, int nnz,
                                 int* keys) noexcept nogil:
    """Same keys as lsh_hash_dense on the densified vector (idx sorted, unique, < dim)."""
    cdef float acc[SB_MAX_BINS]
    cdef float tmp[SB_MAX_BINS]
    cdef int codes[SB_MAX_BINS]
    cdef unsigned char empty[SB_MAX_BINS]
    cdef unsigned char mask[SB_MAX_BINS]
    cdef int i, j, b, p, q, s, w = t.window, nb = t.n_bins, lw, full
    cdef float v
    cdef const int* slot_of = t.params_i
    if t.family == SB_SIMHASH:
        for b in range(nb):
            acc[b] = 0.0
        for i in range(nnz):
            v = val[i]
            if v != 0:
                _sb_simhash_axpy(t, idx[i], v, acc, tmp)
        for b in range(nb):
            codes[b] = 1 if acc[b] > 0 else 0
    elif t.family == SB_DOPH:
        for b in range(nb):
            codes[b] = w
        for i in range(nnz):
            if val[i] > 0:
                j = idx[i]
                for q in range(t.n_perms):
                    s = slot_of[<long>q * t.dim + j]
                    if s >= 0:
                        b = s // w
                        p = s - b * w
                        if p < codes[b]:
                            codes[b] = p
        for b in range(nb):
            if codes[b] == w:
                codes[b] = 0
                empty[b] = 1
            else:
                codes[b] = b * w + codes[b]
                empty[b] = 0
        _sb_densify(t, codes, empty)
    else:   # wta / dwta: acc = best value, codes = its position, mask = positions holding a nonzero
        lw = t.code_bits
        full = (1 << w) - 1
        for b in range(nb):
            mask[b] = 0
            codes[b] = 0
        for i in range(nnz):
            v = val[i]
            if v == 0:
                continue
            j = idx[i]
            for q in range(t.n_perms):
                s = slot_of[<long>q * t.dim + j]
                if s < 0:
                    continue
                b = s >> lw
                p = s & (w - 1)
                if mask[b] == 0 or v > acc[b] or (v == acc[b] and p < codes[b]):
                    acc[b] = v
                    codes[b] = p
                mask[b] |= <unsigned char>(1 << p)
        for b in range(nb):
            if mask[b] == 0:
                codes[b] = 0
                empty[b] = 1
            else:
                empty[b] = 0
                if acc[b] < 0 and mask[b] != full:     # an implicit zero beats every negative value
                    p = 0
                    while (mask[b] >> p) & 1:
                        p += 1
                    codes[b] = p
        if t.family == SB_DWTA:
            _sb_densify(t, codes, empty)
    _sb_keys(t, codes, keys)


cdef inline int lsh_hash_rows(const LSHTables* t, const float* W, long n, long row_stride,
                              long elem_stride, int* codes, int n_threads) noexcept nogil:
    """codes[i*L + l] = key of row i (element j at W[i*row_stride + j*elem_stride]); parallel."""
    cdef long i, blk, nblk, i0, j, r, nrow, tile_rows
    cdef float* scratch = NULL
    cdef float* tile = NULL
    cdef int dim = t.dim, L = t.L
    if t.n_bins == 0:
        return SB_LSH_EINVAL
    if n <= 0:
        return 0
    if n_threads < 1:
        n_threads = 1
    if elem_stride == 1:
        with parallel(num_threads=n_threads):
            for i in prange(n, schedule='dynamic', chunksize=64):
                lsh_hash_dense(t, W + i * row_stride, codes + i * L)
        return 0
    # strided rows (e.g. columns of a row-major matrix): gather tiles of rows so that consecutive rows'
    # elements (adjacent in memory when row_stride == 1) are read together
    tile_rows = (<long>4194304) // dim
    if tile_rows > SB_ROWS_TILE:
        tile_rows = SB_ROWS_TILE
    if tile_rows < 1:
        tile_rows = 1
    scratch = <float*>malloc(<size_t>n_threads * tile_rows * dim * 4)
    if scratch == NULL:
        return SB_LSH_ENOMEM
    nblk = (n + tile_rows - 1) // tile_rows
    with parallel(num_threads=n_threads):
        tile = scratch + <long>threadid() * tile_rows * dim
        for blk in prange(nblk, schedule='dynamic', chunksize=4):
            i0 = blk * tile_rows
            nrow = n - i0
            if nrow > tile_rows:
                nrow = tile_rows
            for j in range(dim):
                for r in range(nrow):
                    tile[r * dim + j] = W[(i0 + r) * row_stride + j * elem_stride]
            for r in range(nrow):
                lsh_hash_dense(t, tile + r * dim, codes + (i0 + r) * L)
    free(scratch)
    return 0


cdef inline unsigned long long _sb_gcd(unsigned long long a, unsigned long long b) noexcept nogil:
    cdef unsigned long long t_
    while b:
        t_ = a % b
        a = b
        b = t_
    return a


cdef inline void lsh_fifo_order(unsigned long long rseed, int l, int n, unsigned long long* a,
                                unsigned long long* c) noexcept nogil:
    """FIFO arrival order of table l in the build with stream `rseed`: position p holds id
    (a*p + c) mod n, with a multiplier a in [n/4, 3n/4] coprime to n (a permutation of 0..n-1)."""
    cdef unsigned long long h = _sb_mix64(rseed ^ (<unsigned long long>(l + 1) * 0xA24BAED4963EE407ULL))
    cdef unsigned long long nn = <unsigned long long>n
    if n <= 2:
        a[0] = 1
        c[0] = 0 if n <= 1 else (h & 1)
        return
    a[0] = nn // 4 + _sb_below(h, <unsigned int>(nn // 2 if nn // 2 > 0 else 1))
    if a[0] == 0:
        a[0] = 1
    while _sb_gcd(a[0], nn) != 1:
        a[0] += 1
        if a[0] >= nn:
            a[0] = 1
    c[0] = _sb_below(_sb_mix64(h + 0x9E3779B97F4A7C15ULL), <unsigned int>n)


cdef inline unsigned long long lsh_build_stream(const LSHTables* t) noexcept nogil:
    """The random stream of the current build (reservoir draws, FIFO arrival order)."""
    return _sb_mix64(_sb_subseed(t.seed, 5) + t.n_builds)


# ------------------------------------------------------------------------------------- tables

cdef inline int _sb_fill_table(LSHTables* t, const int* col, int n, int l, int* cur,
                               unsigned long long rseed) noexcept nogil:
    """Counting-sort table l's ids (keys col[0:n], validated) into its buckets. `cur` is zero on
    entry and left zero."""
    cdef int bs = t.bucket_size, nb = 1 << t.range_pow
    cdef int* off = t.offsets + <long>l * (nb + 1)
    cdef int* ids = t.ids + <long>l * n
    cdef int i, b, k, kb, p
    cdef unsigned int r
    cdef unsigned long long ls, fa = 1, fc = 0
    memset(off, 0, <size_t>(nb + 1) * 4)
    for i in range(n):
        off[col[i] + 1] += 1
    for b in range(nb):       # kept ids per bucket -> offsets
        k = off[b + 1]
        if k > bs:
            k = bs
        off[b + 1] = off[b] + k
    if t.insertion == SB_FIFO:
        # ids arrive in a seeded order per (table, build): position p holds id (a*p + c) mod n, so an
        # overflowing bucket keeps an unbiased choice of ids instead of always the highest ones. Walk
        # the positions backwards so that each bucket keeps its last bucket_size arrivals, stored in
        # arrival order.
        lsh_fifo_order(rseed, l, n, &fa, &fc)
        for p in range(n - 1, -1, -1):
            i = <int>((fa * <unsigned long long>p + fc) % <unsigned long long>n)
            b = col[i]
            k = cur[b]
            kb = off[b + 1] - off[b]
            if k < kb:
                ids[off[b + 1] - 1 - k] = i
                cur[b] = k + 1
    else:
        # reservoir sampling (algorithm R): the (k+1)-th id arriving at a full bucket replaces a
        # uniformly chosen slot with probability bucket_size/(k+1)
        ls = _sb_mix64(rseed + <unsigned long long>l * 0x9E3779B97F4A7C15ULL)
        for i in range(n):
            b = col[i]
            k = cur[b]
            cur[b] = k + 1
            if k < bs:
                ids[off[b] + k] = i
            else:
                r = _sb_below(_sb_mix64(ls + <unsigned long long>i * 0xD1B54A32D192ED03ULL),
                              <unsigned int>(k + 1))
                if r < <unsigned int>bs:
                    ids[off[b] + r] = i
    for i in range(n):        # leave cur zero for the next table
        cur[col[i]] = 0
    return 0


cdef inline int lsh_insert_all(LSHTables* t, const int* codes, int n, int n_threads) noexcept nogil:
    """Clear the tables and insert ids 0..n-1 with their codes (bulk; FIFO keeps the last
    bucket_size arrivals in a seeded arrival order per table and build (lsh_fifo_order), reservoir a uniform sample of bucket_size ids,
    seeded from t.seed so builds are deterministic). Parallel over tables."""
    cdef long nb = (<long>1) << t.range_pow
    cdef long need = <long>t.L * n
    cdef int* scratch
    cdef int* codes_t
    cdef int* cur = NULL
    cdef int l, rc, err = 0, L = t.L, c
    cdef int* perr = &err
    cdef long blk, nblk, i, i0, i1
    cdef unsigned long long rseed
    if t.n_bins == 0 or n < 0:
        return SB_LSH_EINVAL
    if n_threads < 1:
        n_threads = 1
    t.n_items = 0
    if t.offsets == NULL:
        t.offsets = <int*>malloc(<size_t>t.L * (nb + 1) * 4)
        if t.offsets == NULL:
            return SB_LSH_ENOMEM
    if t.ids_cap < need or t.ids == NULL:
        free(t.ids)
        t.ids = <int*>malloc(<size_t>(need if need > 0 else 1) * 4)
        t.ids_cap = need if t.ids != NULL else 0
        if t.ids == NULL:
            return SB_LSH_ENOMEM
    # transposed keys [L, n] (validated on the way), then one counting sort per table, each with a
    # zeroed per-thread cursor array of 2**range_pow ints
    codes_t = <int*>malloc(<size_t>(need if need > 0 else 1) * 4)
    scratch = <int*>calloc(<size_t>n_threads * nb, 4)
    if scratch == NULL or codes_t == NULL:
        free(scratch); free(codes_t)
        return SB_LSH_ENOMEM
    t.n_builds += 1
    rseed = lsh_build_stream(t)
    nblk = (n + 255) // 256
    with parallel(num_threads=n_threads):
        for blk in prange(nblk, schedule='static'):
            i0 = blk * 256
            i1 = i0 + 256
            if i1 > n:
                i1 = n
            for i in range(i0, i1):
                for l in range(L):
                    c = codes[i * L + l]
                    if c < 0 or c >= nb:
                        perr[0] = SB_LSH_EINVAL
                        c = 0
                    codes_t[l * n + i] = c
    if err != 0:
        free(scratch); free(codes_t)
        return err
    with parallel(num_threads=n_threads if n_threads < L else L):
        cur = scratch + <long>threadid() * nb
        for l in prange(L, schedule='dynamic', chunksize=1):
            rc = _sb_fill_table(t, codes_t + <long>l * n, n, l, cur, rseed)
            if rc != 0:
                perr[0] = rc
    free(scratch)
    free(codes_t)
    if err != 0:
        return err
    t.n_items = n
    return 0


cdef inline int lsh_build(LSHTables* t, const float* W, long n, long row_stride, long elem_stride,
                          int n_threads) noexcept nogil:
    """lsh_hash_rows + lsh_insert_all (the 'rehash': same functions, refreshed contents)."""
    cdef int rc
    cdef int* codes
    if t.n_bins == 0 or n < 0 or n > 2147483647 // t.L:
        return SB_LSH_EINVAL
    codes = <int*>malloc(<size_t>(n * t.L if n > 0 else 1) * 4)
    if codes == NULL:
        return SB_LSH_ENOMEM
    rc = lsh_hash_rows(t, W, n, row_stride, elem_stride, codes, n_threads)
    if rc == 0:
        rc = lsh_insert_all(t, codes, <int>n, n_threads)
    free(codes)
    return rc


# ------------------------------------------------------------------------------------- query

cdef inline void _sb_radix_sort(unsigned long long* a, unsigned long long* b, int m, int nbits,
                                unsigned long long** result) noexcept nogil:
    """LSD radix sort of a[0:m] on its low nbits bits (8 bits a pass); result points at a or b."""
    cdef int hist[256]
    cdef int shift, i, d, s, tmp
    cdef unsigned long long* src = a
    cdef unsigned long long* dst = b
    cdef unsigned long long* sw
    shift = 0
    while shift < nbits:
        memset(hist, 0, sizeof(hist))
        for i in range(m):
            hist[(src[i] >> shift) & 255] += 1
        s = 0
        for d in range(256):
            tmp = hist[d]
            hist[d] = s
            s += tmp
        for i in range(m):
            d = <int>((src[i] >> shift) & 255)
            dst[hist[d]] = src[i]
            hist[d] += 1
        sw = src; src = dst; dst = sw
        shift += 8
    result[0] = src


cdef inline long lsh_query_scratch_bytes(const LSHTables* t) noexcept nogil:
    """Bytes of the scratch block a topk/threshold query of these tables needs (lsh_query_buf)."""
    cdef long umax = <long>t.L * t.bucket_size
    if umax > t.n_items:
        umax = t.n_items
    return 20 * (umax if umax > 0 else 1)


cdef inline int lsh_query(const LSHTables* t, const int* keys, int mode, int target, int min_hits,
                          unsigned char* counts, int* out, int* out_counts, int max_out) noexcept nogil:
    """lsh_query_buf with a scratch block allocated for this call (see lsh_query_buf)."""
    return lsh_query_buf(t, keys, mode, target, min_hits, counts, out, out_counts, max_out, NULL)


cdef inline int lsh_query_buf(const LSHTables* t, const int* keys, int mode, int target, int min_hits,
                              unsigned char* counts, int* out, int* out_counts, int max_out,
                              char* scratch) noexcept nogil:
    """Candidates for one vector with bucket keys `keys[0:L]`.

    `counts` is caller-owned per-thread scratch of n_items bytes, all zero on entry and left all zero
    on return. Writes distinct ids to out[0:ret] (ret <= max_out) and returns ret; for SB_Q_TOPK and
    SB_Q_THRESHOLD the ids come out ordered by hit count, highest first. When out_counts is not NULL,
    out_counts[i] = number of tables whose hit bucket holds out[i] (L <= 255).

    target <= 0 means "no cap but max_out" (vanilla, topk). Ties in topk/threshold: smaller id first.
    Returns SB_LSH_EINVAL for an unknown mode, SB_LSH_ENOMEM if the topk/threshold scratch cannot be had.
    `scratch`: NULL (allocate per call) or a caller-owned block of lsh_query_scratch_bytes(t) bytes
    (the network passes one per thread, so a query allocates nothing).
    """
    cdef int L = t.L, n = t.n_items, l, p, s, e, id_, ret = 0, cap, u = 0, m = 0, c, cstar, cum
    cdef int idbits, umax, i, stop = 0
    cdef long nb1 = ((<long>1) << t.range_pow) + 1
    cdef const int* off
    cdef const int* ids
    cdef int* U
    cdef unsigned long long* ka
    cdef unsigned long long* kb
    cdef unsigned long long* sorted_
    cdef unsigned long long mask
    cdef char* buf
    cdef int hist[256]
    if mode != SB_Q_VANILLA and mode != SB_Q_TOPK and mode != SB_Q_THRESHOLD:
        return SB_LSH_EINVAL
    if max_out <= 0 or n == 0 or t.offsets == NULL:
        return 0
    cap = max_out
    if mode != SB_Q_THRESHOLD and target > 0 and target < cap:
        cap = target
    for l in range(L):
        SB_PREFETCH(t.offsets + l * nb1 + keys[l])
    for l in range(L):
        SB_PREFETCH(t.ids + <long>l * n + t.offsets[l * nb1 + keys[l]])
    if mode == SB_Q_VANILLA:
        for l in range(L):
            off = t.offsets + l * nb1
            ids = t.ids + <long>l * n
            s = off[keys[l]]
            e = off[keys[l] + 1]
            for p in range(s, e):
                id_ = ids[p]
                if counts[id_] == 0:
                    if ret == cap:
                        if out_counts == NULL:
                            stop = 1
                            break
                        continue
                    counts[id_] = 1
                    out[ret] = id_
                    ret += 1
                else:
                    counts[id_] += 1
            if stop:
                break
        for i in range(ret):
            if out_counts != NULL:
                out_counts[i] = counts[out[i]]
            counts[out[i]] = 0
        return ret
    # topk / threshold: gather the union with its hit counts, select, sort by (count desc, id asc)
    umax = L * t.bucket_size
    if umax > n:
        umax = n
    if scratch != NULL:     # caller-owned per-thread block of lsh_query_scratch_bytes(t) bytes
        buf = scratch
    else:
        buf = <char*>malloc(<size_t>umax * 20)
        if buf == NULL:
            return SB_LSH_ENOMEM
    ka = <unsigned long long*>buf
    kb = ka + umax
    U = <int*>(kb + umax)
    for l in range(L):
        off = t.offsets + l * nb1
        ids = t.ids + <long>l * n
        s = off[keys[l]]
        e = off[keys[l] + 1]
        for p in range(s, e):
            id_ = ids[p]
            if counts[id_] == 0:
                U[u] = id_
                u += 1
            counts[id_] += 1
    idbits = 1
    while (1 << idbits) < n:
        idbits += 1
    if mode == SB_Q_THRESHOLD:
        cstar = min_hits if min_hits > 1 else 1
    else:
        memset(hist, 0, sizeof(hist))
        for i in range(u):
            hist[counts[U[i]]] += 1
        cstar = 1
        cum = 0
        for c in range(L, 0, -1):
            cum += hist[c]
            if cum >= cap:
                cstar = c
                break
    for i in range(u):
        id_ = U[i]
        c = counts[id_]
        counts[id_] = 0
        if c >= cstar:
            ka[m] = ((<unsigned long long>(255 - c)) << idbits) | <unsigned long long>id_
            m += 1
    _sb_radix_sort(ka, kb, m, idbits + 8, &sorted_)
    ret = m if m < cap else cap
    mask = ((<unsigned long long>1) << idbits) - 1
    for i in range(ret):
        out[i] = <int>(sorted_[i] & mask)
        if out_counts != NULL:
            out_counts[i] = 255 - <int>(sorted_[i] >> idbits)
    if scratch == NULL:
        free(buf)
    return ret
