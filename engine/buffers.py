"""The network core's buffers, allocated under the GIL: 64-byte aligned arrays, the weight and
Adam-moment rows of a layer in the chosen memory layout, and the per-thread scratch. engine/_core.pyx
takes base pointers and strides from these arrays and its nogil kernels (net_kernels.pxd,
net_sample.pxd, net_passes.pxd) work on them; nothing here runs per sample.

Memory layout (rows of C-contiguous float32; row r of layer l at net.W[l] + r * net.rs[l]):
  * layer 0 (input -> first layer) is feature-major: row f holds W0[f, :] (n_out floats), so a sparse
    input row touches len(x) rows;
  * layers l >= 1 are neuron-major: row j holds the fan-in of neuron j, so an active neuron is one row;
  * Adam moments: row r at net.M[l] / net.V[l] + r * net.rsm[l]. Default layout "wmv,soa": layer 0
    interleaves weight, m, v per row ([rows][3][fan], rs = rsm = 3 * fan) so a touched feature is one
    contiguous block; later layers keep three separate arrays (rs = rsm = fan). See alloc_rows."""
from __future__ import annotations

import numpy as np


def pad(n: int) -> int:
    """Round an element count up to a multiple of 64 and add 64 (per-thread / per-sample strides:
    64-byte multiples for 1- and 4-byte elements, with at least a line of padding)."""
    return ((n + 63) // 64) * 64 + 64


def aligned_zeros(n: int, dtype) -> np.ndarray:
    """Zeroed 1-d array whose data starts on a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    buf = np.zeros(n + 64 // itemsize + 1, dtype)
    off = ((-buf.ctypes.data) % 64) // itemsize
    return buf[off:off + n]


def alloc_rows(layout: str, adam: bool, rows: int, fan: int):
    """Weight and Adam-moment rows of one layer: (arrays to keep alive, W, mW, vW, rs, rsm). W, mW, vW
    are [rows, fan] float32 views (strided when interleaved; mW, vW None without Adam); rs / rsm are
    the row strides in floats of W / of the moments. "wmv": weight, m, v interleaved per row
    ([rows][3][fan]); "mv": weight apart, m and v interleaved; "soa": three separate arrays."""
    if adam and layout == "wmv":
        buf = aligned_zeros(rows * 3 * fan, np.float32).reshape(rows, 3, fan)
        return (buf,), buf[:, 0, :], buf[:, 1, :], buf[:, 2, :], 3 * fan, 3 * fan
    wbuf = aligned_zeros(rows * fan, np.float32).reshape(rows, fan)
    if not adam:
        return (wbuf,), wbuf, None, None, fan, 0
    if layout == "mv":
        mbuf = aligned_zeros(rows * 2 * fan, np.float32).reshape(rows, 2, fan)
        return (wbuf, mbuf), wbuf, mbuf[:, 0, :], mbuf[:, 1, :], fan, 2 * fan
    m_ = aligned_zeros(rows * fan, np.float32).reshape(rows, fan)
    v_ = aligned_zeros(rows * fan, np.float32).reshape(rows, fan)
    return (wbuf, m_, v_), wbuf, m_, v_, fan, fan


class Scratch:
    """Per-thread scratch of the core, allocated once and reused by every step and predict call
    (64-byte aligned; each thread's slice starts on its own cache lines):
      counts  uint8 [nt * maxn]       lsh_query hit counters (zero between uses)
      marks   uint8 [nt * maxn]       active-set membership marks (zero between uses)
      dense   float32 [nt * maxn]     densified layer input for hashing
      keys    int32 [nt * keys_stride] hash keys (keys_stride: net_kernels.pxd's KEYS_STRIDE)
      grad    float32 [nt * grad_stride] gradient row of the update pass
      qbuf    int8 [nt * qbuf_stride] topk/threshold query scratch
      hits    int32 [nt * hits_stride] hit counts of the LSH candidates
    maxn: the widest layer; maxrow: the longest weight row; qsb: query scratch bytes a thread;
    hs: the most LSH candidates a sample keeps."""

    def __init__(self, nt: int, maxn: int, maxrow: int, qsb: int, hs: int, keys_stride: int):
        self.nt = nt
        self.maxn = pad(maxn)
        self.counts = aligned_zeros(nt * self.maxn, np.uint8)
        self.marks = aligned_zeros(nt * self.maxn, np.uint8)
        self.dense = aligned_zeros(nt * self.maxn, np.float32)
        self.keys = aligned_zeros(nt * keys_stride, np.int32)
        self.grad_stride = pad(maxrow)
        self.grad = aligned_zeros(nt * self.grad_stride, np.float32)
        self.qbuf_stride = pad(qsb)
        self.qbuf = aligned_zeros(nt * self.qbuf_stride, np.int8)
        self.hits_stride = pad(hs)
        self.hits = aligned_zeros(nt * self.hits_stride, np.int32)


class RowBuffers:
    """The row-ordered training step's buffers (net_rowpass.pxd), kept between steps of one shape:
      ent_p  int32 [b * cap]                  each output entry's position in its sample's active list
      chunk  int32 [chunks + 1]               where each chunk of touched output rows starts
      dh     float32 [chunks * dh_stride]     each chunk's hidden deltas, [b, hidden] (dh_stride >= b * hidden)
      sync   int32 [n_sync]                   the block's counters (zeroed before each step)"""

    def __init__(self, b: int, cap: int, hidden: int, chunks: int, n_sync: int):
        self.b, self.cap, self.hidden = b, cap, hidden
        self.ent_p = aligned_zeros(max(b * cap, 1), np.int32)
        self.chunk = aligned_zeros(chunks + 1, np.int32)
        self.dh_stride = pad(b * hidden)
        self.dh = aligned_zeros(chunks * self.dh_stride, np.float32)
        self.sync = aligned_zeros(n_sync, np.int32)

    def fits(self, b: int, cap: int, hidden: int) -> bool:
        return b <= self.b and cap == self.cap and hidden == self.hidden


def step_constants(adam: bool, lr: float, b1: float, b2: float, eps: float, t: int) -> tuple[float, float]:
    """(lr_t, eps_t) of optimiser step t (1-based): Adam's bias corrections folded into the step size
    and epsilon, lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t), eps_t = eps * sqrt(1 - b2^t); SGD: (lr, 0)."""
    if not adam:
        return lr, 0.0
    bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    return lr * bc2 ** 0.5 / bc1, eps * bc2 ** 0.5


def active_sets(ids, nact, full, n_out, strides, b: int, parts: np.ndarray, logq=None) -> dict:
    """A training step's active sets for tests (Core.train_batch(keep_active=True)): per layer and
    sample the active ids (every id of a layer computed in full), the [b, 3] split into labels, LSH
    candidates and random neurons, and the output layer's log-inclusion corrections when it has them.
    `ids`/`nact` are the step's per-layer buffers (Core._setup_work), `strides` their slots a sample."""
    layers = []
    for l, f in enumerate(full):
        if f:
            layers.append([np.arange(n_out[l], dtype=np.int32) for _ in range(b)])
        else:
            per = ids[l][:b * strides[l]].reshape(b, strides[l])
            layers.append([per[s, :nact[l][s]].copy() for s in range(b)])
    out = {"active_layers": layers, "active": layers[-1], "active_parts": parts.T.copy()}
    if logq is not None and not full[-1]:
        lq = np.asarray(logq)[:b * strides[-1]].reshape(b, strides[-1])
        out["logq"] = [lq[s, :nact[-1][s]].copy() for s in range(b)]
    return out
