# cython: language_level=3
"""LSH tables: FIFO arrival order, bulk insertion (counting sort per table), build (inline nogil kernels; the definitions and the pinned interface are in lsh_kernels.pxd)."""
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
from cython.parallel cimport prange, parallel, threadid

from lsh_kernels cimport *
from lsh_hash cimport *

# ------------------------------------------------------------------------------------- arrival order

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
