# cython: language_level=3
"""The compiled SLIDE network: forward, backward, Adam/SGD, samplers, predict.

Memory layout (rows of C-contiguous float32; row r of layer l at net.W[l] + r * net.rs[l]):
  * layer 0 (input -> first layer) is feature-major: row f holds W0[f, :] (n_out floats), so a sparse
    input row touches len(x) rows;
  * layers l >= 1 are neuron-major: row j holds the fan-in of neuron j, so an active neuron is one row;
  * Adam moments: row r at net.M[l] / net.V[l] + r * net.rsm[l]. Default layout "wmv,soa": layer 0
    interleaves weight, m, v per row ([rows][3][fan], rs = rsm = 3 * fan) so a touched feature is one
    contiguous block; later layers keep three separate arrays (rs = rsm = fan). See _alloc_rows.

A training step has two phases:
  1. per-sample pass, ``prange`` over the batch (one sample per iteration, HOGWILD-free because the
     weights are only read): choose active sets, forward, softmax cross-entropy over the active
     output neurons, backward to per-sample deltas (stored per sample);
  2. update pass, ``prange`` over the touched rows of every layer: each row's gradient is the sum
     over the samples that touched it (in ascending sample order) of delta * input activation, then
     one Adam (or SGD) step on the row and its bias.
No two threads ever write the same memory, and every sum has a fixed order, so the result is
bitwise identical for a given seed at ANY thread count (stronger than HOGWILD; see docs/engine.md).

Per-sample randomness (the `random` sampler and the padding up to min_active) comes from a
splitmix64 stream seeded by (engine seed, global sample index), not from thread-local state, for the
same reason.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
from libc.math cimport expf, logf, sqrtf, isnan, acosf, powf
from libc.stdint cimport uint64_t

import time

import numpy as np

from lsh_kernels cimport *

cdef extern from "kernels.h":
    const char* sb_kernels_dispatch()
    float sb_dot(const float* a, const float* b, int n) noexcept nogil
    void sb_dot_multi(const float* w, float bias, const float* H, long ldh, int nb, int n,
                      float* out) noexcept nogil
    float sb_dot_gather(const float* w, const int* idx, const float* val, int n) noexcept nogil
    void sb_axpy(float a, const float* x, float* y, int n) noexcept nogil
    void sb_axpy_scatter(float a, const float* x, const int* idx, float* y, int n) noexcept nogil
    void sb_adam_row(float* w, float* m, float* v, const float* g, int n, float b1, float b2,
                     float lr_t, float eps_t) noexcept nogil
    void sb_sgd_row(float* w, const float* g, int n, float lr) noexcept nogil
    void sb_adam_row_scaled(float* w, float* m, float* v, float a, const float* x, int n, float b1,
                            float b2, float lr_t, float eps_t) noexcept nogil
    void sb_sgd_row_scaled(float* w, float a, const float* x, int n, float lr) noexcept nogil
    void sb_triad(float* a, const float* b, const float* c, float s, long lo, long hi) noexcept nogil
    void sb_prefetch_row(const float* p, int n) noexcept nogil
    void sb_prefetch_row_w(const float* p, int n) noexcept nogil
    uint64_t sb_splitmix(uint64_t* s) noexcept nogil
    int sb_randint(uint64_t* s, int n) noexcept nogil

cdef enum:
    MAXL = 8
    SAMP_FULL = 0
    SAMP_LSH = 1
    SAMP_RANDOM = 2
    OPT_ADAM = 0
    OPT_SGD = 1
    MAX_TABLES = 255
    KEYS_STRIDE = 272         # ints per thread for hash keys (>= MAX_TABLES, a multiple of 64 bytes)
    PF_AHEAD = 4              # rows prefetched ahead in gathers of weight rows
    PF_UPD = 2                # touched rows prefetched ahead in the update pass
    LAYOUT_SOA = 0            # W, m, v three arrays of rows
    LAYOUT_MV = 1             # W rows; m and v of a row interleaved [rows][2][fan]
    LAYOUT_WMV = 2            # weight, m, v of a row interleaved [rows][3][fan]
    PB = 16                   # samples per block in the exact predict's output pass
    PBS = 32                  # per-thread stride of the block buffers (PB + a line of padding)

SAMPLERS = {"full": SAMP_FULL, "lsh": SAMP_LSH, "random": SAMP_RANDOM}
FAMILIES = {"simhash": SB_SIMHASH, "wta": SB_WTA, "dwta": SB_DWTA, "doph": SB_DOPH}
QUERY_MODES = {"vanilla": SB_Q_VANILLA, "topk": SB_Q_TOPK, "threshold": SB_Q_THRESHOLD}
INSERTIONS = {"fifo": SB_FIFO, "reservoir": SB_RESERVOIR}
LAYOUTS = {"soa": LAYOUT_SOA, "mv": LAYOUT_MV, "wmv": LAYOUT_WMV}


def kernels_dispatch() -> str:
    """How the hot kernels were compiled (target_clones dispatch or a single native version)."""
    return sb_kernels_dispatch().decode()


cdef long _pad(long n):
    """Round an element count up to a multiple of 64 and add 64 (per-thread / per-sample strides:
    64-byte multiples for 1- and 4-byte elements, with at least a line of padding)."""
    return ((n + 63) // 64) * 64 + 64


def _aligned_zeros(long n, dtype):
    """Zeroed 1-d array whose data starts on a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    buf = np.zeros(n + 64 // itemsize + 1, dtype)
    off = ((-buf.ctypes.data) % 64) // itemsize
    return buf[off:off + n]


cdef struct Net:
    int n_layers
    int sizes[MAXL + 1]        # sizes[0] = n_features; layer l maps sizes[l] -> sizes[l+1]
    float* W[MAXL]
    long rs[MAXL]              # floats between consecutive rows of W[l] (row length, or 3x when interleaved)
    float* M[MAXL]             # Adam first moment of row 0 (NULL for SGD); row r at M + r * rsm
    float* V[MAXL]             # Adam second moment of row 0
    long rsm[MAXL]             # floats between consecutive rows of M[l] / V[l]
    float* b[MAXL]
    int samp[MAXL]             # SAMP_* per layer
    int target[MAXL]           # sampler target per sample
    int min_active[MAXL]       # pad with random neurons up to this many
    int lsh_cap[MAXL]          # LSH candidates kept per sample (lsh sampler), at most
    int rand_block[MAXL]       # guaranteed block of uniformly random neurons per sample
    int correct                # 1: log-inclusion-probability correction of the output softmax
    LSHTables* tab[MAXL]
    int qmode
    int min_hits
    uint64_t seed


cdef struct Work:
    int b
    int training
    int exact                  # predict "exact": every layer full
    int per_thread             # buffers indexed by thread (predict) instead of by sample (train)
    int min_pad                # extra lower bound on the output active set (predict: k)
    long long sample_base      # global index of sample 0 (RNG stream)
    uint64_t stream
    const int* xptr
    const int* xind
    const float* xval
    const int* yptr
    const int* yind
    int stride[MAXL]           # floats per slot in act/dlt (size if full, else capacity)
    int full[MAXL]             # effective: layer computed in full
    int* nact[MAXL]            # [slots] active count
    int* ids[MAXL]             # [slots * stride] active ids (sampled layers only)
    float* act[MAXL]           # [slots * stride] activations (ReLU output; logits for the output)
    float* dlt[MAXL]           # [slots * stride] d loss / d pre-activation
    float* loss                # [b]
    int* n_cand                # [b] candidates the LSH query returned for the output layer
    long maxn
    unsigned char* counts      # [nt * maxn] lsh_query scratch (zero between uses)
    unsigned char* marks       # [nt * maxn] membership marks (zero between uses)
    float* dense               # [nt * maxn] densified layer input for hashing (zero between uses)
    int* keys                  # [nt * MAX_TABLES]
    int k
    int* topi                  # [b * k]
    int err                    # first nonzero error code seen by any thread
    int hidden_only            # predict exact: stop before the output layer, copy last hidden to H
    float* H                   # [b * sizes[L-1]]
    float* topv                # [b * k]
    int* n_lab                 # [b] output layer: distinct labels in the active set
    int* n_lsh                 # [b] output layer: LSH candidates kept (labels excluded)
    int* n_rand                # [b] output layer: uniformly random neurons (block + padding)
    float* logq                # [slots * stride[L-1]] output layer: log inclusion probability
    char* qbuf                 # [nt * qbuf_stride] per-thread lsh_query scratch (topk/threshold)
    long qbuf_stride
    int* hits                  # [nt * hits_stride] per-thread hit counts of the LSH candidates
    long hits_stride


cdef inline uint64_t seed_for(uint64_t a, long long b) noexcept nogil:
    cdef uint64_t s = a ^ (<uint64_t>b * 0xD1B54A32D192ED03ULL)
    sb_splitmix(&s)
    return s


cdef inline void topk_push(float v, int j, float* tv, int* ti, int* cnt, int k) noexcept nogil:
    """Keep the k best (value desc, id asc) in tv/ti sorted best first."""
    cdef int n = cnt[0], p
    if isnan(v):
        return
    if n == k:
        if v < tv[k - 1] or (v == tv[k - 1] and j > ti[k - 1]):
            return
        p = k - 1
    else:
        p = n
        cnt[0] = n + 1
    while p > 0 and (tv[p - 1] < v or (tv[p - 1] == v and ti[p - 1] > j)):
        tv[p] = tv[p - 1]
        ti[p] = ti[p - 1]
        p -= 1
    tv[p] = v
    ti[p] = j


cdef int sample_pass(Net* net, Work* wk, int s, int tid) noexcept nogil:
    """Active sets, forward, loss and backward for sample s (training) or top-k (predict)."""
    cdef int L = net.n_layers, l, i, j, q, n, ny, nc, m, n_in, n_out, slot, pslot, kk
    cdef int x0 = wk.xptr[s], x1 = wk.xptr[s + 1], nx = x1 - x0
    cdef const int* xi = wk.xind + x0
    cdef const float* xv = wk.xval + x0
    cdef unsigned char* marks = wk.marks + tid * wk.maxn
    cdef unsigned char* counts = wk.counts + tid * wk.maxn
    cdef float* dense = wk.dense + tid * wk.maxn
    cdef int* keys = wk.keys + tid * KEYS_STRIDE
    cdef uint64_t rng = seed_for(net.seed ^ wk.stream, wk.sample_base + s)
    cdef int* ids_s
    cdef int* pids
    cdef float* out
    cdef float* pin
    cdef float* d
    cdef float* dp
    cdef float* W
    cdef float* bb
    cdef float z, mx, ssum, inv_b, zy, w
    cdef long rs
    cdef int pn, is_out, tgt, ll, n_lsh = 0, m0 = 0, want_hits
    cdef int* hc = NULL
    cdef float* lq = NULL
    slot = tid if wk.per_thread else s
    ny = 0
    if wk.hidden_only:
        L = L - 1
    for l in range(L):
        n_in = net.sizes[l]
        n_out = net.sizes[l + 1]
        is_out = l == net.n_layers - 1
        W = net.W[l]
        rs = net.rs[l]
        bb = net.b[l]
        out = wk.act[l] + <long>slot * wk.stride[l]
        want_hits = 0
        if is_out and wk.training and net.correct and wk.logq != NULL and not wk.full[l]:
            lq = wk.logq + <long>slot * wk.stride[l]
            want_hits = net.samp[l] == SAMP_LSH and wk.hits != NULL
        # ---------------------------------------------------------------- active set
        if wk.full[l]:
            n = n_out
            ids_s = NULL
            if is_out and wk.training:   # count distinct labels
                for q in range(wk.yptr[s], wk.yptr[s + 1]):
                    j = wk.yind[q]
                    if not marks[j]:
                        marks[j] = 1
                        ny += 1
                for q in range(wk.yptr[s], wk.yptr[s + 1]):
                    marks[wk.yind[q]] = 0
            if is_out and wk.n_lab != NULL:
                wk.n_lab[s] = ny
                wk.n_lsh[s] = 0
                wk.n_rand[s] = 0
        else:
            ids_s = wk.ids[l] + <long>slot * wk.stride[l]
            n = 0
            if is_out and wk.training:   # the true labels first, always active
                for q in range(wk.yptr[s], wk.yptr[s + 1]):
                    j = wk.yind[q]
                    if not marks[j]:
                        marks[j] = 1
                        ids_s[n] = j
                        n += 1
                ny = n
            if net.samp[l] == SAMP_LSH:
                if l == 0:
                    lsh_hash_sparse(net.tab[l], xi, xv, nx, keys)
                elif wk.full[l - 1]:
                    lsh_hash_dense(net.tab[l], wk.act[l - 1] + <long>slot * wk.stride[l - 1], keys)
                else:
                    pids = wk.ids[l - 1] + <long>slot * wk.stride[l - 1]
                    pin = wk.act[l - 1] + <long>slot * wk.stride[l - 1]
                    pn = wk.nact[l - 1][slot]
                    for i in range(pn):
                        dense[pids[i]] = pin[i]
                    lsh_hash_dense(net.tab[l], dense, keys)
                    for i in range(pn):
                        dense[pids[i]] = 0.0
                hc = NULL
                if want_hits:
                    hc = wk.hits + <long>tid * wk.hits_stride
                nc = lsh_query_buf(net.tab[l], keys, net.qmode, net.lsh_cap[l], net.min_hits, counts,
                                   ids_s + n, hc, net.lsh_cap[l],
                                   wk.qbuf + <long>tid * wk.qbuf_stride if wk.qbuf != NULL else NULL)
                if nc < 0:
                    return nc
                if is_out and wk.n_cand != NULL:
                    wk.n_cand[s] = nc
                m = n
                for i in range(nc):      # compact in place, skipping labels already present
                    j = ids_s[m + i]
                    if j < 0 or j >= n_out:   # a corrupt table must not become a wild read
                        return -3
                    if not marks[j]:
                        marks[j] = 1
                        ids_s[n] = j
                        if want_hits:    # hit count beside the id, for the inclusion probability
                            lq[n] = hc[i]
                        n += 1
            n_lsh = n - ny
            m0 = n
            tgt = net.rand_block[l]      # the guaranteed block of uniformly random neurons
            if tgt > n_out - n:
                tgt = n_out - n
            m = n + tgt
            while n < m:
                j = sb_randint(&rng, n_out)
                if not marks[j]:
                    marks[j] = 1
                    ids_s[n] = j
                    n += 1
            m = net.min_active[l]
            if is_out and wk.min_pad > m:
                m = wk.min_pad
            if m > n_out:
                m = n_out
            while n < m:                 # pad with uniformly random neurons
                j = sb_randint(&rng, n_out)
                if not marks[j]:
                    marks[j] = 1
                    ids_s[n] = j
                    n += 1
            for i in range(n):
                marks[ids_s[i]] = 0
            if is_out and wk.n_lab != NULL:
                wk.n_lab[s] = ny
                wk.n_lsh[s] = n_lsh
                wk.n_rand[s] = n - m0
        wk.nact[l][slot] = n
        # ---------------------------------------------------------------- forward
        if l == 0:
            if ids_s == NULL:
                memcpy(out, bb, n_out * sizeof(float))
                for q in range(nx):
                    if q + PF_AHEAD < nx:
                        sb_prefetch_row(W + <long>xi[q + PF_AHEAD] * rs, n_out)
                    sb_axpy(xv[q], W + <long>xi[q] * rs, out, n_out)
            else:
                for i in range(n):
                    j = ids_s[i]
                    z = bb[j]
                    for q in range(nx):
                        z = z + xv[q] * W[<long>xi[q] * rs + j]
                    out[i] = z
        else:
            pslot = slot
            pin = wk.act[l - 1] + <long>pslot * wk.stride[l - 1]
            if wk.full[l - 1]:
                if ids_s == NULL:
                    for j in range(n_out):
                        out[j] = bb[j] + sb_dot(W + <long>j * rs, pin, n_in)
                else:
                    for i in range(n):
                        if i + PF_AHEAD < n:
                            sb_prefetch_row(W + <long>ids_s[i + PF_AHEAD] * rs, n_in)
                        j = ids_s[i]
                        out[i] = bb[j] + sb_dot(W + <long>j * rs, pin, n_in)
            else:
                pids = wk.ids[l - 1] + <long>pslot * wk.stride[l - 1]
                pn = wk.nact[l - 1][pslot]
                for i in range(n):
                    j = ids_s[i] if ids_s != NULL else i
                    out[i] = bb[j] + sb_dot_gather(W + <long>j * rs, pids, pin, pn)
        if not is_out:
            for i in range(n):
                if not (out[i] > 0.0):
                    out[i] = 0.0
    if wk.hidden_only:
        memcpy(wk.H + <long>s * net.sizes[L], wk.act[L - 1] + <long>slot * wk.stride[L - 1],
               net.sizes[L] * sizeof(float))
        return 0
    # -------------------------------------------------------------------- predict: top-k
    l = L - 1
    out = wk.act[l] + <long>slot * wk.stride[l]
    n = wk.nact[l][slot]
    if not wk.training:
        kk = 0
        ids_s = NULL if wk.full[l] else wk.ids[l] + <long>slot * wk.stride[l]
        for i in range(n):
            topk_push(out[i], i if ids_s == NULL else ids_s[i], wk.topv + <long>s * wk.k,
                      wk.topi + <long>s * wk.k, &kk, wk.k)
        for i in range(kk, wk.k):
            wk.topi[<long>s * wk.k + i] = -1
        return 0
    # -------------------------------------------------------------------- loss and output delta
    inv_b = 1.0 / wk.b
    d = wk.dlt[l] + <long>slot * wk.stride[l]
    if ny == 0:
        wk.loss[s] = 0.0
        for ll in range(L):
            memset(wk.dlt[ll] + <long>slot * wk.stride[ll], 0, wk.nact[ll][slot] * sizeof(float))
        return 0
    if lq != NULL:                   # corrected logits z_i - log q_i (labels: q = 1)
        pin = wk.act[l - 1] + <long>slot * wk.stride[l - 1]
        log_inclusion(net, l, wk.ids[l] + <long>slot * wk.stride[l], out, pin, wk.full[l - 1], ny,
                      wk.n_lsh[s], wk.n_rand[s], n, lq)
        for i in range(n):
            out[i] = out[i] - lq[i]
    mx = out[0]
    for i in range(1, n):
        if out[i] > mx:
            mx = out[i]
    ssum = 0.0
    for i in range(n):
        d[i] = expf(out[i] - mx)
        ssum = ssum + d[i]
    for i in range(n):
        d[i] = d[i] / ssum * inv_b
    zy = 0.0
    if wk.full[l]:
        for q in range(wk.yptr[s], wk.yptr[s + 1]):
            j = wk.yind[q]
            if not marks[j]:
                marks[j] = 1
                d[j] = d[j] - inv_b / ny
                zy = zy + out[j]
        for q in range(wk.yptr[s], wk.yptr[s + 1]):
            marks[wk.yind[q]] = 0
    else:
        for i in range(ny):
            d[i] = d[i] - inv_b / ny
            zy = zy + out[i]
    wk.loss[s] = logf(ssum) + mx - zy / ny
    if lq != NULL:                   # restore the logits (labels have lq = 0, so zy is unchanged)
        for i in range(n):
            out[i] = out[i] + lq[i]
    # -------------------------------------------------------------------- backward to layer 0
    for l in range(L - 1, 0, -1):
        n_in = net.sizes[l]
        W = net.W[l]
        rs = net.rs[l]
        d = wk.dlt[l] + <long>slot * wk.stride[l]
        n = wk.nact[l][slot]
        ids_s = NULL if wk.full[l] else wk.ids[l] + <long>slot * wk.stride[l]
        dp = wk.dlt[l - 1] + <long>slot * wk.stride[l - 1]
        pin = wk.act[l - 1] + <long>slot * wk.stride[l - 1]
        pn = wk.nact[l - 1][slot]
        memset(dp, 0, pn * sizeof(float))
        if wk.full[l - 1]:
            for i in range(n):
                j = i if ids_s == NULL else ids_s[i]
                sb_axpy(d[i], W + <long>j * rs, dp, n_in)
        else:
            pids = wk.ids[l - 1] + <long>slot * wk.stride[l - 1]
            for i in range(n):
                j = i if ids_s == NULL else ids_s[i]
                w = d[i]
                for q in range(pn):
                    dp[q] = dp[q] + w * W[<long>j * rs + pids[q]]
        for q in range(pn):
            if not (pin[q] > 0.0):
                dp[q] = 0.0
    return 0


cdef void log_inclusion(const Net* net, int l, const int* ids, const float* z, const float* h, int h_full,
                       int ny, int n_lsh, int n_rand, int n, float* lq) noexcept nogil:
    """log of each active output neuron's inclusion probability q (docs/engine.md, sampling correction).
    Labels (positions < ny): q = 1. Others: q = q_lsh + (1 - q_lsh) * q_rand, where q_rand =
    n_rand / (n_out - (ny + n_lsh)) is exact for the uniform part (block + padding, drawn without
    replacement from the neurons not yet active) and q_lsh = 1 - (1 - P)^L with P the per-table
    collision probability: SimHash (1 - angle(h, w_j)/pi)^K; DOPH J(h+, w_j+)^K (Jaccard of the
    positive supports); WTA/DWTA (and DOPH behind a sampled layer) the observed hit fraction c_j/L of
    the L tables (lq holds c_j on entry for the LSH positions; 0 for the uniform part). q is kept in
    [1/n_out, 1]. z: the logits (z_j = b_j + w_j.h); h: the layer input (dense when h_full)."""
    cdef int n_out = net.sizes[l + 1], n_in = net.sizes[l], i, j, q, fam = -1, K = 1, L = 1, inter, uni
    cdef const LSHTables* t = net.tab[l]
    cdef const float* w
    cdef float qr = 0.0, ql, pc, P, hn = 0.0, wn, c, floor_ = 1.0 / n_out
    if n_out > ny + n_lsh:
        qr = <float>n_rand / <float>(n_out - ny - n_lsh)
    if net.samp[l] == SAMP_LSH:
        fam = t.family
        K = t.K
        L = t.L
        if (fam == SB_SIMHASH or fam == SB_DOPH) and not h_full:
            fam = SB_DWTA                # no dense input at hand: use the observed hit fraction
    if fam == SB_SIMHASH:
        hn = sqrtf(sb_dot(h, h, n_in))
    for i in range(n):
        if i < ny:
            lq[i] = 0.0
            continue
        ql = 0.0
        j = ids[i]
        if fam == SB_SIMHASH:
            w = net.W[l] + <long>j * net.rs[l]
            wn = sqrtf(sb_dot(w, w, n_in))
            pc = 0.5
            if hn > 0.0 and wn > 0.0:
                c = (z[i] - net.b[l][j]) / (hn * wn)
                if c > 1.0:
                    c = 1.0
                if c < -1.0:
                    c = -1.0
                pc = 1.0 - acosf(c) / <float>3.141592653589793
            P = powf(pc, <float>K)
            ql = 1.0 - powf(1.0 - P, <float>L)
        elif fam == SB_DOPH:
            w = net.W[l] + <long>j * net.rs[l]
            inter = 0
            uni = 0
            for q in range(n_in):
                inter = inter + ((h[q] > 0.0) and (w[q] > 0.0))
                uni = uni + ((h[q] > 0.0) or (w[q] > 0.0))
            P = 1.0 if uni == 0 else powf(<float>inter / <float>uni, <float>K)
            ql = 1.0 - powf(1.0 - P, <float>L)
        elif fam >= 0:                   # hit fraction c_j / L (0 for the uniform part)
            P = (lq[i] / <float>L) if i < ny + n_lsh else 0.0
            ql = 1.0 - powf(1.0 - P, <float>L)
        c = ql + (1.0 - ql) * qr
        if c < floor_:
            c = floor_
        if c > 1.0:
            c = 1.0
        lq[i] = logf(c)


cdef struct Upd:
    # one layer's update: rows and the (sample, position) entries that touched each row
    int layer
    int n_rows                 # touched rows (or all rows when `dense_rows`)
    int dense_rows             # 1: every row j in [0, n_rows) with every sample (full layer, l >= 1)
    const int* touched
    const int* rstart
    const int* rend
    const int* ent_s
    const int* ent_pos
    int row_len
    int opt
    float lr_t
    float eps_t
    float b1
    float b2
    float* W                   # the layer's rows: row r at W + r * rs, moments at M/V + r * rsm
    long rs
    float* M
    float* V
    long rsm
    float* mb
    float* vb
    int pf                     # touched rows prefetched ahead
    float* grad                # [nt * grad_stride]
    long grad_stride


cdef inline void bias_step(Upd* u, float* b, int j, float g) noexcept nogil:
    cdef float mi, vi
    if u.opt == OPT_ADAM:
        mi = u.b1 * u.mb[j] + (1.0 - u.b1) * g
        vi = u.b2 * u.vb[j] + (1.0 - u.b2) * g * g
        u.mb[j] = mi
        u.vb[j] = vi
        b[j] = b[j] - u.lr_t * mi / (sqrtf(vi) + u.eps_t)
    else:
        b[j] = b[j] - u.lr_t * g


cdef inline void row_step(Upd* u, long r, float* g) noexcept nogil:
    if u.opt == OPT_ADAM:
        sb_adam_row(u.W + r * u.rs, u.M + r * u.rsm, u.V + r * u.rsm, g, u.row_len, u.b1, u.b2,
                    u.lr_t, u.eps_t)
    else:
        sb_sgd_row(u.W + r * u.rs, g, u.row_len, u.lr_t)


cdef inline void prefetch_update_row(Upd* u, long r) noexcept nogil:
    """Ask for the weight and moment rows of row r (about to be read and written)."""
    sb_prefetch_row_w(u.W + r * u.rs, u.row_len)
    if u.opt == OPT_ADAM:
        sb_prefetch_row_w(u.M + r * u.rsm, u.row_len)
        sb_prefetch_row_w(u.V + r * u.rsm, u.row_len)


cdef inline void row_step_scaled(Upd* u, long r, float a, const float* x) noexcept nogil:
    """One step on row r whose gradient is a * x (a row one sample touched): no gradient buffer."""
    if u.opt == OPT_ADAM:
        sb_adam_row_scaled(u.W + r * u.rs, u.M + r * u.rsm, u.V + r * u.rsm, a, x, u.row_len, u.b1,
                           u.b2, u.lr_t, u.eps_t)
    else:
        sb_sgd_row_scaled(u.W + r * u.rs, a, x, u.row_len, u.lr_t)


cdef void update_row(Net* net, Work* wk, Upd* u, int t, int tid) noexcept nogil:
    """Gradient of one touched row (sum over the samples that touched it, ascending) + one step."""
    cdef int l = u.layer, j, e, s, pos, i, n, e0, e1
    cdef int rl = u.row_len
    cdef float* g = u.grad + <long>tid * u.grad_stride
    cdef float gb = 0.0, dv
    cdef float* a
    cdef int* pids
    if not u.dense_rows and t + u.pf < u.n_rows:      # a few rows ahead: weights and moments
        prefetch_update_row(u, u.touched[t + u.pf])
    if l == 0:
        # feature-major row f: g += x[s, f] * dlt0[s]; biases are updated separately
        j = u.touched[t]
        e0 = u.rstart[j]
        e1 = u.rend[j]
        if wk.full[0] and e1 - e0 == 1:
            s = u.ent_s[e0]
            row_step_scaled(u, j, wk.xval[u.ent_pos[e0]], wk.dlt[0] + <long>s * wk.stride[0])
            return
        memset(g, 0, rl * sizeof(float))
        for e in range(e0, e1):
            s = u.ent_s[e]
            dv = wk.xval[u.ent_pos[e]]
            if wk.full[0]:
                sb_axpy(dv, wk.dlt[0] + <long>s * wk.stride[0], g, rl)
            else:
                sb_axpy_scatter(dv, wk.dlt[0] + <long>s * wk.stride[0], wk.ids[0] + <long>s * wk.stride[0],
                                g, wk.nact[0][s])
        row_step(u, j, g)
        return
    if u.dense_rows:
        j = t
        e0 = 0
        e1 = wk.b
    else:
        j = u.touched[t]
        e0 = u.rstart[j]
        e1 = u.rend[j]
        if wk.full[l - 1] and e1 - e0 == 1:
            s = u.ent_s[e0]
            dv = wk.dlt[l][u.ent_pos[e0]]
            row_step_scaled(u, j, dv, wk.act[l - 1] + <long>s * wk.stride[l - 1])
            bias_step(u, net.b[l], j, dv)
            return
    memset(g, 0, rl * sizeof(float))
    for e in range(e0, e1):
        if u.dense_rows:
            s = e
            dv = wk.dlt[l][<long>s * wk.stride[l] + j]
        else:
            s = u.ent_s[e]
            dv = wk.dlt[l][u.ent_pos[e]]
        gb = gb + dv
        a = wk.act[l - 1] + <long>s * wk.stride[l - 1]
        if wk.full[l - 1]:
            sb_axpy(dv, a, g, rl)
        else:
            pids = wk.ids[l - 1] + <long>s * wk.stride[l - 1]
            sb_axpy_scatter(dv, a, pids, g, wk.nact[l - 1][s])
    row_step(u, j, g)
    bias_step(u, net.b[l], j, gb)


cdef struct BucketJob:
    # arguments and result of one layer's bucket_rows
    int active
    const int* ids
    const long* off
    const int* cnt_s
    int* cnt
    int* rstart
    int* touched
    int* ent_s
    int* ent_pos
    int n_total
    int n_rows


cdef int bucket_rows(int b, const int* ids, const long* off, const int* cnt_s, int* cnt, int* rstart,
                     int* touched, int* ent_s, int* ent_pos, int n_total) noexcept nogil:
    """Counting sort of (sample, position) entries by row id; returns the number of touched rows,
    listed in ascending row order in `touched` (memory order: the update pass streams through the
    weight arrays). Row j's entries are ent_*[rstart[j]:cnt[j]] in ascending sample order."""
    cdef int s, p, j, nt = 0, acc = 0, t
    for s in range(b):
        for p in range(cnt_s[s]):
            cnt[ids[off[s] + p]] += 1
    for j in range(n_total):       # branch-free (touched has n_total + 1 slots): about half the
        touched[nt] = j            # output rows are touched, a branch here mispredicts constantly
        nt += cnt[j] != 0
    for t in range(nt):
        j = touched[t]
        rstart[j] = acc
        acc += cnt[j]
        cnt[j] = rstart[j]
    for s in range(b):
        for p in range(cnt_s[s]):
            j = ids[off[s] + p]
            ent_s[cnt[j]] = s
            ent_pos[cnt[j]] = <int>(off[s] + p)
            cnt[j] += 1
    return nt


cdef class Scratch:
    """Per-thread scratch of a Core, one slice per OpenMP thread id. Every thread's slice starts on
    its own 64-byte line with a line of padding after it, so threads never write the same cache line
    (false sharing cost the second thread all its gain before this)."""
    cdef public int nt
    cdef public long maxn              # bytes/items per thread of counts, marks, dense
    cdef public object counts          # uint8 [nt * maxn] lsh_query hit counters (zero between uses)
    cdef public object marks           # uint8 [nt * maxn] active-set membership marks (zero between uses)
    cdef public object dense           # float32 [nt * maxn] densified layer input for hashing
    cdef public object keys            # int32 [nt * KEYS_STRIDE] hash keys
    cdef public object grad            # float32 [nt * grad_stride] gradient row of the update pass
    cdef public long grad_stride
    cdef public object qbuf            # bytes [nt * qbuf_stride] topk/threshold query scratch
    cdef public long qbuf_stride
    cdef public object hits            # int32 [nt * hits_stride] hit counts of the LSH candidates
    cdef public long hits_stride

    def __init__(self, Core core, int nt):
        cdef int l, L = core.net.n_layers
        cdef long maxn = max(core.net.sizes[l] for l in range(L + 1))
        cdef long maxrow = max([core.net.sizes[1]] + [core.net.sizes[l] for l in range(1, L)])
        cdef long qsb = 64, hs = 64
        for l in range(L):
            if core.has_tab[l]:
                qsb = max(qsb, 20L * min(<long>core.tabs[l].L * core.tabs[l].bucket_size, core.net.sizes[l + 1]))
                hs = max(hs, <long>core.net.lsh_cap[l])
        self.nt = nt
        self.maxn = _pad(maxn)
        self.counts = _aligned_zeros(nt * self.maxn, np.uint8)
        self.marks = _aligned_zeros(nt * self.maxn, np.uint8)
        self.dense = _aligned_zeros(nt * self.maxn, np.float32)
        self.keys = _aligned_zeros(nt * KEYS_STRIDE, np.int32)
        self.grad_stride = _pad(maxrow)
        self.grad = _aligned_zeros(nt * self.grad_stride, np.float32)
        self.qbuf_stride = _pad(qsb)
        self.qbuf = _aligned_zeros(nt * self.qbuf_stride, np.int8)
        self.hits_stride = _pad(hs)
        self.hits = _aligned_zeros(nt * self.hits_stride, np.int32)


cdef class Core:
    """Owner of the network's arrays and hash tables. Driven by engine/network.py:Network."""
    cdef Net net
    cdef LSHTables tabs[MAXL]
    cdef int has_tab[MAXL]
    cdef public list W, b, mW, vW, mb, vb  # W/mW/vW: [rows, fan] views (rows = features for layer 0)
    cdef list _bufs                        # the arrays behind them (per layer)
    cdef public str layout
    cdef list _layouts                     # per part: layer 0, later layers
    cdef public int n_threads
    cdef public long long step            # optimiser steps taken (Adam's t)
    cdef public long long samples_seen
    cdef public int opt
    cdef public double lr, b1, b2, eps
    cdef list _sort                        # per layer (cnt, rstart, touched) int32 arrays; [0] = features
    cdef Scratch _scratch                  # per-thread arrays

    def __cinit__(self):
        memset(self.tabs, 0, sizeof(self.tabs))
        memset(self.has_tab, 0, sizeof(self.has_tab))

    def __dealloc__(self):
        cdef int l
        for l in range(MAXL):
            if self.has_tab[l]:
                lsh_free(&self.tabs[l])

    def __init__(self, sizes, samplers, targets, min_active, *, str optimizer, double lr, double b1,
                 double b2, double eps, str query_mode, int min_hits, unsigned long long seed,
                 int n_threads, str layout="wmv,soa", lsh_caps=None, rand_blocks=None, bint correct=False):
        cdef int l, L = len(sizes) - 1
        if L < 1 or L > MAXL:
            raise ValueError(f"the network must have 1..{MAXL} layers, got {L}")
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"layer sizes must be >= 1, got {list(sizes)}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if query_mode not in QUERY_MODES:
            raise ValueError(f"unknown LSH query mode {query_mode!r}; known: {', '.join(QUERY_MODES)}")
        parts = layout.split(",")
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or any(p_ not in LAYOUTS for p_ in parts):
            raise ValueError(f"unknown weight layout {layout!r}: one of {', '.join(LAYOUTS)}, or two of them "
                             f"separated by a comma (layer 0, later layers)")
        self.layout = layout
        self._layouts = parts
        self.net.n_layers = L
        self.net.seed = seed
        self.net.qmode = QUERY_MODES[query_mode]
        self.net.min_hits = min_hits
        self.net.correct = 1 if correct else 0
        self.opt = OPT_ADAM if optimizer == "adam" else OPT_SGD
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.n_threads = max(1, n_threads)
        self.step = 0
        self.samples_seen = 0
        self.W, self.b, self.mW, self.vW, self.mb, self.vb = [], [], [], [], [], []
        self._sort = []
        self._bufs = []
        for l in range(L + 1):
            self.net.sizes[l] = int(sizes[l])
        for l in range(L):
            n_in, n_out = int(sizes[l]), int(sizes[l + 1])
            if samplers[l] not in SAMPLERS:
                raise ValueError(f"unknown sampler {samplers[l]!r} for layer {l}")
            self.net.samp[l] = SAMPLERS[samplers[l]]
            self.net.target[l] = int(min(max(targets[l], 0), n_out))
            self.net.min_active[l] = int(min(max(min_active[l], 0), n_out))
            # sampler composition: lsh = up to lsh_caps[l] candidates (default: the target) and a
            # block of rand_blocks[l] uniform neurons (default 0); random = a block of `target`
            if samplers[l] == "random":
                self.net.lsh_cap[l] = 0
                self.net.rand_block[l] = self.net.target[l]
            else:
                self.net.lsh_cap[l] = self.net.target[l] if lsh_caps is None else int(min(max(lsh_caps[l], 0), n_out))
                self.net.rand_block[l] = 0 if rand_blocks is None else int(min(max(rand_blocks[l], 0), n_out))
            rows = n_in if l == 0 else n_out
            fan = n_out if l == 0 else n_in
            self._alloc_rows(l, rows, fan)
            self.b.append(np.zeros(n_out, np.float32))
            if self.opt == OPT_ADAM:
                self.mb.append(np.zeros(n_out, np.float32)); self.vb.append(np.zeros(n_out, np.float32))
            else:
                self.mb.append(None); self.vb.append(None)
            self._sort.append((np.zeros(rows + 1, np.int32), np.zeros(rows + 1, np.int32),
                               np.zeros(rows + 1, np.int32)))
            self._pointers(l)
        self._scratch = None

    def _alloc_rows(self, int l, long rows, long fan):
        """Weight and Adam-moment rows of layer l in the chosen layout. `W[l]`, `mW[l]`, `vW[l]` are
        [rows, fan] numpy views (strided when interleaved); the kernels see base pointers and strides."""
        cdef float[:, :, ::1] b3
        cdef float[:, ::1] b2_
        cdef float[:, ::1] mv
        adam = self.opt == OPT_ADAM
        lay = self._layouts[0 if l == 0 else 1]
        if adam and lay == "wmv":
            buf = _aligned_zeros(rows * 3 * fan, np.float32).reshape(rows, 3, fan)
            self._bufs.append((buf,))
            self.W.append(buf[:, 0, :]); self.mW.append(buf[:, 1, :]); self.vW.append(buf[:, 2, :])
            b3 = buf
            self.net.W[l] = &b3[0, 0, 0]
            self.net.M[l] = &b3[0, 1, 0]
            self.net.V[l] = &b3[0, 2, 0]
            self.net.rs[l] = 3 * fan
            self.net.rsm[l] = 3 * fan
        else:
            wbuf = _aligned_zeros(rows * fan, np.float32).reshape(rows, fan)
            b2_ = wbuf
            self.W.append(wbuf)
            self.net.W[l] = &b2_[0, 0]
            self.net.rs[l] = fan
            if not adam:
                self._bufs.append((wbuf,))
                self.mW.append(None); self.vW.append(None)
                self.net.M[l] = NULL; self.net.V[l] = NULL; self.net.rsm[l] = 0
            elif lay == "mv":
                mbuf = _aligned_zeros(rows * 2 * fan, np.float32).reshape(rows, 2, fan)
                self._bufs.append((wbuf, mbuf))
                self.mW.append(mbuf[:, 0, :]); self.vW.append(mbuf[:, 1, :])
                b3 = mbuf
                self.net.M[l] = &b3[0, 0, 0]
                self.net.V[l] = &b3[0, 1, 0]
                self.net.rsm[l] = 2 * fan
            else:
                m_ = _aligned_zeros(rows * fan, np.float32).reshape(rows, fan)
                v_ = _aligned_zeros(rows * fan, np.float32).reshape(rows, fan)
                self._bufs.append((wbuf, m_, v_))
                self.mW.append(m_); self.vW.append(v_)
                mv = m_
                self.net.M[l] = &mv[0, 0]
                mv = v_
                self.net.V[l] = &mv[0, 0]
                self.net.rsm[l] = fan

    cdef void _pointers(self, int l):
        cdef float[::1] bb = self.b[l]
        self.net.b[l] = &bb[0]

    # ------------------------------------------------------------------------------- tables
    def init_tables(self, int l, str family, int K, int L, int range_pow, int bucket_size,
                    str insertion, unsigned long long seed):
        """Create the LSH tables of layer l (hash functions from `seed`); build() fills them."""
        cdef int rc, dim
        if l < 0 or l >= self.net.n_layers:
            raise ValueError(f"layer {l} out of range")
        if family not in FAMILIES:
            raise ValueError(f"unknown hash family {family!r}; known: {', '.join(FAMILIES)}")
        if insertion not in INSERTIONS:
            raise ValueError(f"unknown insertion {insertion!r}; known: {', '.join(INSERTIONS)}")
        if L < 1 or L > MAX_TABLES:
            raise ValueError(f"L must be in 1..{MAX_TABLES}, got {L}")
        dim = self.net.sizes[l]
        if self.has_tab[l]:
            lsh_free(&self.tabs[l])
            self.has_tab[l] = 0
        rc = lsh_init(&self.tabs[l], FAMILIES[family], dim, K, L, range_pow, bucket_size,
                      INSERTIONS[insertion], seed)
        if rc != 0:
            lsh_free(&self.tabs[l])
            raise ValueError(
                f"LSH tables for layer {l} refused the configuration (code {rc}): family={family} "
                f"dim={dim} K={K} L={L} range_pow={range_pow} bucket_size={bucket_size} insertion={insertion}")
        self.has_tab[l] = 1
        self.net.tab[l] = &self.tabs[l]
        self._scratch = None          # the query scratch is sized by the tables

    def new_functions(self, int l, unsigned long long seed):
        """The paper's 'rebuild': new hash functions (call build() afterwards)."""
        if not self.has_tab[l]:
            raise ValueError(f"layer {l} has no LSH tables")
        cdef int rc = lsh_new_functions(&self.tabs[l], seed)
        if rc != 0:
            raise RuntimeError(f"lsh_new_functions failed for layer {l} (code {rc})")

    def build(self, int l, int n_threads=0):
        """The paper's 'rehash': hash every neuron of layer l with the current functions, refill."""
        cdef int rc, nt = n_threads if n_threads > 0 else self.n_threads
        cdef long n_out = self.net.sizes[l + 1], n_in = self.net.sizes[l]
        cdef long row_stride, elem_stride
        if not self.has_tab[l]:
            raise ValueError(f"layer {l} has no LSH tables")
        if l == 0:     # neuron j of layer 0 is column j of the feature-major matrix
            row_stride, elem_stride = 1, self.net.rs[0]
        else:
            row_stride, elem_stride = self.net.rs[l], 1
        with nogil:
            rc = lsh_build(&self.tabs[l], self.net.W[l], n_out, row_stride, elem_stride, nt)
        if rc != 0:
            if rc == SB_LSH_ENOMEM:
                raise MemoryError(f"out of memory while building the LSH tables of layer {l}")
            raise RuntimeError(f"lsh_build failed for layer {l} (code {rc})")

    def table_builds(self, int l, long long set_to=-1) -> int:
        """Builds of layer l's tables since its functions were drawn (the build's random stream:
        reservoir draws, FIFO arrival order); `set_to` >= 0 restores it (load)."""
        if not self.has_tab[l]:
            raise ValueError(f"layer {l} has no LSH tables")
        if set_to >= 0:
            self.tabs[l].n_builds = <unsigned long long>set_to
        return int(self.tabs[l].n_builds)

    def table_nbytes(self, int l) -> int:
        if not self.has_tab[l]:
            return 0
        cdef LSHTables* t = &self.tabs[l]
        cdef long nb = 0
        if t.offsets != NULL:
            nb += (<long>t.L) * ((1L << t.range_pow) + 1) * 4
        if t.ids != NULL:
            nb += (<long>t.L) * t.n_items * 4
        return nb

    # ------------------------------------------------------------------------------- scratch
    cdef Scratch _get_scratch(self, int nt):
        """Per-thread scratch (see Scratch), grown when more threads are asked for."""
        if self._scratch is None or self._scratch.nt < nt:
            self._scratch = Scratch(self, nt)
        return self._scratch

    cdef void _attach_scratch(self, Work* wk, Scratch sc):
        cdef unsigned char[::1] u8
        cdef float[::1] f1
        cdef int[::1] i1
        cdef char[::1] c1
        wk.maxn = sc.maxn
        u8 = sc.counts; wk.counts = &u8[0]
        u8 = sc.marks; wk.marks = &u8[0]
        f1 = sc.dense; wk.dense = &f1[0]
        i1 = sc.keys; wk.keys = &i1[0]
        c1 = sc.qbuf; wk.qbuf = &c1[0]; wk.qbuf_stride = sc.qbuf_stride
        i1 = sc.hits; wk.hits = &i1[0]; wk.hits_stride = sc.hits_stride

    cdef _setup_work(self, Work* wk, int b, int slots, int training, int exact, int max_labels, list keep):
        """Fill the per-layer buffers of `wk` (arrays appended to `keep` to stay alive)."""
        cdef int l, L = self.net.n_layers, n_out, cap
        cdef int[::1] iv
        cdef float[::1] fv
        for l in range(L):
            n_out = self.net.sizes[l + 1]
            wk.full[l] = 1 if (exact or self.net.samp[l] == SAMP_FULL) else 0
            if wk.full[l]:
                cap = n_out
            else:
                cap = max(self.net.target[l], self.net.lsh_cap[l] + self.net.rand_block[l],
                          self.net.min_active[l], wk.min_pad, 1)
                if l == L - 1 and training:
                    cap += max_labels
                cap = min(cap, n_out)
            cap = <int>_pad(cap)           # slots of different threads never share a cache line
            wk.stride[l] = cap
            a = _aligned_zeros(<long>slots * cap, np.float32); keep.append(a); fv = a; wk.act[l] = &fv[0]
            a = _aligned_zeros(<long>slots * cap, np.float32) if training else np.empty(1, np.float32)
            keep.append(a); fv = a; wk.dlt[l] = &fv[0]
            a = np.zeros(slots, np.int32); keep.append(a); iv = a; wk.nact[l] = &iv[0]
            if wk.full[l]:
                wk.ids[l] = NULL
            else:
                a = _aligned_zeros(<long>slots * cap, np.int32); keep.append(a); iv = a; wk.ids[l] = &iv[0]

    # ------------------------------------------------------------------------------- training
    def train_batch(self, int[::1] xptr, int[::1] xind, float[::1] xval, int[::1] yptr, int[::1] yind,
                    int b, int max_labels, bint keep_active=False):
        """One optimiser step on a batch (inputs already validated by Network). Returns
        (mean loss, stats dict)."""
        cdef Work wk
        cdef Net* net = &self.net
        cdef int nt = max(1, min(self.n_threads, b)), tid = 0, s, l, L = net.n_layers
        cdef int t, n_rows, n_out
        cdef list keep = []
        cdef unsigned char[::1] u8a, u8b
        cdef float[::1] f1, f2
        cdef int[::1] i1, i2, i3, i4, i5, i6
        cdef float[::1] lossv
        cdef int[::1] ncand
        cdef long[::1] offs
        cdef Upd u
        cdef Upd us[MAXL]
        cdef BucketJob bj[MAXL]
        cdef int lq
        cdef double loss_sum
        cdef Scratch sc
        for l in range(L):
            if net.samp[l] == SAMP_LSH and not self.has_tab[l]:
                raise RuntimeError(f"layer {l} uses the lsh sampler but has no tables")
        memset(&wk, 0, sizeof(Work))
        wk.b = b
        wk.training = 1
        wk.sample_base = self.samples_seen
        wk.stream = 0
        wk.xptr = &xptr[0]; wk.xind = &xind[0] if xind.shape[0] else NULL
        wk.xval = &xval[0] if xval.shape[0] else NULL
        wk.yptr = &yptr[0]; wk.yind = &yind[0] if yind.shape[0] else NULL
        sc = self._get_scratch(nt)
        self._attach_scratch(&wk, sc)
        f2 = sc.grad
        self._setup_work(&wk, b, b, 1, 0, max_labels, keep)
        parts = np.zeros((3, b), np.int32); keep.append(parts)
        i1 = parts[0]; wk.n_lab = &i1[0]
        i1 = parts[1]; wk.n_lsh = &i1[0]
        i1 = parts[2]; wk.n_rand = &i1[0]
        if self.net.correct:
            lqa = _aligned_zeros(<long>b * wk.stride[L - 1], np.float32); keep.append(lqa)
            f1 = lqa; wk.logq = &f1[0]
        lossv = np.zeros(b, np.float32); keep.append(lossv); wk.loss = &lossv[0]
        ncand = np.full(b, -1, np.int32); wk.n_cand = &ncand[0]
        # ---- phase 1: per-sample forward/backward
        t_a = time.perf_counter()
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            for s in prange(b, schedule="dynamic", chunksize=1):
                if sample_pass(net, &wk, s, tid) != 0:
                    wk.err = -1
        if wk.err != 0:
            raise RuntimeError("LSH query failed during training")
        t_b = time.perf_counter()
        loss_sum = 0.0
        for s in range(b):
            loss_sum += lossv[s]
        # ---- phase 2: updates, one layer at a time, parallel over touched rows
        self.step += 1
        memset(&u, 0, sizeof(Upd))
        u.opt = self.opt
        u.b1 = self.b1; u.b2 = self.b2
        u.pf = PF_UPD
        if self.opt == OPT_ADAM:
            bc1 = 1.0 - self.b1 ** self.step
            bc2 = 1.0 - self.b2 ** self.step
            u.lr_t = self.lr * (bc2 ** 0.5) / bc1
            u.eps_t = self.eps * (bc2 ** 0.5)
        else:
            u.lr_t = self.lr
        stats = {}
        # ---- bucket every layer's (sample, position) entries by row: independent counting sorts,
        # run concurrently (one layer per thread)
        t_k = time.perf_counter()
        for l in range(L):
            us[l] = u
            us[l].layer = l
            n_out = net.sizes[l + 1]
            us[l].row_len = n_out if l == 0 else net.sizes[l]
            us[l].grad = &f2[0]
            us[l].grad_stride = sc.grad_stride
            us[l].W = net.W[l]; us[l].rs = net.rs[l]
            us[l].M = net.M[l]; us[l].V = net.V[l]; us[l].rsm = net.rsm[l]
            if self.opt == OPT_ADAM:
                f1 = self.mb[l]; us[l].mb = &f1[0]
                f1 = self.vb[l]; us[l].vb = &f1[0]
            i1, i2, i3 = self._sort[l]
            us[l].dense_rows = 0
            bj[l].active = 0
            if l == 0 or not wk.full[l]:
                offs = np.empty(b, np.int64); keep.append(offs)
                if l == 0:            # rows = the features present in the batch
                    i4 = np.diff(np.asarray(xptr)).astype(np.int32)
                    for s in range(b):
                        offs[s] = xptr[s]
                    n_ent = xptr[b]
                    bj[l].ids = wk.xind
                    bj[l].n_total = net.sizes[0]
                else:
                    i4 = np.asarray(<int[:b]> wk.nact[l]).copy()
                    for s in range(b):
                        offs[s] = <long>s * wk.stride[l]
                    n_ent = int(np.asarray(i4).sum())
                    bj[l].ids = wk.ids[l]
                    bj[l].n_total = n_out
                keep.append(i4)
                es = np.empty(max(n_ent, 1), np.int32); ep = np.empty(max(n_ent, 1), np.int32)
                keep.append(es); keep.append(ep)
                i5 = es; i6 = ep
                bj[l].active = 1
                bj[l].off = &offs[0]; bj[l].cnt_s = &i4[0]; bj[l].cnt = &i1[0]; bj[l].rstart = &i2[0]
                bj[l].touched = &i3[0]; bj[l].ent_s = &i5[0]; bj[l].ent_pos = &i6[0]
                us[l].touched = &i3[0]; us[l].rstart = &i2[0]; us[l].rend = &i1[0]
                us[l].ent_s = &i5[0]; us[l].ent_pos = &i6[0]
            else:                     # a full layer l >= 1: every row, every sample
                us[l].dense_rows = 1
                us[l].n_rows = n_out
                us[l].ent_s = NULL; us[l].ent_pos = NULL
        with nogil, parallel(num_threads=min(nt, L)):
            for lq in prange(L, schedule="static", chunksize=1):
                if bj[lq].active:
                    bj[lq].n_rows = bucket_rows(b, bj[lq].ids, bj[lq].off, bj[lq].cnt_s, bj[lq].cnt,
                                                bj[lq].rstart, bj[lq].touched, bj[lq].ent_s,
                                                bj[lq].ent_pos, bj[lq].n_total)
        for l in range(L):
            if bj[l].active:
                us[l].n_rows = bj[l].n_rows
        stats["time_bucket_s"] = time.perf_counter() - t_k
        # ---- updates, one layer at a time, parallel over touched rows
        for l in range(L):
            t_l = time.perf_counter()
            n_rows = us[l].n_rows
            with nogil, parallel(num_threads=nt):
                tid = threadid()
                for t in prange(n_rows, schedule="dynamic", chunksize=16):
                    update_row(net, &wk, &us[l], t, tid)
            if bj[l].active:
                with nogil:
                    for t in range(n_rows):
                        bj[l].cnt[bj[l].touched[t]] = 0
            stats[f"time_update_layer{l}_s"] = time.perf_counter() - t_l
            stats[f"touched_rows_layer{l}"] = n_rows
            if l == L - 1:
                stats["touched_rows_out"] = n_rows
            if l == 0:
                self._update_bias0(&wk, &us[0], b, nt, keep)
        self.samples_seen += b
        stats["time_forward_backward_s"] = t_b - t_a
        stats["time_update_s"] = time.perf_counter() - t_b
        n_act = np.asarray(<int[:b]> wk.nact[L - 1])
        if keep_active:      # debug hook for tests: each sample's active set (ids) in every layer
            layers = []
            for l in range(L):
                if wk.full[l]:
                    layers.append([np.arange(net.sizes[l + 1], dtype=np.int32) for s in range(b)])
                else:
                    na = np.asarray(<int[:b]> wk.nact[l])
                    ids_all = np.asarray(<int[:b * wk.stride[l]]> wk.ids[l]).reshape(b, wk.stride[l])
                    layers.append([ids_all[s, :na[s]].copy() for s in range(b)])
            stats["active_layers"] = layers
            stats["active"] = layers[L - 1]
            stats["active_parts"] = parts.T.copy()          # [b, 3]: labels, lsh, random
            if self.net.correct and not wk.full[L - 1]:
                lqall = np.asarray(lqa).reshape(b, wk.stride[L - 1])
                stats["logq"] = [lqall[s, :n_act[s]].copy() for s in range(b)]
        stats["mean_active_out"] = float(n_act.mean())
        stats["active_labels"] = float(parts[0].mean())
        stats["active_lsh"] = float(parts[1].mean())
        stats["active_random"] = float(parts[2].mean())
        nc = np.asarray(ncand)
        stats["mean_lsh_candidates"] = float(nc[nc >= 0].mean()) if (nc >= 0).any() else float("nan")
        return loss_sum / b, stats

    cdef _update_bias0(self, Work* wk, Upd* u, int b, int nt, list keep):
        """Biases of layer 0 (indexed by neuron, while its weight rows are indexed by feature)."""
        cdef int j, s, e, n_rows, t, h = self.net.sizes[1]
        cdef float g
        cdef float* bb = self.net.b[0]
        cdef int[::1] cnt, rs, tch, ns, es, ep
        cdef long[::1] offs
        if wk.full[0]:
            with nogil:
                for j in prange(h, num_threads=nt, schedule="static"):
                    g = 0.0
                    for s in range(b):
                        g = g + wk.dlt[0][<long>s * wk.stride[0] + j]
                    bias_step(u, bb, j, g)
            return
        cnt = np.zeros(h + 1, np.int32); rs = np.zeros(h + 1, np.int32); tch = np.zeros(h + 1, np.int32)
        ns = np.asarray(<int[:b]> wk.nact[0]).copy()
        offs = np.arange(b, dtype=np.int64) * wk.stride[0]
        n_ent = max(int(np.asarray(ns).sum()), 1)
        es = np.empty(n_ent, np.int32); ep = np.empty(n_ent, np.int32)
        with nogil:
            n_rows = bucket_rows(b, wk.ids[0], &offs[0], &ns[0], &cnt[0], &rs[0], &tch[0], &es[0], &ep[0], h)
            for t in range(n_rows):
                j = tch[t]
                g = 0.0
                for e in range(rs[j], cnt[j]):
                    g = g + wk.dlt[0][ep[e]]
                bias_step(u, bb, j, g)

    # ------------------------------------------------------------------------------- queries
    def hidden(self, int[::1] xptr, int[::1] xind, float[::1] xval, int n, int n_threads=0):
        """float32 [n, sizes[L-1]]: the last hidden layer's activations, every layer exact."""
        cdef Work wk
        cdef int nt = max(1, min(n_threads if n_threads > 0 else self.n_threads, max(n, 1))), tid = 0, s
        cdef list keep = []
        cdef Scratch sc
        cdef float[::1] Hv
        H = np.zeros((n, self.net.sizes[self.net.n_layers - 1]), np.float32)
        if n == 0:
            return H
        memset(&wk, 0, sizeof(Work))
        wk.b = n; wk.exact = 1; wk.per_thread = 1; wk.hidden_only = 1
        wk.xptr = &xptr[0]; wk.xind = &xind[0] if xind.shape[0] else NULL
        wk.xval = &xval[0] if xval.shape[0] else NULL
        sc = self._get_scratch(nt)
        self._attach_scratch(&wk, sc)
        self._setup_work(&wk, n, nt, 0, 1, 0, keep)
        Hv = H.reshape(-1)
        wk.H = &Hv[0]
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            for s in prange(n, schedule="dynamic", chunksize=4):
                sample_pass(&self.net, &wk, s, tid)
        return H

    def query_dense(self, int l, float[:, ::1] H, int max_out):
        """The LSH candidates of layer l for the dense layer inputs H [n, sizes[l]] (rows), as the
        training sampler's LSH part asks for them (query mode, min_hits, up to max_out ids; no labels,
        no random neurons). Returns (indptr int64 [n+1], ids int32). Serial; for untimed metrics."""
        cdef int n = H.shape[0], i, nc
        cdef Scratch sc
        cdef Work wk
        if not self.has_tab[l]:
            raise ValueError(f"layer {l} has no LSH tables")
        if H.shape[1] != self.net.sizes[l]:
            raise ValueError(f"H must have {self.net.sizes[l]} columns, got {H.shape[1]}")
        max_out = max(0, min(max_out, self.net.sizes[l + 1]))
        sc = self._get_scratch(1)
        memset(&wk, 0, sizeof(Work))
        self._attach_scratch(&wk, sc)
        out = np.empty((max(n, 1), max(max_out, 1)), np.int32)
        cnt = np.zeros(n + 1, np.int64)
        cdef int[:, ::1] o = out
        cdef long long[::1] c = cnt
        for i in range(n):
            with nogil:
                lsh_hash_dense(&self.tabs[l], &H[i, 0], wk.keys)
                nc = lsh_query_buf(&self.tabs[l], wk.keys, self.net.qmode, max_out, self.net.min_hits,
                                   wk.counts, &o[i, 0], NULL, max_out, wk.qbuf)
            if nc < 0:
                raise RuntimeError(f"LSH query failed (code {nc})")
            c[i + 1] = c[i] + nc
        ids = np.concatenate([out[i, :cnt[i + 1] - cnt[i]] for i in range(n)]) if n else np.empty(0, np.int32)
        return cnt, ids.astype(np.int32)

    # ------------------------------------------------------------------------------- predict
    def predict(self, int[::1] xptr, int[::1] xind, float[::1] xval, int n, int k, bint exact,
                int n_threads=0):
        """Top-k output ids (best first; -1 where fewer than k neurons were scored) for n rows."""
        cdef Work wk
        cdef Net* net = &self.net
        cdef int nt = max(1, min(n_threads if n_threads > 0 else self.n_threads, max(n, 1)))
        cdef int tid = 0, s, l
        cdef list keep = []
        cdef unsigned char[::1] u8a, u8b
        cdef float[::1] f1, tv
        cdef int[::1] i1, ti
        cdef Scratch sc
        out = np.full((n, k), -1, np.int32)
        if n == 0:
            return out
        if not exact:
            for l in range(net.n_layers):
                if net.samp[l] == SAMP_LSH and not self.has_tab[l]:
                    raise RuntimeError(f"layer {l} uses the lsh sampler but has no tables")
        memset(&wk, 0, sizeof(Work))
        wk.b = n
        wk.training = 0
        wk.exact = exact
        wk.per_thread = 1
        wk.min_pad = k
        wk.sample_base = 0
        wk.stream = 0x5EED0F9E0D1C7ULL
        wk.xptr = &xptr[0]; wk.xind = &xind[0] if xind.shape[0] else NULL
        wk.xval = &xval[0] if xval.shape[0] else NULL
        sc = self._get_scratch(nt)
        self._attach_scratch(&wk, sc)
        self._setup_work(&wk, n, nt, 0, exact, 0, keep)
        tv = np.empty(<long>n * k, np.float32)
        ti = out.reshape(-1)
        wk.k = k
        wk.topv = &tv[0]
        wk.topi = &ti[0]
        cdef float[::1] Hv, bufv
        cdef int[::1] cntv
        cdef int nblk, blk, s0, nb
        if exact:
            # hidden layers per sample, then the output layer in blocks of PB samples: each output
            # row is read once per block instead of once per sample
            wk.hidden_only = 1
            Hv = np.empty(<long>n * net.sizes[net.n_layers - 1], np.float32)
            wk.H = &Hv[0]
            bufv = _aligned_zeros(nt * PBS, np.float32)
            cntv = _aligned_zeros(nt * PBS, np.int32)
            nblk = (n + PB - 1) // PB
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            for s in prange(n, schedule="dynamic", chunksize=4):
                if sample_pass(net, &wk, s, tid) != 0:
                    wk.err = -1
        if wk.err != 0:
            raise RuntimeError("LSH query failed during predict")
        if exact:
            with nogil, parallel(num_threads=nt):
                tid = threadid()
                for blk in prange(nblk, schedule="dynamic", chunksize=1):
                    s0 = blk * PB
                    nb = n - s0
                    if nb > PB:
                        nb = PB
                    topk_block(net, wk.H, s0, nb, k, wk.topv, wk.topi, &cntv[tid * PBS], &bufv[tid * PBS])
        return out


cdef void topk_block(const Net* net, const float* H, int s0, int nb, int k, float* tv, int* ti,
                     int* cnt, float* buf) noexcept nogil:
    """Exact output layer for samples s0..s0+nb-1 (last hidden activations in H), top-k each."""
    cdef int L = net.n_layers, j, s, n_in = net.sizes[L - 1], n_out = net.sizes[L]
    cdef const float* W = net.W[L - 1]
    cdef long rs = net.rs[L - 1]
    cdef const float* bb = net.b[L - 1]
    for s in range(nb):
        cnt[s] = 0
    for j in range(n_out):
        if j + PF_AHEAD < n_out:
            sb_prefetch_row(W + <long>(j + PF_AHEAD) * rs, n_in)
        sb_dot_multi(W + <long>j * rs, bb[j], H + <long>s0 * n_in, n_in, nb, n_in, buf)
        for s in range(nb):
            if cnt[s] < k or buf[s] > tv[<long>(s0 + s) * k + k - 1]:
                topk_push(buf[s], j, tv + <long>(s0 + s) * k, ti + <long>(s0 + s) * k, &cnt[s], k)
    for s in range(nb):
        for j in range(cnt[s], k):
            ti[<long>(s0 + s) * k + j] = -1


def parallel_capacity(int n_threads=2, long iters=100000000) -> float:
    """Speedup of `n_threads` threads over one on a pure-compute loop (no memory traffic): about
    n_threads on an idle machine, less when other processes hold the cores. Benchmarks print it so
    a reader can tell whether a thread-scaling figure was limited by the engine or by the machine."""
    cdef int t, nt = max(1, n_threads)
    cdef long i
    cdef double x
    cdef double[::1] sink = np.zeros(64 * nt, np.float64)
    t0 = time.perf_counter()
    with nogil:
        for i in range(iters):
            sink[0] = sink[0] * 0.999999 + 1e-9
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    with nogil:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            x = 0.0
            for i in range(iters):
                x = x * 0.999999 + 1e-9
            sink[64 * t] = x
    many = time.perf_counter() - t0
    return nt * one / many


def triad_bandwidth(long n=1 << 24, int n_threads=1, int repeats=5) -> float:
    """STREAM-style triad a = b + s*c on float32 arrays of n elements; best of `repeats`, bytes/s
    counted as 3 * 4 * n (two reads, one write; write-allocate traffic not counted, as STREAM)."""
    cdef float[::1] a = np.zeros(n, np.float32)
    cdef float[::1] bb = np.ones(n, np.float32)
    cdef float[::1] c = np.full(n, 2.0, np.float32)
    cdef int r, t, nt = max(1, n_threads)
    cdef long chunk = (n + nt - 1) // nt, lo, hi
    best = 0.0
    for r in range(repeats):
        t0 = time.perf_counter()
        with nogil:
            for t in prange(nt, num_threads=nt, schedule="static"):
                lo = t * chunk
                hi = min(n, lo + chunk)
                sb_triad(&a[0], &bb[0], &c[0], 3.0, lo, hi)
        dt = time.perf_counter() - t0
        best = max(best, 12.0 * n / dt)
    return best
