# cython: language_level=3
"""The row-ordered training step (`Core(out_pass="row")`, a benchmark option; docs/engine.md): the same
step as samples_pass + update_phase, with the output layer's weight rows read once per batch instead
of once per sample that has them active.

  1. per sample: active sets and the hidden layer (row_front);
  2. the output layer's (sample, position) entries sorted by row (bucket_rows_pos, one thread) while
     another sorts layer 0's; the touched rows cut into ROW_CHUNKS chunks of about equal entry counts;
  3. the output logits, a row at a time against the samples that have it active (row_forward);
  4. per sample: loss and output deltas (softmax_loss, unchanged);
  5. a chunk of rows at a time: each row's hidden-delta contributions (its old weights, scaled by the
     row's deltas, into the chunk's own [b, hidden] buffer), then its gradient and optimiser step, as
     update_row does them (row_chunk_update);
  6. per sample: the hidden deltas, the chunks' buffers summed in chunk order, ReLU mask (row_hidden_delta);
  7. layer 0's biases and rows (bias0_step, update_rows, unchanged).
One parallel block; the steps are separated by sb_barrier (spin, then yield), work handed out from
shared counters. Every value is computed by one fixed sequence of operations whatever the thread
count: per-sample and per-entry work does not depend on the thread, and each chunk has its own
buffer, summed in a fixed order. So the step is bitwise identical at any thread count, like the sample
pass; against the sample pass the logits, the loss, the output layer's deltas and its update are
bitwise the same, and the hidden deltas differ in rounding only (summed by chunk and row instead of
in each sample's active-set order). Supported: two layers, layer 0 full, the output layer sampled.
"""
from cython.parallel cimport parallel, threadid
from libc.string cimport memset, memcpy
from libc.stdint cimport uint64_t

from net_kernels cimport *
from net_sample cimport *
from net_passes cimport bias0_step, update_rows, Bias0Job

cdef enum:
    ROW_CHUNKS = 16           # chunks of output rows in steps 3 and 5 (a constant: results do not depend on nt)
    SYNC_STRIDE = 16          # ints between the block's counters (a cache line each)
    SYNC_SLOTS = 12           # counters: work counters and barriers of steps 1-7


cdef struct RowJob:
    int* ent_p                # [capacity] each output entry's position in its sample's active list
    int* chunk                # [ROW_CHUNKS + 1] touched-row index where each chunk starts
    float* dh                 # [ROW_CHUNKS * dh_stride] each chunk's hidden deltas, [b, hidden]
    long dh_stride
    int* sync                 # [SYNC_SLOTS * SYNC_STRIDE], zero on entry
    double t0                 # clock at the block's start, after steps 1-4 (thread 0), at its end
    double t_front
    double t_end


cdef inline int bucket_rows_pos(int b, const int* ids, long stride, const int* cnt_s, int* cnt, int* rstart,
                                int* touched, int* ent_s, int* ent_p, int n_total) noexcept nogil:
    """bucket_rows for the output layer before its deltas exist: the counting sort of the (sample,
    position) entries by row, recording the position (ent_p) where bucket_rows copies a value. Returns
    the number of touched rows (ascending in `touched`); row j's entries are [rstart[j], cnt[j]), in
    ascending sample order."""
    cdef int s, p, j, nt
    cdef const int* ids_s
    for s in range(b):
        ids_s = ids + <long>s * stride
        for p in range(cnt_s[s]):
            cnt[ids_s[p]] += 1
    nt = bucket_starts(cnt, rstart, touched, n_total)
    for s in range(b):
        ids_s = ids + <long>s * stride
        for p in range(cnt_s[s]):
            j = ids_s[p]
            ent_s[cnt[j]] = s
            ent_p[cnt[j]] = p
            cnt[j] += 1
    return nt


cdef inline void split_chunks(const int* touched, const int* rstart, const int* rend, int n_rows, int* chunk) noexcept nogil:
    """chunk[c] = the first touched-row index whose entries start at or after c / ROW_CHUNKS of all."""
    cdef int c, lo, hi, mid
    cdef long total = 0, want
    if n_rows > 0:
        total = rend[touched[n_rows - 1]]
    chunk[0] = 0
    chunk[ROW_CHUNKS] = n_rows
    for c in range(1, ROW_CHUNKS):
        want = (total * c + ROW_CHUNKS - 1) // ROW_CHUNKS
        lo = chunk[c - 1]
        hi = n_rows
        while lo < hi:
            mid = (lo + hi) // 2
            if rstart[touched[mid]] < want:
                lo = mid + 1
            else:
                hi = mid
        chunk[c] = lo


