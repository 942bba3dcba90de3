# cython: language_level=3
"""The SLIDE network's per-sample nogil kernels (an inline Cython header; definitions in
net_kernels.pxd): choose_active, forward_layer, log_inclusion (the sampling correction),
softmax_loss, backward, output_topk, and sample_pass, which runs them for one sample."""
from libc.string cimport memset, memcpy
from libc.math cimport expf, logf, sqrtf, isnan, acosf, powf
from libc.stdint cimport uint64_t

from lsh_kernels cimport *
from lsh_hash cimport *
from lsh_tables cimport *
from lsh_query cimport *
from net_kernels cimport *


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
            sb_axpy_rows(W, rs, xi, xv, nx, out, n_out, PF_AHEAD)      # the nx weight rows, prefetched
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
                sb_dot_rows(W, rs, NULL, bb, pin, n_out, n_in, out, 0)
            else:                           # the active rows, prefetched PF_AHEAD ahead
                sb_dot_rows(W, rs, ids_s, bb, pin, n, n_in, out, PF_AHEAD)
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
        if wk.full[l - 1]:                  # dp = sum_i d[i] W[j_i], the rows in active-set order
            sb_axpy_rows(W, rs, ids_s, d, n, dp, n_in, 0)
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
