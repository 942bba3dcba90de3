# cython: language_level=3
"""The core's parallel passes, as nogil functions over the shared Net / Work structs (the per-sample
and per-row kernels they run are in net_sample.pxd and net_kernels.pxd):

  samples_pass    every sample of a batch: active sets, forward, loss, backward (training), or the
                  hidden layers / top-k (inference); one sample per loop iteration
  bucket_pass     the counting sorts of every layer's (sample, position) entries by row, one layer a thread
  update_pass     one layer's touched rows: gradient and optimiser step, one row per iteration
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


cdef inline void bucket_pass(BucketJob* bj, int L, int b, int nt) noexcept nogil:
    """bucket_rows for every layer with a job (bj[l].active), the layers concurrently; sets bj[l].n_rows."""
    cdef int lq
    with parallel(num_threads=min(nt, L)):
        for lq in prange(L, schedule="static", chunksize=1):
            if bj[lq].active:
                bj[lq].n_rows = bucket_rows(b, bj[lq].ids, bj[lq].off, bj[lq].cnt_s, bj[lq].cnt,
                                            bj[lq].rstart, bj[lq].touched, bj[lq].ent_s,
                                            bj[lq].ent_pos, bj[lq].n_total)


cdef inline void update_pass(Net* net, Work* wk, Upd* u, BucketJob* bj, int nt) noexcept nogil:
    """update_row for the u.n_rows touched rows of one layer (dynamic schedule, 16 rows a chunk), then
    the layer's row counters cleared for the next step (when it was bucketed)."""
    cdef int t, tid = 0, n_rows = u.n_rows
    with parallel(num_threads=nt):
        tid = threadid()
        for t in prange(n_rows, schedule="dynamic", chunksize=16):
            update_row(net, wk, u, t, tid)
    if bj.active:
        for t in range(n_rows):
            bj.cnt[bj.touched[t]] = 0


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


cdef inline void bias0_pass(Work* wk, Upd* u, float* bb, int b, int h, int nt, const long* offs, const int* ns,
                            int* cnt, int* rs, int* tch, int* es, int* ep) noexcept nogil:
    """Biases of layer 0 (indexed by neuron, while its weight rows are indexed by feature): a full layer
    in parallel over its h neurons; a sampled one over the neurons its samples touched (bucketed by
    bucket_rows from the per-sample offsets / counts offs, ns into cnt, rs, tch, es, ep), serially.
    Each gradient sums the samples in ascending order."""
    cdef int j, s, e, t, n_rows
    cdef float g
    if wk.full[0]:
        for j in prange(h, num_threads=nt, schedule="static"):
            g = 0.0
            for s in range(b):
                g = g + wk.dlt[0][<long>s * wk.stride[0] + j]
            bias_step(u, bb, j, g)
        return
    n_rows = bucket_rows(b, wk.ids[0], offs, ns, cnt, rs, tch, es, ep, h)
    for t in range(n_rows):
        j = tch[t]
        g = 0.0
        for e in range(rs[j], cnt[j]):
            g = g + wk.dlt[0][ep[e]]
        bias_step(u, bb, j, g)