cdef inline int row_front(Net* net, Work* wk, int s, int tid) noexcept nogil:
    """Step 1 for sample s: every layer's active set (the same RNG stream as sample_pass) and the
    hidden layers' forward; the output layer's logits wait for step 3."""
    cdef int L = net.n_layers, l, rc, ny = 0
    cdef uint64_t rng = seed_for(net.seed ^ wk.stream, wk.sample_base + s)
    for l in range(L):
        rc = choose_active(net, wk, l, s, s, tid, &rng, &ny)
        if rc != 0:
            return rc
        if l < L - 1:
            forward_layer(net, wk, l, s, s)
    return 0


cdef inline void row_forward(Net* net, Work* wk, Upd* u, const int* ent_p, float* val, int t0, int t1) noexcept nogil:
    """Step 3 for touched rows t0..t1-1: each row's logits for the samples that have it active
    (sb_dot_row_samples into val, the entries' value slots, then to each sample's logit slot)."""
    cdef int l = net.n_layers - 1, t, j, e, e0, e1, n_in = net.sizes[l]
    cdef const float* W = net.W[l]
    cdef long rs = net.rs[l], so = wk.stride[l]
    cdef const float* bb = net.b[l]
    cdef float* out = wk.act[l]
    for t in range(t0, t1):
        if t + PF_AHEAD < t1:
            sb_prefetch_row(W + <long>u.touched[t + PF_AHEAD] * rs, n_in)
        j = u.touched[t]
        e0 = u.rstart[j]
        e1 = u.rend[j]
        sb_dot_row_samples(W + <long>j * rs, bb[j], wk.act[l - 1], wk.stride[l - 1], u.ent_s + e0, e1 - e0,
                           n_in, val + e0)
        for e in range(e0, e1):
            out[<long>u.ent_s[e] * so + ent_p[e]] = val[e]


cdef inline void row_chunk_update(Net* net, Work* wk, Upd* u, RowJob* rj, float* val, int c, int tid) noexcept nogil:
    """Step 5 for chunk c: for each of its rows, the deltas of its entries (gathered into val), their
    hidden-delta contributions with the row's weights before the step (into the chunk's buffer), then
    the row's gradient and step and its bias's, as update_row does them (same sums, same order)."""
    cdef int l = net.n_layers - 1, t, t0 = rj.chunk[c], t1 = rj.chunk[c + 1], j, e, e0, e1, s
    cdef int n_in = net.sizes[l], rl = u.row_len
    cdef float* dh = rj.dh + <long>c * rj.dh_stride
    cdef const float* d = wk.dlt[l]
    cdef long so = wk.stride[l], ldh = wk.stride[l - 1]
    cdef const float* H = wk.act[l - 1]
    cdef float* g = u.grad + <long>tid * u.grad_stride
    cdef float gb, dv
    memset(dh, 0, <long>wk.b * n_in * sizeof(float))
    for t in range(t0, t1):
        if t + u.pf < t1:
            prefetch_update_row(u, u.touched[t + u.pf])
        j = u.touched[t]
        e0 = u.rstart[j]
        e1 = u.rend[j]
        u.rend[j] = 0                    # the counter, ready for the next step's sort
        gb = 0.0
        for e in range(e0, e1):
            dv = d[<long>u.ent_s[e] * so + rj.ent_p[e]]
            val[e] = dv
            gb = gb + dv
        sb_axpy_row_scatter(u.W + <long>j * u.rs, u.ent_s + e0, val + e0, e1 - e0, dh, n_in, n_in)
        if e1 - e0 == 1:
            s = u.ent_s[e0]
            row_step_scaled(u, j, val[e0], H + <long>s * ldh)
            bias_step(u, net.b[l], j, val[e0])
        else:
            memset(g, 0, rl * sizeof(float))
            sb_axpy_rows(H, ldh, u.ent_s + e0, val + e0, e1 - e0, g, rl, 0)
            row_step(u, j, g)
            bias_step(u, net.b[l], j, gb)


