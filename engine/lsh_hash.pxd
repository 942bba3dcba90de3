# cython: language_level=3
"""LSH hashing: dense, sparse and strided rows to bucket keys (inline nogil kernels; the definitions and the pinned interface are in lsh_kernels.pxd)."""
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
from cython.parallel cimport prange, parallel, threadid

from lsh_kernels cimport *

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
