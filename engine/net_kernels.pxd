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

This file: the shared definitions (structs, enums, hot-kernel externs) and the update kernels
(update_row, bias/row steps, bucket_rows) and topk_block; net_sample.pxd: the per-sample kernels
(choose_active .. sample_pass). engine/_core.pyx (`Core`) owns the buffers and runs these in `prange` loops; see docs/engine.md.
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
    void sb_dot_rows(const float* X, long rs, const int* idx, const float* bias, const float* x, int m, int n,
                     float* out, int pf) noexcept nogil
    void sb_dot_multi(const float* w, float bias, const float* H, long ldh, int nb, int n,
                      float* out) noexcept nogil
    float sb_dot_gather(const float* w, const int* idx, const float* val, int n) noexcept nogil
    void sb_axpy(float a, const float* x, float* y, int n) noexcept nogil
    void sb_axpy_rows(const float* X, long rs, const int* idx, const float* a, int m, float* y, int n,
                      int pf) noexcept nogil
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
    void sb_flag_set(int* f) noexcept nogil
    void sb_flag_wait(int* f) noexcept nogil
    int sb_fetch_add(int* p, int v) noexcept nogil
    void sb_barrier(int* c, int nt) noexcept nogil
    double sb_now() noexcept nogil
    void sb_dot_row_samples(const float* w, float bias, const float* H, long ldh, const int* sidx, int m,
                            int n, float* out) noexcept nogil
    void sb_axpy_row_scatter(const float* x, const int* sidx, const float* a, int m, float* Y, long ldy,
                             int n) noexcept nogil
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


cdef struct Upd:
    # one layer's update: rows and the (sample, position) entries that touched each row
    int layer
    int n_rows                 # touched rows (or all rows when `dense_rows`)
    int dense_rows             # 1: every row j in [0, n_rows) with every sample (full layer, l >= 1)
    const int* touched
    const int* rstart
    int* rend                  # the counting sort's counters: update_row reads its row's and zeroes it
    const int* ent_s
    const float* ent_val       # each entry's value: the sample's delta of the row's neuron (x value for layer 0)
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
    """Gradient of one touched row (sum over the samples that touched it, ascending) + one step; clears
    the row's counter of the counting sort (no other iteration reads it)."""
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
        u.rend[j] = 0                                  # the counter, ready for the next step's sort
        if wk.full[0] and e1 - e0 == 1:
            s = u.ent_s[e0]
            row_step_scaled(u, j, u.ent_val[e0], wk.dlt[0] + <long>s * wk.stride[0])
            return
        memset(g, 0, rl * sizeof(float))
        if wk.full[0]:                     # g = sum_e x_e dlt0[s_e], entries in ascending sample order
            sb_axpy_rows(wk.dlt[0], wk.stride[0], u.ent_s + e0, u.ent_val + e0, e1 - e0, g, rl, 0)
        else:
            for e in range(e0, e1):
                s = u.ent_s[e]
                dv = u.ent_val[e]
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
        u.rend[j] = 0
        if wk.full[l - 1] and e1 - e0 == 1:
            s = u.ent_s[e0]
            dv = u.ent_val[e0]
            row_step_scaled(u, j, dv, wk.act[l - 1] + <long>s * wk.stride[l - 1])
            bias_step(u, net.b[l], j, dv)
            return
    memset(g, 0, rl * sizeof(float))
    if not u.dense_rows and wk.full[l - 1]:
        # g = sum_e dlt_e act[s_e] over the row's entries (ascending sample order), the bias the same sum
        for e in range(e0, e1):
            gb = gb + u.ent_val[e]
        sb_axpy_rows(wk.act[l - 1], wk.stride[l - 1], u.ent_s + e0, u.ent_val + e0, e1 - e0, g, rl, 0)
        row_step(u, j, g)
        bias_step(u, net.b[l], j, gb)
        return
    for e in range(e0, e1):
        if u.dense_rows:
            s = e
            dv = wk.dlt[l][<long>s * wk.stride[l] + j]
        else:
            s = u.ent_s[e]
            dv = u.ent_val[e]
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
    const float* src           # the value of entry (s, p) is src[off[s] + p]
    float* ent_val
    int n_total


cdef inline int bucket_starts(int* cnt, int* rstart, int* touched, int n_total) noexcept nogil:
    """The middle of a counting sort by row: from the per-row counts, the touched rows in ascending
    order (returned: how many) and each one's start; cnt[j] becomes the next free slot of row j."""
    cdef int j, t, nt = 0, acc = 0
    for j in range(n_total):       # branch-free (touched has n_total + 1 slots): about half the
        touched[nt] = j            # output rows are touched, a branch here mispredicts constantly
        nt += cnt[j] != 0
    for t in range(nt):
        j = touched[t]
        rstart[j] = acc
        acc += cnt[j]
        cnt[j] = rstart[j]
    return nt


cdef inline int bucket_rows(int b, const int* ids, const long* off, const int* cnt_s, int* cnt, int* rstart,
                     int* touched, int* ent_s, const float* src, float* ent_val, int n_total) noexcept nogil:
    """Counting sort of (sample, position) entries by row id; returns the number of touched rows,
    listed in ascending row order in `touched` (memory order: the update pass streams through the
    weight arrays). Row j's entries are ent_*[rstart[j]:cnt[j]] in ascending sample order: the sample
    (ent_s) and the entry's value src[off[s] + p] (ent_val), copied here so that the update pass reads
    the values in order instead of gathering them (about 128,000 scattered loads a step at 1,000 active)."""
    cdef int s, p, j, nt
    for s in range(b):
        for p in range(cnt_s[s]):
            cnt[ids[off[s] + p]] += 1
    nt = bucket_starts(cnt, rstart, touched, n_total)
    for s in range(b):
        for p in range(cnt_s[s]):
            j = ids[off[s] + p]
            ent_s[cnt[j]] = s
            ent_val[cnt[j]] = src[off[s] + p]
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
