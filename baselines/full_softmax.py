"""tf_full_softmax: sparse input -> hidden ReLU -> dense softmax over every label (TensorFlow).

Loss: the engine's (softmax cross-entropy against soft targets 1/|y| on each true label, summed over
the batch's samples and divided by the number of samples; samples without labels contribute 0).
Labels are fed sparse (row ids, label ids, weights 1/|y|); the target term is a gather of the true
labels' logits and a segment sum, never a dense label matrix.

``import slidebench.baselines.full_softmax`` does not import TensorFlow; ``setup`` does.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from .base import TFTrainerBase

#: Named configurations; every key explicit. Experiment files pick one with config = "paper"|"tuned"
#: and may override any key (unknown keys are a ValueError).
CONFIGS: dict[str, dict[str, Any]] = {
    # The 2019 baseline in TF2 form: sparse-dense matmul input layer (dense gradient), Keras Adam (dense
    # state update of every weight, the input matrix included), no XLA, the release's init.
    "paper": {
        "device": "cpu", "hidden": [128], "optimizer": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999,
        "eps": 1e-8, "init": "release", "init_std": 0.01,
        "input_path": "sparse_matmul", "optimizer_impl": "keras", "xla": False, "xla_update": False,
        "inter_op_threads": None, "predict_batch": 4096,
    },
    # The strongest honest configuration found (docs/baselines.md): gather-based input layer with a
    # row-sparse gradient, lazy Adam on the touched input rows (dense Adam on the dense layers), the
    # whole step compiled with XLA on fixed (padded) shapes.
    "tuned": {
        "device": "cpu", "hidden": [128], "optimizer": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999,
        "eps": 1e-8, "init": "release", "init_std": 0.01,
        "input_path": "gather", "optimizer_impl": "rowsparse", "xla": True, "xla_update": False,
        "inter_op_threads": None, "predict_batch": 4096,
    },
}


class FullSoftmaxTrainer(TFTrainerBase):
    """Dense full-softmax baseline (system name ``tf_full_softmax``)."""

    system: ClassVar[str] = "tf_full_softmax"
    CONFIGS: ClassVar[dict[str, dict[str, Any]]] = CONFIGS
    EXTRA_KEYS: ClassVar[dict[str, str]] = {}
    OUT_ROWS: ClassVar[bool] = False

    def _encode_y(self, Y: sp.csr_matrix) -> tuple:
        b = Y.shape[0]
        counts = np.diff(Y.indptr)
        lab_row = np.repeat(np.arange(b, dtype=np.int32), counts)
        lab_idx = Y.indices
        with np.errstate(divide="ignore"):
            inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0).astype(np.float32)
        lab_w = inv[lab_row]
        has = (counts > 0).astype(np.float32)
        if self.xla:
            m = len(lab_idx)
            pad = self.lab_cap - m
            lab_row = np.concatenate([lab_row, np.zeros(pad, np.int32)])
            lab_idx = np.concatenate([lab_idx, np.zeros(pad, np.int32)])
            lab_w = np.concatenate([lab_w, np.zeros(pad, np.float32)])
            has = np.concatenate([has, np.zeros(self.batch_size - b, np.float32)])
        return (lab_row, lab_idx, lab_w, has, np.float32(b))

    def _y_signature(self) -> list:
        tf = self.tf
        return [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.float32)]

    def _loss(self, h, yargs):
        tf = self.tf
        lab_row, lab_idx, lab_w, has, n_real = yargs
        logits = self._full_logits(h)                                       # [b, n_labels]
        lse = tf.reduce_logsumexp(logits, axis=1)                           # [b]
        true_logits = tf.gather_nd(logits, tf.stack([lab_row, lab_idx], axis=1))
        target = tf.math.unsorted_segment_sum(lab_w * true_logits, lab_row, self._nseg(tf.shape(h, out_type=tf.int64)[0]))
        return tf.reduce_sum(has * lse - target) / n_real
