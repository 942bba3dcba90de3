# cython: language_level=3
"""The compiled SLIDE network: forward, backward, Adam/SGD, samplers, predict.

Memory layout: layer 0 feature-major (row f = W0[f, :]), later layers neuron-major (row j = the
fan-in of neuron j), Adam moments beside or apart from the weights: engine/buffers.py, which
allocates them; the kernels see base pointers and row strides (net.W / M / V, rs / rsm).

A training step (out_pass="sample"): (1) net_passes.samples_pass, ``prange`` over the batch, weights
only read: active sets, forward, softmax cross-entropy over the active outputs, per-sample deltas;
(2) update_phase, ``prange`` over each layer's touched rows: the gradient summed over the samples
that touched the row in ascending sample order, then one Adam/SGD step. out_pass="row"
(net_rowpass.row_train_pass, one hidden layer) runs the output layer row by row instead, so each
touched output row is read once a step. No two threads write the same memory and every sum has a
fixed order: bitwise identical for a seed at ANY thread count (docs/engine.md).

Per-sample randomness (the `random` sampler and the padding up to min_active) comes from a
splitmix64 stream seeded by (engine seed, global sample index), not from thread-local state, for the
same reason.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
from libc.math cimport expf, logf, sqrtf, isnan, acosf, powf
from libc.stdint cimport uint64_t
from cpython.pycapsule cimport PyCapsule_GetPointer

import time

import numpy as np

from lsh_kernels cimport *
from lsh_hash cimport *
from lsh_tables cimport *
from lsh_query cimport *

from net_kernels cimport *
from net_sample cimport *
from net_passes cimport *
from net_rowpass cimport *

from slidebench.engine._lsh_config import QUERY_MODES
from slidebench.engine.config import check_core_args
from slidebench.engine.buffers import (Scratch, RowBuffers, aligned_zeros as _aligned_zeros, pad as _pad,
                                       alloc_rows, step_constants, active_sets)

SAMPLERS = {"full": SAMP_FULL, "lsh": SAMP_LSH, "random": SAMP_RANDOM}
LAYOUTS = {"soa": LAYOUT_SOA, "mv": LAYOUT_MV, "wmv": LAYOUT_WMV}


def kernels_dispatch() -> str:
    """How the hot kernels were compiled (target_clones dispatch or a single native version)."""
    return sb_kernels_dispatch().decode()


cdef class Core:
    """Owner of the network's arrays and hash tables. Driven by engine/network.py:Network."""
    cdef Net net
    cdef list _index                       # per layer: the LSHIndex owning its tables, or None
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
    cdef object _scratch                   # per-thread arrays (buffers.Scratch)
    cdef public str out_pass               # "sample" (samples_pass + update_phase) or "row" (row_train_pass)
    cdef object _rowbuf                    # row_train_pass's buffers (buffers.RowBuffers)

    def __init__(self, sizes, samplers, targets, min_active, *, str optimizer, double lr, double b1,
                 double b2, double eps, str query_mode, int min_hits, unsigned long long seed,
                 int n_threads, str layout="wmv,soa", lsh_caps=None, rand_blocks=None, bint correct=False,
                 str out_pass="sample"):
        cdef int l, L = len(sizes) - 1
        parts = check_core_args(L, MAXL, sizes, optimizer, query_mode, QUERY_MODES, layout, list(LAYOUTS),
                                out_pass, samplers)
        self.out_pass = out_pass
        self._rowbuf = None
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
        self._index = [None] * L
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
        """Weight and Adam-moment rows of layer l in the chosen layout (buffers.alloc_rows). `W[l]`,
        `mW[l]`, `vW[l]` are [rows, fan] numpy views (strided when interleaved); the kernels see base
        pointers and strides."""
        cdef float[:, :] v
        keep, W, mW, vW, rs, rsm = alloc_rows(self._layouts[0 if l == 0 else 1], self.opt == OPT_ADAM, rows, fan)
        self._bufs.append(keep)
        self.W.append(W); self.mW.append(mW); self.vW.append(vW)
        v = W
        self.net.W[l] = &v[0, 0]
        self.net.rs[l] = rs
        self.net.rsm[l] = rsm
        self.net.M[l] = NULL
        self.net.V[l] = NULL
        if mW is not None:
            v = mW
            self.net.M[l] = &v[0, 0]
            v = vW
            self.net.V[l] = &v[0, 0]

    cdef void _pointers(self, int l):
        cdef float[::1] bb = self.b[l]
        self.net.b[l] = &bb[0]

    # ------------------------------------------------------------------------------- tables
    def attach_tables(self, int l, index):
        """Sample layer l from `index`, an LSHIndex over its neurons (engine/_lsh.pyx), which owns and
        validates the tables; the core keeps it alive and reads its tables in the nogil pass."""
        if l < 0 or l >= self.net.n_layers:
            raise ValueError(f"layer {l} out of range")
        if index.dim != self.net.sizes[l]:
            raise ValueError(f"the tables of layer {l} hash {index.dim}-d vectors, its input has {self.net.sizes[l]}")
        self.net.tab[l] = <LSHTables*>PyCapsule_GetPointer(index._capsule(), b"slidebench.engine.LSHTables")
        self._index[l] = index
        self._scratch = None          # the query scratch is sized by the tables

    def build(self, int l, int n_threads=0):
        """The paper's 'rehash': hash every neuron of layer l with the current functions, refill."""
        cdef int rc, nt = n_threads if n_threads > 0 else self.n_threads
        cdef long n_out = self.net.sizes[l + 1], n_in = self.net.sizes[l]
        cdef long row_stride, elem_stride
        if self._index[l] is None:
            raise ValueError(f"layer {l} has no LSH tables")
        if l == 0:     # neuron j of layer 0 is column j of the feature-major matrix
            row_stride, elem_stride = 1, self.net.rs[0]
        else:
            row_stride, elem_stride = self.net.rs[l], 1
        with nogil:
            rc = lsh_build(self.net.tab[l], self.net.W[l], n_out, row_stride, elem_stride, nt)
        if rc != 0:
            if rc == SB_LSH_ENOMEM:
                raise MemoryError(f"out of memory while building the LSH tables of layer {l}")
            raise RuntimeError(f"lsh_build failed for layer {l} (code {rc})")

    # ------------------------------------------------------------------------------- scratch
    cdef object _get_scratch(self, int nt):
        """Per-thread scratch (buffers.Scratch), grown when more threads are asked for."""
        cdef int l, L = self.net.n_layers
        cdef long qsb = 64, hs = 64
        if self._scratch is None or self._scratch.nt < nt:
            for l in range(L):
                if self.net.tab[l] != NULL:
                    qsb = max(qsb, 20L * min(<long>self.net.tab[l].L * self.net.tab[l].bucket_size,
                                             self.net.sizes[l + 1]))
                    hs = max(hs, <long>self.net.lsh_cap[l])
            self._scratch = Scratch(nt, max([self.net.sizes[l] for l in range(L + 1)]),
                                    max([self.net.sizes[1]] + [self.net.sizes[l] for l in range(1, L)]),
                                    qsb, hs, KEYS_STRIDE)
        return self._scratch

    cdef object _inputs(self, Work* wk, int b, int[::1] xptr, int[::1] xind, float[::1] xval, int nt):
        """Zero `wk` and point it at a batch's CSR rows and the per-thread scratch (returned)."""
        memset(wk, 0, sizeof(Work))
        wk.b = b
        wk.xptr = &xptr[0]; wk.xind = &xind[0] if xind.shape[0] else NULL
        wk.xval = &xval[0] if xval.shape[0] else NULL
        sc = self._get_scratch(nt)
        self._attach_scratch(wk, sc)
        return sc

    cdef void _attach_scratch(self, Work* wk, object sc):
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
        """Fill the per-layer buffers of `wk` (arrays appended to `keep` to stay alive); returns the
        per-layer active-id (None for a full layer) and active-count arrays."""
        cdef int l, L = self.net.n_layers, n_out, cap
        cdef int[::1] iv
        cdef float[::1] fv
        ids, nact = [None] * L, [None] * L
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
            a = np.zeros(slots, np.int32); keep.append(a); iv = a; wk.nact[l] = &iv[0]; nact[l] = a
            if wk.full[l]:
                wk.ids[l] = NULL
            else:
                a = _aligned_zeros(<long>slots * cap, np.int32); keep.append(a); iv = a; wk.ids[l] = &iv[0]
                ids[l] = a
        return ids, nact

    # ------------------------------------------------------------------------------- training
    def train_batch(self, int[::1] xptr, int[::1] xind, float[::1] xval, int[::1] yptr, int[::1] yind,
                    int b, int max_labels, bint keep_active=False):
        """One optimiser step on a batch (inputs already validated by Network). Returns
        (mean loss, stats dict)."""
        cdef Work wk
        cdef Net* net = &self.net
        cdef int nt = max(1, min(self.n_threads, b)), tid = 0, s, l, L = net.n_layers
        cdef list keep = []
        cdef float[::1] f1, f2
        cdef int[::1] i1
        cdef float[::1] lossv
        cdef int[::1] ncand
        cdef Upd u
        cdef RowJob rj
        cdef Upd us[MAXL]
        cdef BucketJob bj[MAXL]
        cdef Bias0Job z
        cdef int rc
        cdef double loss_sum
        cdef object sc
        for l in range(L):
            if net.samp[l] == SAMP_LSH and self._index[l] is None:
                raise RuntimeError(f"layer {l} uses the lsh sampler but has no tables")
        sc = self._inputs(&wk, b, xptr, xind, xval, nt)
        wk.training = 1
        wk.sample_base = self.samples_seen
        wk.yptr = &yptr[0]; wk.yind = &yind[0] if yind.shape[0] else NULL
        f2 = sc.grad
        ids_arr, nact_arr = self._setup_work(&wk, b, b, 1, 0, max_labels, keep)
        parts = np.zeros((3, b), np.int32); keep.append(parts)
        i1 = parts[0]; wk.n_lab = &i1[0]
        i1 = parts[1]; wk.n_lsh = &i1[0]
        i1 = parts[2]; wk.n_rand = &i1[0]
        if self.net.correct:
            lqa = _aligned_zeros(<long>b * wk.stride[L - 1], np.float32); keep.append(lqa)
            f1 = lqa; wk.logq = &f1[0]
        lossv = np.zeros(b, np.float32); keep.append(lossv); wk.loss = &lossv[0]
        ncand = np.full(b, -1, np.int32); wk.n_cand = &ncand[0]
        # ---- the optimiser's step constants (Adam's bias corrections at step + 1)
        memset(&u, 0, sizeof(Upd))
        u.opt = self.opt
        u.b1 = self.b1; u.b2 = self.b2
        u.pf = PF_UPD
        u.grad = &f2[0]; u.grad_stride = sc.grad_stride
        u.lr_t, u.eps_t = step_constants(self.opt == OPT_ADAM, self.lr, self.b1, self.b2, self.eps, self.step + 1)
        stats = {}
        t_a = time.perf_counter()
        if self.out_pass == "row":    # net_rowpass.row_train_pass: the whole step in one block
            self._update_jobs(&wk, &u, us, bj, b, xptr, keep, 1)
            self._bias0_job(&wk, &z, b, keep)
            self._row_job(&rj, b, wk.stride[L - 1], net.sizes[L - 1])
            with nogil:
                rc = row_train_pass(net, &wk, us, bj, &z, &rj, nt)
            if rc != 0:
                raise RuntimeError("LSH query failed during training")
            t_b = t_a + (rj.t_front - rj.t0)
        else:                         # per-sample pass (net_passes.samples_pass), then update_phase
            with nogil:
                rc = samples_pass(net, &wk, b, nt, 1)
            if rc != 0:
                raise RuntimeError("LSH query failed during training")
            t_b = time.perf_counter()
            self._update_jobs(&wk, &u, us, bj, b, xptr, keep, 0)
            self._bias0_job(&wk, &z, b, keep)
            with nogil:
                update_phase(net, &wk, us, bj, &z, L, nt)
        self.step += 1
        loss_sum = 0.0
        for s in range(b):
            loss_sum += lossv[s]
        for l in range(L):
            stats[f"touched_rows_layer{l}"] = us[l].n_rows
        stats["touched_rows_out"] = us[L - 1].n_rows
        self.samples_seen += b
        stats["time_forward_backward_s"] = t_b - t_a
        stats["time_update_s"] = time.perf_counter() - t_b
        n_act = nact_arr[L - 1][:b]
        if keep_active:      # debug hook for tests: each sample's active set (ids) in every layer
            stats.update(active_sets(ids_arr, nact_arr, [wk.full[l] for l in range(L)],
                                     [net.sizes[l + 1] for l in range(L)], [wk.stride[l] for l in range(L)],
                                     b, parts, lqa if self.net.correct else None))
        stats.update(mean_active_out=float(n_act.mean()), active_labels=float(parts[0].mean()),
                     active_lsh=float(parts[1].mean()), active_random=float(parts[2].mean()))
        nc = np.asarray(ncand)
        stats["mean_lsh_candidates"] = float(nc[nc >= 0].mean()) if (nc >= 0).any() else float("nan")
        return loss_sum / b, stats

    cdef _update_jobs(self, Work* wk, Upd* u, Upd* us, BucketJob* bj, int b, int[::1] xptr, list keep,
                      int row):
        """Every layer's update job (us) and counting-sort job (bj) for update_phase, or with `row` for
        row_train_pass, whose sorts run before the output layer's active counts are known here (its
        entries sized by capacity, counts read from wk.nact inside the block)."""
        cdef int l, s, L = self.net.n_layers, n_out, n_ent
        cdef float[::1] f1, f3
        cdef int[::1] i1, i2, i3, i4, i5
        cdef long[::1] offs
        for l in range(L):
            us[l] = u[0]
            us[l].layer = l
            n_out = self.net.sizes[l + 1]
            us[l].row_len = n_out if l == 0 else self.net.sizes[l]
            us[l].W = self.net.W[l]; us[l].rs = self.net.rs[l]
            us[l].M = self.net.M[l]; us[l].V = self.net.V[l]; us[l].rsm = self.net.rsm[l]
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
                    bj[l].n_total = self.net.sizes[0]
                else:
                    i4 = np.asarray(<int[:b]> wk.nact[l]).copy()
                    for s in range(b):
                        offs[s] = <long>s * wk.stride[l]
                    n_ent = <int>b * wk.stride[l] if row else int(np.asarray(i4).sum())
                    bj[l].ids = wk.ids[l]
                    bj[l].n_total = n_out
                keep.append(i4)
                es = np.empty(max(n_ent, 1), np.int32); ev = np.empty(max(n_ent, 1), np.float32)
                keep.append(es); keep.append(ev)
                i5 = es; f3 = ev
                bj[l].active = 1
                bj[l].off = &offs[0]; bj[l].cnt = &i1[0]; bj[l].rstart = &i2[0]
                bj[l].cnt_s = &i4[0] if (l == 0 or not row) else wk.nact[l]
                bj[l].touched = &i3[0]; bj[l].ent_s = &i5[0]; bj[l].ent_val = &f3[0]
                bj[l].src = wk.xval if l == 0 else wk.dlt[l]
                us[l].touched = &i3[0]; us[l].rstart = &i2[0]; us[l].rend = &i1[0]
                us[l].ent_s = &i5[0]; us[l].ent_val = &f3[0]
            else:                     # a full layer l >= 1: every row, every sample
                us[l].dense_rows = 1
                us[l].n_rows = n_out
                us[l].ent_s = NULL; us[l].ent_val = NULL

    cdef _row_job(self, RowJob* rj, int b, int cap, int hidden):
        """row_train_pass's buffers (buffers.RowBuffers, kept between steps; counters zeroed)."""
        cdef int[::1] i1
        cdef float[::1] f1
        if self._rowbuf is None or not self._rowbuf.fits(b, cap, hidden):
            self._rowbuf = RowBuffers(b, cap, hidden, ROW_CHUNKS, SYNC_SLOTS * SYNC_STRIDE)
        self._rowbuf.sync[:] = 0
        memset(rj, 0, sizeof(RowJob))
        i1 = self._rowbuf.ent_p; rj.ent_p = &i1[0]
        i1 = self._rowbuf.chunk; rj.chunk = &i1[0]
        i1 = self._rowbuf.sync; rj.sync = &i1[0]
        f1 = self._rowbuf.dh; rj.dh = &f1[0]
        rj.dh_stride = self._rowbuf.dh_stride

    cdef _bias0_job(self, Work* wk, Bias0Job* z, int b, list keep):
        """Layer 0's biases for update_phase: a full layer needs nothing more; a sampled one gets the
        buffers of its counting sort (kept alive in `keep`)."""
        cdef int h = self.net.sizes[1]
        cdef int[::1] cnt, rs, tch, ns, es
        cdef float[::1] ev
        cdef long[::1] offs
        cdef float[::1] bb = self.b[0]
        memset(z, 0, sizeof(Bias0Job))
        z.bb = &bb[0]
        z.h = h
        if wk.full[0]:
            return
        cnt = np.zeros(h + 1, np.int32); rs = np.zeros(h + 1, np.int32); tch = np.zeros(h + 1, np.int32)
        ns = np.asarray(<int[:b]> wk.nact[0]).copy()
        offs = np.arange(b, dtype=np.int64) * wk.stride[0]
        n_ent = max(int(np.asarray(ns).sum()), 1)
        es = np.empty(n_ent, np.int32); ev = np.empty(n_ent, np.float32)
        keep.extend([cnt, rs, tch, ns, offs, es, ev])
        z.offs = &offs[0]; z.ns = &ns[0]; z.cnt = &cnt[0]; z.rs = &rs[0]; z.tch = &tch[0]
        z.es = &es[0]; z.ev = &ev[0]

    # ------------------------------------------------------------------------------- queries
    def hidden(self, int[::1] xptr, int[::1] xind, float[::1] xval, int n, int n_threads=0):
        """float32 [n, sizes[L-1]]: the last hidden layer's activations, every layer exact."""
        cdef Work wk
        cdef int nt = max(1, min(n_threads if n_threads > 0 else self.n_threads, max(n, 1))), tid = 0, s
        cdef list keep = []
        cdef object sc
        cdef float[::1] Hv
        H = np.zeros((n, self.net.sizes[self.net.n_layers - 1]), np.float32)
        if n == 0:
            return H
        sc = self._inputs(&wk, n, xptr, xind, xval, nt)
        wk.exact = 1; wk.per_thread = 1; wk.hidden_only = 1
        self._setup_work(&wk, n, nt, 0, 1, 0, keep)
        Hv = H.reshape(-1)
        wk.H = &Hv[0]
        with nogil:
            samples_pass(&self.net, &wk, n, nt, 4)
        return H

    # ------------------------------------------------------------------------------- predict
    def predict(self, int[::1] xptr, int[::1] xind, float[::1] xval, int n, int k, bint exact,
                int n_threads=0):
        """Top-k output ids (best first; -1 where fewer than k neurons were scored) for n rows."""
        cdef Work wk
        cdef Net* net = &self.net
        cdef int nt = max(1, min(n_threads if n_threads > 0 else self.n_threads, max(n, 1)))
        cdef int tid = 0, s, l, rc
        cdef list keep = []
        cdef unsigned char[::1] u8a, u8b
        cdef float[::1] f1, tv
        cdef int[::1] i1, ti
        cdef object sc
        out = np.full((n, k), -1, np.int32)
        if n == 0:
            return out
        if not exact:
            for l in range(net.n_layers):
                if net.samp[l] == SAMP_LSH and self._index[l] is None:
                    raise RuntimeError(f"layer {l} uses the lsh sampler but has no tables")
        sc = self._inputs(&wk, n, xptr, xind, xval, nt)
        wk.exact = exact
        wk.per_thread = 1
        wk.min_pad = k
        wk.stream = 0x5EED0F9E0D1C7ULL
        self._setup_work(&wk, n, nt, 0, exact, 0, keep)
        tv = np.empty(<long>n * k, np.float32)
        ti = out.reshape(-1)
        wk.k = k
        wk.topv = &tv[0]
        wk.topi = &ti[0]
        cdef float[::1] Hv, bufv
        cdef int[::1] cntv
        if exact:
            # hidden layers per sample, then the output layer in blocks of PB samples: each output
            # row is read once per block instead of once per sample
            wk.hidden_only = 1
            Hv = np.empty(<long>n * net.sizes[net.n_layers - 1], np.float32)
            wk.H = &Hv[0]
            bufv = _aligned_zeros(nt * PBS, np.float32)
            cntv = _aligned_zeros(nt * PBS, np.int32)
        with nogil:
            rc = samples_pass(net, &wk, n, nt, 4)
        if rc != 0:
            raise RuntimeError("LSH query failed during predict")
        if exact:
            with nogil:
                blocks_pass(net, &wk, n, k, nt, &cntv[0], &bufv[0])
        return out
