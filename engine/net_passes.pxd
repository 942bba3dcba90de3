# cython: language_level=3
"""The core's parallel passes, as nogil functions over the shared Net / Work structs (the per-sample
and per-row kernels they run are in net_sample.pxd and net_kernels.pxd):

  samples_pass    every sample of a batch: active sets, forward, loss, backward (training), or the
                  hidden layers / top-k (inference); one sample per loop iteration
  update_phase    a step's updates in one block: the counting sorts of every layer's (sample, position)
                  entries by row (a layer a thread), layer 0's biases, then every layer's touched rows
                  (gradient and optimiser step, rows handed out from a shared counter)
  blocks_pass     the exact predict's output layer, blocks of PB samples

engine/_core.pyx (`Core`) allocates the buffers, fills Work and calls these; each loop's schedule is
part of the bitwise-determinism argument (docs/engine.md): no two iterations write the same memory.
"""
from cython.parallel cimport parallel, prange, threadid

from net_kernels cimport *
from net_sample cimport *


cdef inline int samples_pass(Net* net, Work* wk, int n, int nt, int chunk) noexcept nogil:
    """sample_pass for samples 0..n-1 on nt threads (dynamic schedule, `chunk` 1 or 4 samples);
    returns -1 when a sample's LSH query failed (wk.err), else 0."""
    cdef int s, tid = 0
    if chunk == 1:
        with parallel(num_threads=nt):
            tid = threadid()
            for s in prange(n, schedule="dynamic", chunksize=1):
                if sample_pass(net, wk, s, tid) != 0:
                    wk.err = -1
    else:
        with parallel(num_threads=nt):
            tid = threadid()
            for s in prange(n, schedule="dynamic", chunksize=4):
                if sample_pass(net, wk, s, tid) != 0:
                    wk.err = -1
    return -1 if wk.err != 0 else 0


cdef struct Bias0Job:
    # layer 0's biases (indexed by neuron, while its weight rows are indexed by feature); a sampled
    # layer 0 buckets its samples' active neurons into cnt / rs / tch / es / ev (cnt zero on entry)
    float* bb
    int h
    const long* offs
    const int* ns
    int* cnt
    int* rs
    int* tch
    int* es
    float* ev


cdef inline void bias0_step(Work* wk, Upd* u, Bias0Job* z) noexcept nogil:
    """Every layer-0 bias's gradient and step, serially (h neurons: a full layer sums the b samples per
    neuron; a sampled one buckets the neurons its samples touched). Each sum in ascending sample order."""
    cdef int j, s, e, t, n_rows, b = wk.b
    cdef float g
    if wk.full[0]:
        for j in range(z.h):
            g = 0.0
            for s in range(b):
                g = g + wk.dlt[0][<long>s * wk.stride[0] + j]
            bias_step(u, z.bb, j, g)
        return
    n_rows = bucket_rows(b, wk.ids[0], z.offs, z.ns, z.cnt, z.rs, z.tch, z.es, wk.dlt[0], z.ev, z.h)
    for t in range(n_rows):
        j = z.tch[t]
        g = 0.0
        for e in range(z.rs[j], z.cnt[j]):
            g = g + z.ev[e]
        bias_step(u, z.bb, j, g)


cdef inline void update_rows(Net* net, Work* wk, Upd* u, int* next_row, int tid) noexcept nogil:
    """update_row for the touched rows of one layer that this thread takes, 16 at a time from the
    shared counter next_row (every row exactly once over the team)."""
    cdef int t, t1, t0 = sb_fetch_add(next_row, 16), n = u.n_rows
    while t0 < n:
        t1 = t0 + 16 if t0 + 16 < n else n
        for t in range(t0, t1):
            update_row(net, wk, u, t, tid)
        t0 = sb_fetch_add(next_row, 16)


cdef inline void update_phase(Net* net, Work* wk, Upd* us, BucketJob* bj, Bias0Job* z, int L,
                              int nt) noexcept nogil:
    """The update phase of a training step in one parallel block (one fork, where there was one per
    layer: a fork or barrier under OMP_WAIT_POLICY=PASSIVE cost ~0.1 ms on the 2-core VM):
      1. the layers' counting sorts (bucket_rows), a layer a thread (the output layer's, ~1 ms at
         128 x 1,000 entries, is the long one); the thread that sorted layer 0 then steps its biases;
      2. every layer's touched rows (update_row), handed out 16 at a time from a shared counter; a
         thread starts on layer l once layer l is sorted (a flag: the sort's writes are visible), so the
         thread done with a short sort updates layer 0 while another still sorts the output layer.
    No two iterations write the same memory and each row's sum has a fixed order, as before: the result
    does not depend on nt or on which thread does what."""
    cdef int l, lu, tid = 0
    cdef int sync[MAXL * 32]          # per layer: "sorted" flag at [32 l], next row at [32 l + 16]
    cdef int* sy = &sync[0]
    for l in range(L):
        sy[32 * l] = 0 if bj[l].active else 1
        sy[32 * l + 16] = 0
    with parallel(num_threads=nt):
        tid = threadid()
        for l in prange(L, schedule="static", chunksize=1):
            if bj[l].active:
                us[l].n_rows = bucket_rows(wk.b, bj[l].ids, bj[l].off, bj[l].cnt_s, bj[l].cnt,
                                           bj[l].rstart, bj[l].touched, bj[l].ent_s, bj[l].src, bj[l].ent_val,
                                           bj[l].n_total)
            if l == 0:
                bias0_step(wk, &us[0], z)
            sb_flag_set(&sy[32 * l])
        for lu in range(L):
            sb_flag_wait(&sy[32 * lu])
            update_rows(net, wk, &us[lu], &sy[32 * lu + 16], tid)


cdef inline void blocks_pass(Net* net, Work* wk, int n, int k, int nt, int* cnt, float* buf) noexcept nogil:
    """The exact predict's output layer over the hidden activations wk.H: blocks of PB samples in
    parallel, each output row read once per block (topk_block); cnt / buf: PBS ints / floats a thread."""
    cdef int blk, s0, nb, tid = 0, nblk = (n + PB - 1) // PB
    with parallel(num_threads=nt):
        tid = threadid()
        for blk in prange(nblk, schedule="dynamic", chunksize=1):
            s0 = blk * PB
            nb = n - s0
            if nb > PB:
                nb = PB
            topk_block(net, wk.H, s0, nb, k, wk.topv, wk.topi, &cnt[tid * PBS], &buf[tid * PBS])