cdef inline void row_hidden_delta(Net* net, Work* wk, RowJob* rj, int s) noexcept nogil:
    """Step 6 for sample s: its hidden deltas, the chunks' contributions summed in chunk order, times
    the ReLU's derivative; zero for a sample without labels (as the sample pass leaves it)."""
    cdef int l = net.n_layers - 2, c, k, n = net.sizes[l + 1]
    cdef float* dst = wk.dlt[l] + <long>s * wk.stride[l]
    cdef const float* a = wk.act[l] + <long>s * wk.stride[l]
    cdef const float* src
    if wk.n_lab[s] == 0:
        memset(dst, 0, n * sizeof(float))
        return
    memcpy(dst, rj.dh + <long>s * n, n * sizeof(float))
    for c in range(1, ROW_CHUNKS):
        src = rj.dh + <long>c * rj.dh_stride + <long>s * n
        for k in range(n):
            dst[k] = dst[k] + src[k]
    for k in range(n):
        if not (a[k] > 0.0):
            dst[k] = 0.0


cdef inline int row_train_pass(Net* net, Work* wk, Upd* us, BucketJob* bj, Bias0Job* z, RowJob* rj,
                               int nt) noexcept nogil:
    """Steps 1-7 (above) in one parallel block; returns -1 when a sample's LSH query failed."""
    cdef int tid = 0, i, lo = net.n_layers - 1
    cdef int* sy = rj.sync
    cdef BucketJob* bo = &bj[lo]
    cdef BucketJob* b0 = &bj[0]
    rj.t0 = sb_now()
    with parallel(num_threads=nt):
        tid = threadid()
        i = sb_fetch_add(&sy[0], 1)                              # 1. per sample
        while i < wk.b:
            if row_front(net, wk, i, tid) != 0:
                wk.err = -1
            i = sb_fetch_add(&sy[0], 1)
        sb_barrier(&sy[1 * SYNC_STRIDE], nt)
        if wk.err == 0:
            if tid == 0:                                         # 2. the sorts
                us[lo].n_rows = bucket_rows_pos(wk.b, bo.ids, wk.stride[lo], bo.cnt_s, bo.cnt, bo.rstart,
                                                bo.touched, bo.ent_s, rj.ent_p, bo.n_total)
                split_chunks(bo.touched, bo.rstart, bo.cnt, us[lo].n_rows, rj.chunk)
            if tid == nt - 1:
                us[0].n_rows = bucket_rows(wk.b, b0.ids, b0.off, b0.cnt_s, b0.cnt, b0.rstart, b0.touched,
                                           b0.ent_s, b0.src, b0.ent_val, b0.n_total)
            sb_barrier(&sy[2 * SYNC_STRIDE], nt)
            i = sb_fetch_add(&sy[3 * SYNC_STRIDE], 1)            # 3. logits, a chunk of rows at a time
            while i < ROW_CHUNKS:
                row_forward(net, wk, &us[lo], rj.ent_p, bo.ent_val, rj.chunk[i], rj.chunk[i + 1])
                i = sb_fetch_add(&sy[3 * SYNC_STRIDE], 1)
            sb_barrier(&sy[4 * SYNC_STRIDE], nt)
            i = sb_fetch_add(&sy[5 * SYNC_STRIDE], 1)            # 4. loss and output deltas
            while i < wk.b:
                softmax_loss(net, wk, lo, i, i, tid, wk.n_lab[i])
                i = sb_fetch_add(&sy[5 * SYNC_STRIDE], 1)
            sb_barrier(&sy[6 * SYNC_STRIDE], nt)
            if tid == 0:
                rj.t_front = sb_now()
            i = sb_fetch_add(&sy[7 * SYNC_STRIDE], 1)            # 5. backward and update, by chunk
            while i < ROW_CHUNKS:
                row_chunk_update(net, wk, &us[lo], rj, bo.ent_val, i, tid)
                i = sb_fetch_add(&sy[7 * SYNC_STRIDE], 1)
            sb_barrier(&sy[8 * SYNC_STRIDE], nt)
            i = sb_fetch_add(&sy[9 * SYNC_STRIDE], 1)            # 6. hidden deltas
            while i < wk.b:
                row_hidden_delta(net, wk, rj, i)
                i = sb_fetch_add(&sy[9 * SYNC_STRIDE], 1)
            sb_barrier(&sy[10 * SYNC_STRIDE], nt)
            if tid == nt - 1:                                    # 7. layer 0
                bias0_step(wk, &us[0], z)
            update_rows(net, wk, &us[0], &sy[11 * SYNC_STRIDE], tid)
    rj.t_end = sb_now()
    return -1 if wk.err != 0 else 0
