# cython: language_level=3
"""The SLIDE network's nogil kernels (an inline Cython header, like lsh_kernels.pxd): the structs a
training step or a predict shares between threads, and one named kernel per phase:

  choose_active   the active set of a layer for one sample (labels, LSH share, random block, padding)
  forward_layer   pre-activations over the active set
  log_inclusion   the sampling correction's log q per active output neuron
  softmax_loss    loss and output deltas (corrected or not)
  backward        hidden-layer deltas
  output_topk     predict's per-sample top-k;  topk_block: the exact predict's output pass
  update_row      one touched row's gradient and optimiser step (bias_step, row_step*)
  bucket_rows     the counting sort of (sample, position) entries by row
  sample_pass     the per-sample orchestration of the above

engine/_core.pyx (`Core`) owns the buffers and runs these in `prange` loops; see docs/engine.md.
"""
from libc.string cimport memset, memcpy
from libc.math cimport expf, logf, sqrtf, isnan, acosf, powf
from libc.stdint cimport uint64_t

from lsh_kernels cimport *
from lsh_hash cimport *
from lsh_tables cimport *
from lsh_query cimport *

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


cdef inline int choose_active(Net* net, Work* wk, int l, int s, int slot, int tid, uint64_t* rng_,
                              int* ny_) noexcept nogil:
    """The active set of layer l for sample s: (training, output layer) the distinct labels first,
    then up to lsh_cap LSH candidates, the random block, and padding up to min_active (ids in
    wk.ids[l] at `slot`, count in wk.nact[l][slot]; composition in wk.n_lab/n_lsh/n_rand). A full
    layer counts its distinct labels only. Returns 0, or a negative code (LSH query failure, -3 for
    a corrupt table)."""
    cdef int i, j, q, n, nc, m, n_out = net.sizes[l + 1], is_out = l == net.n_layers - 1
    cdef int ny = ny_[0], pn, tgt, n_lsh = 0, m0 = 0, want_hits = 0
    cdef int x0 = wk.xptr[s], nx = wk.xptr[s + 1] - x0
    cdef const int* xi = wk.xind + x0
    cdef const float* xv = wk.xval + x0
    cdef unsigned char* marks = wk.marks + tid * wk.maxn
    cdef unsigned char* counts = wk.counts + tid * wk.maxn
    cdef float* dense = wk.dense + tid * wk.maxn
    cdef int* keys = wk.keys + tid * KEYS_STRIDE
    cdef int* ids_s
    cdef int* pids
    cdef float* pin
    cdef int* hc = NULL
    cdef float* lq = NULL
    cdef uint64_t rng = rng_[0]
    if is_out and wk.training and net.correct and wk.logq != NULL and not wk.full[l]:
        lq = wk.logq + <long>slot * wk.stride[l]
        want_hits = net.samp[l] == SAMP_LSH and wk.hits != NULL
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
                rng_[0] = rng
                return nc
            if is_out and wk.n_cand != NULL:
                wk.n_cand[s] = nc
            m = n
            for i in range(nc):      # compact in place, skipping labels already present
                j = ids_s[m + i]
                if j < 0 or j >= n_out:   # a corrupt table must not become a wild read
                    rng_[0] = rng
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
    rng_[0] = rng
    ny_[0] = ny
    return 0


cdef inline void forward_layer(Net* net, Work* wk, int l, int s, int slot) noexcept nogil:
    """Pre-activations of layer l's active neurons for sample s (ReLU on hidden layers; logits for
    the output): z = W a + bias over the active set; inactive inputs count as 0."""
    cdef int i, j, q, n_in = net.sizes[l], n_out = net.sizes[l + 1], is_out = l == net.n_layers - 1
    cdef int n = wk.nact[l][slot], pslot, pn
    cdef int x0 = wk.xptr[s], nx = wk.xptr[s + 1] - x0
    cdef const int* xi = wk.xind + x0
    cdef const float* xv = wk.xval + x0
    cdef float* W = net.W[l]
    cdef long rs = net.rs[l]
    cdef float* bb = net.b[l]
    cdef float* out = wk.act[l] + <long>slot * wk.stride[l]
    cdef int* ids_s = NULL if wk.full[l] else wk.ids[l] + <long>slot * wk.stride[l]
    cdef int* pids
    cdef float* pin
    cdef float z
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

