# cython: language_level=3
"""LSH queries: vanilla / topk / threshold candidates of one vector (inline nogil kernels; the definitions and the pinned interface are in lsh_kernels.pxd)."""
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
from cython.parallel cimport prange, parallel, threadid

from lsh_kernels cimport *

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
