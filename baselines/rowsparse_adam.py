"""Row-sparse (lazy) Adam and plain SGD for the TensorFlow baselines (``optimizer_impl = "rowsparse"``).

Dense gradients get the textbook Adam update (epsilon added to ``sqrt(v_hat)``, as the engine).
Row-sparse gradients (``tf.IndexedSlices``) update only the touched rows of the weights and of both
moments, with the global step's bias correction: the semantics of TF1's ``LazyAdamOptimizer`` and of
the engine. Untouched rows keep their moments (they do not decay) and do not move.

The functions here are traced inside the trainers' ``tf.function`` step (or, with ``xla_update``, a
nested ``jit_compile=True`` function); nothing imports TensorFlow at module import time: the caller
passes its ``tf`` module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RowSparseState:
    """Optimiser state: the step counter and, for Adam, one first and second moment per variable."""

    optimizer: str                     # "adam" | "sgd"
    lr: float
    beta1: float
    beta2: float
    eps: float
    t: Any = None                      # tf.Variable float32 scalar: steps taken
    ms: list = field(default_factory=list)
    vs: list = field(default_factory=list)

    def variables(self) -> list:
        """Every state variable a step changes (for save/restore around the warm-up step)."""
        return [self.t] + list(self.ms) + list(self.vs)


def make_state(tf, variables: list, hp: dict[str, Any]) -> RowSparseState:
    """Zero state for ``variables``; ``hp`` holds optimizer, lr, beta1, beta2, eps."""
    st = RowSparseState(optimizer=hp["optimizer"], lr=float(hp["lr"]), beta1=float(hp["beta1"]),
                        beta2=float(hp["beta2"]), eps=float(hp["eps"]))
    st.t = tf.Variable(0.0, dtype=tf.float32, name="adam_t")
    if st.optimizer == "adam":
        st.ms = [tf.Variable(tf.zeros_like(v), name=v.name.split(":")[0] + "_m") for v in variables]
        st.vs = [tf.Variable(tf.zeros_like(v), name=v.name.split(":")[0] + "_v") for v in variables]
    return st


def sum_repeated_rows(tf, g):
    """An IndexedSlices with distinct indices: the rows of repeated ids summed (scatters need distinct ids)."""
    idx, inv = tf.unique(g.indices)
    return tf.IndexedSlices(tf.math.unsorted_segment_sum(g.values, inv, tf.shape(idx)[0]), idx)


def pad_rows(tf, g, cap: int, pad_row):
    """Pad an IndexedSlices to ``cap`` rows (a fixed shape for XLA). The padding points at ``pad_row`` (a
    spare row never used by the model) and carries a zero gradient, so its moments stay 0 and its update
    is exactly 0."""
    idx, gv = g.indices, g.values
    pad = cap - tf.shape(idx)[0]
    idx = tf.concat([idx, tf.fill([pad], tf.cast(pad_row, idx.dtype))], axis=0)
    gv = tf.pad(gv, tf.stack([tf.stack([0, pad])] + [[0, 0]] * (len(gv.shape) - 1)))
    return tf.IndexedSlices(gv, idx)


def update(tf, state: RowSparseState, variables: list, grads: list) -> None:
    """One Adam / SGD step. Every IndexedSlices in ``grads`` must have distinct indices (except zero-valued
    padding rows, whose update is 0 whatever they repeat)."""
    lr = tf.constant(state.lr, tf.float32)
    if state.optimizer == "sgd":
        for var, g in zip(variables, grads):
            if isinstance(g, tf.IndexedSlices):
                var.scatter_sub(tf.IndexedSlices(lr * g.values, g.indices))
            else:
                var.assign_sub(lr * g)
        return
    b1, b2, eps = (tf.constant(x, tf.float32) for x in (state.beta1, state.beta2, state.eps))
    t = state.t.assign_add(1.0)
    c1 = 1.0 - tf.pow(b1, t)
    c2 = 1.0 - tf.pow(b2, t)
    for var, m, v, g in zip(variables, state.ms, state.vs, grads):
        if isinstance(g, tf.IndexedSlices):
            idx, gv = g.indices, g.values
            m_rows = b1 * tf.gather(m, idx) + (1.0 - b1) * gv
            v_rows = b2 * tf.gather(v, idx) + (1.0 - b2) * gv * gv
            m.scatter_update(tf.IndexedSlices(m_rows, idx))
            v.scatter_update(tf.IndexedSlices(v_rows, idx))
            var.scatter_sub(tf.IndexedSlices(lr * (m_rows / c1) / (tf.sqrt(v_rows / c2) + eps), idx))
        else:
            m_new = m.assign(b1 * m + (1.0 - b1) * g)
            v_new = v.assign(b2 * v + (1.0 - b2) * g * g)
            var.assign_sub(lr * (m_new / c1) / (tf.sqrt(v_new / c2) + eps))