cdef inline void log_inclusion(const Net* net, int l, const int* ids, const float* z, const float* h, int h_full,
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


cdef inline void softmax_loss(Net* net, Work* wk, int l, int s, int slot, int tid, int ny) noexcept nogil:
    """Loss of sample s over the output layer's active set and the output deltas of the batch-mean
    loss: p = softmax(z - log q) (log q = 0 without the correction), t = 1/ny on the labels,
    dz = (p - t) / b; a sample without labels gets loss 0 and zero deltas in every layer."""
    cdef int i, j, q, ll, n = wk.nact[l][slot], L = net.n_layers
    cdef unsigned char* marks = wk.marks + tid * wk.maxn
    cdef float* out = wk.act[l] + <long>slot * wk.stride[l]
    cdef float* d
    cdef float* pin
    cdef float* lq = NULL
    cdef float mx, ssum, inv_b, zy
    if net.correct and wk.logq != NULL and not wk.full[l]:
        lq = wk.logq + <long>slot * wk.stride[l]
    inv_b = 1.0 / wk.b
    d = wk.dlt[l] + <long>slot * wk.stride[l]
    if ny == 0:
        wk.loss[s] = 0.0
        for ll in range(L):
            memset(wk.dlt[ll] + <long>slot * wk.stride[ll], 0, wk.nact[ll][slot] * sizeof(float))
        return
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

cdef inline void backward(Net* net, Work* wk, int L, int slot) noexcept nogil:
    """Deltas of the hidden layers from the output's: dz_{l-1} = (W_l^T dz_l) * [a_{l-1} > 0] over
    the active inputs (weights only read)."""
    cdef int l, i, j, q, n, n_in, pn
    cdef float* W
    cdef long rs
    cdef float* d
    cdef float* dp
    cdef float* pin
    cdef int* ids_s
    cdef int* pids
    cdef float w
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

cdef inline void output_topk(Net* net, Work* wk, int l, int s, int slot) noexcept nogil:
    """Predict: the k best of the output layer's scored neurons for sample s (-1 past the end)."""
    cdef int i, kk = 0, n = wk.nact[l][slot]
    cdef float* out = wk.act[l] + <long>slot * wk.stride[l]
    cdef int* ids_s = NULL if wk.full[l] else wk.ids[l] + <long>slot * wk.stride[l]
    for i in range(n):
        topk_push(out[i], i if ids_s == NULL else ids_s[i], wk.topv + <long>s * wk.k,
                  wk.topi + <long>s * wk.k, &kk, wk.k)
    for i in range(kk, wk.k):
        wk.topi[<long>s * wk.k + i] = -1


cdef inline int sample_pass(Net* net, Work* wk, int s, int tid) noexcept nogil:
    """Active sets, forward, loss and backward for sample s (training) or top-k (predict)."""
    cdef int L = net.n_layers, l, rc, ny = 0
    cdef int slot = tid if wk.per_thread else s
    cdef uint64_t rng = seed_for(net.seed ^ wk.stream, wk.sample_base + s)
    if wk.hidden_only:
        L = L - 1
    for l in range(L):
        rc = choose_active(net, wk, l, s, slot, tid, &rng, &ny)
        if rc != 0:
            return rc
        forward_layer(net, wk, l, s, slot)
    if wk.hidden_only:
        memcpy(wk.H + <long>s * net.sizes[L], wk.act[L - 1] + <long>slot * wk.stride[L - 1],
               net.sizes[L] * sizeof(float))
        return 0
    if not wk.training:
        output_topk(net, wk, L - 1, s, slot)
        return 0
    softmax_loss(net, wk, L - 1, s, slot, tid, ny)
    if ny > 0:
        backward(net, wk, L, slot)
    return 0


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


cdef inline void update_row(Net* net, Work* wk, Upd* u, int t, int tid) noexcept nogil:
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


cdef inline int bucket_rows(int b, const int* ids, const long* off, const int* cnt_s, int* cnt, int* rstart,
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


cdef inline void topk_block(const Net* net, const float* H, int s0, int nb, int k, float* tv, int* ti,
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
