"""tf_sampled_softmax: the tf_full_softmax network trained with ``tf.nn.sampled_softmax_loss``.

Training computes logits only for the sample's true label(s) and ``num_sampled`` sampled classes
(shared by the batch); evaluation uses the full output layer. Multi-label samples are handled either
the 2019 release's way (``multilabel = "one_random"``: one true label drawn at random per sample per
step), with a padded ``num_true`` (``"padded"``: each sample's labels, cycled to fill ``num_true``
slots when it has fewer, a random cyclic window of them when it has more; every slot carries target
1/num_true; ``num_true = "max"`` gives every sample all its labels), or ``"masked"``: each of the
sample's labels once (a random window of ``num_true`` when it has more), the unused slots masked out of
the softmax, target 1/|y| per label: the multi-label softmax over {labels} + sampled classes that the
engine trains, computed here from the same sampled candidates and corrections as TF's loss. With
``padded`` a label cycled k times enters the softmax's denominator k times, which raises that label's
logit by log k during training only (log 30 for a one-label sample at num_true 30). Samples without labels contribute
0 loss, the batch loss is divided by the number of samples, as in the full softmax. Negatives come
from a ``log_uniform`` (the release), ``uniform`` or ``unigram`` (training label counts + 1) sampler;
``true_expected_count = "one"`` passes the labels' expected count as 1 (they are always in), so the
sampled-softmax correction does not cancel under a uniform sampler (docs/baselines.md).

``import slidebench.baselines.sampled_softmax`` does not import TensorFlow; ``setup`` does.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ..contract import Dataset, derive_seed
from .base import TFTrainerBase
from .config import check as _check, is_int as _is_int
from .full_softmax import CONFIGS as FULL_CONFIGS

EXTRA_KEYS = {
    "num_sampled": "sampled classes per step: a fraction of n_labels if < 1 (0.1 = the release, ~0.2 = what the "
                   "paper says was needed), else a count",
    "multilabel": "'one_random' (one random true label per sample, the release), 'padded' (num_true slots "
                  "filled with the sample's own labels, cycled) or 'masked' (each label once, unused slots masked "
                  "out of the softmax, target 1/|y| per label)",
    "num_true": "slots per sample for multilabel='padded' or 'masked': an int, 'auto' (90th percentile of labels per "
                "training sample, at most 64) or 'max' (the most labels of any training sample, at most 64)",
    "sampler": "'log_uniform' (TF's default; assumes label ids sorted by decreasing frequency), 'uniform', or "
               "'unigram' (proportional to 1 + the label's count in the training set)",
    "true_expected_count": "'sampler' (TF's default: the true logits are shifted by log of the sampler's expected "
                           "count of the label, as if labels were sampled) or 'one' (labels are always in the "
                           "candidate set: expected count 1, no shift; only the sampled logits are corrected)",
    "remove_accidental_hits": "drop sampled classes that are true labels of the sample (TF's default true)",
}

#: The 2019 release's sampled-softmax loss: 10% of classes, the log-uniform sampler (on ids that are
#: not frequency-sorted), one random true label per sample, TF's default correction.
_LOSS_PAPER = {"num_sampled": 0.1, "multilabel": "one_random", "num_true": "auto", "sampler": "log_uniform",
               "true_expected_count": "sampler", "remove_accidental_hits": True}

#: A sampled softmax that learns (docs/baselines.md, PAPER.md "What sampled training needs"): all of a
#: sample's labels, each once with target 1/|y| (num_true = the most labels of any training sample,
#: unused slots masked out of the softmax: "masked"; until 2026-12-03 "padded", whose cycled copies of a
#: label each entered the softmax's denominator, and which reached P@1 0.046-0.053 where "masked"
#: reached 0.067-0.079 at the same 1,000-1,500 steps on amazon-medium, docs/baselines.md), a uniform sampler (no assumption on how ids are ordered), the labels' expected count 1
#: (they are always in: under a uniform sampler TF's default shift of the true logits by log(S/L)
#: equals the shift of every sampled logit and cancels the correction), and num_sampled a fraction
#: that the tuning experiment (experiments/tune_*.toml) chooses; 0.1 here, overridden by the
#: experiment files with the tuned value.
_LOSS_TUNED = {"num_sampled": 0.1, "multilabel": "masked", "num_true": "max", "sampler": "uniform",
               "true_expected_count": "one", "remove_accidental_hits": True}

CONFIGS: dict[str, dict[str, Any]] = {
    # The release's sampled-softmax script in TF2 form: the full-softmax "paper" network and optimiser
    # (sparse-dense matmul input, Keras Adam with dense state updates, no XLA) with the release's loss.
    "paper": {**FULL_CONFIGS["paper"], **_LOSS_PAPER},
    # Strongest honest configuration (docs/baselines.md): the full-softmax "tuned" network (gather input
    # path, lazy Adam, here also on the sampled/true output rows) with only the update compiled by XLA
    # (ComputeAccidentalHits and the candidate samplers have no XLA kernels, so the whole step cannot
    # be), and the sampled loss set up to learn.
    "tuned": {**FULL_CONFIGS["tuned"], "xla": False, "xla_update": True, **_LOSS_TUNED},
}


SAMPLERS = ("log_uniform", "uniform", "unigram")
MULTILABEL = ("one_random", "padded", "masked")
#: the logit of a masked-out label slot or an accidental hit: exp() is 0, and 0 * (its log-softmax) is 0
#: (a -inf logit would make that product NaN)
_NEG = -1e9


def num_true_for(setting, label_counts: np.ndarray) -> int:
    """Label slots per sample for multilabel='padded': an int as given, 'auto' = the 90th percentile of
    labels per training sample, 'max' = the most labels of any sample; both at most 64 and at least 1."""
    if setting not in ("auto", "max"):
        return int(setting)
    if label_counts.size == 0:
        return 1
    v = np.percentile(label_counts, 90) if setting == "auto" else label_counts.max()
    return int(min(64, max(1, math.ceil(v))))


class SampledSoftmaxTrainer(TFTrainerBase):
    """Sampled-softmax baseline (system name ``tf_sampled_softmax``)."""

    system: ClassVar[str] = "tf_sampled_softmax"
    CONFIGS: ClassVar[dict[str, dict[str, Any]]] = CONFIGS
    EXTRA_KEYS: ClassVar[dict[str, str]] = EXTRA_KEYS
    OUT_ROWS: ClassVar[bool] = True          # tf.nn.sampled_softmax_loss wants weights [n_classes, dim]

    def _validate_extra(self, p: dict[str, Any]) -> None:
        s = self.system
        ns = p["num_sampled"]
        _check(isinstance(ns, (int, float)) and not isinstance(ns, bool) and ns > 0 and (ns < 1 or float(ns).is_integer()),
               s, "num_sampled", ns, "must be a fraction in (0, 1) or an integer count >= 1")
        _check(p["multilabel"] in MULTILABEL, s, "multilabel", p["multilabel"],
               f"must be one of {', '.join(MULTILABEL)}")
        nt = p["num_true"]
        _check(nt in ("auto", "max") or (_is_int(nt) and nt >= 1), s, "num_true", nt,
               "must be 'auto', 'max' or an int >= 1")
        _check(p["sampler"] in SAMPLERS, s, "sampler", p["sampler"], f"must be one of {', '.join(SAMPLERS)}")
        _check(p["true_expected_count"] in ("sampler", "one"), s, "true_expected_count", p["true_expected_count"],
               "must be 'sampler' or 'one'")
        _check(isinstance(p["remove_accidental_hits"], bool), s, "remove_accidental_hits", p["remove_accidental_hits"],
               "must be true or false")
        _check(not p["xla"], s, "xla", p["xla"],
               "tf.nn.sampled_softmax_loss cannot be compiled with XLA (ComputeAccidentalHits and the candidate "
               "samplers have no XLA kernels)")

    def _prepare_labels(self, data: Dataset, p: dict[str, Any]) -> None:
        L = self.n_labels
        ns = p["num_sampled"]
        self.num_sampled = int(max(1, round(ns * L))) if ns < 1 else int(ns)
        if self.num_sampled > L:
            raise ValueError(f"{self.system}: num_sampled = {self.num_sampled} exceeds n_labels = {L}")
        if p["multilabel"] == "one_random":
            self.num_true = 1
        else:
            self.num_true = num_true_for(p["num_true"], np.diff(data.Y_train.indptr))
        self._sampler_seed = derive_seed(self.seed, "tf_sampler") % (2 ** 31 - 1)
        if p["sampler"] == "unigram":      # training label counts + 1 (every label can be drawn)
            counts = np.bincount(data.Y_train.indices, minlength=L).astype(np.float64) + 1.0
            self._unigrams = counts.tolist()

    def _encode_y(self, Y: sp.csr_matrix) -> tuple:
        b = Y.shape[0]
        counts = np.diff(Y.indptr).astype(np.int64)
        has = (counts > 0).astype(np.float32)
        c = np.maximum(counts, 1)
        T = self.num_true
        masked = self.p["multilabel"] == "masked"
        if T == 1:
            off = (self._rng.random(b) * c).astype(np.int64)             # one random true label per sample
        elif masked:                  # each label once from a random start (when there are more than T)
            start = np.where(counts > T, (self._rng.random(b) * c).astype(np.int64), 0)
            off = (start[:, None] + np.arange(T)[None, :]) % c[:, None]
            mask = (np.arange(T)[None, :] < counts[:, None]).astype(np.float32)
        else:
            start = np.where(counts > T, (self._rng.random(b) * c).astype(np.int64), 0)
            off = (start[:, None] + np.arange(T)[None, :]) % c[:, None]   # cycle own labels / random window
        pos = Y.indptr[:-1].astype(np.int64)[:, None] + off.reshape(b, -1)
        if len(Y.indices):
            lab = Y.indices[np.minimum(pos, len(Y.indices) - 1)]
        else:
            lab = np.zeros((b, T), np.int64)
        labels = np.where(counts[:, None] > 0, lab, 0).astype(np.int64)     # label-less rows: masked by has
        if masked and T > 1:          # unused slots hold a repeat of a real label, masked out of the loss
            return (labels, mask, has, np.float32(b))
        return (labels, has, np.float32(b))

    def _masked(self) -> bool:
        return self.p["multilabel"] == "masked" and self.num_true > 1

    def _y_signature(self) -> list:
        tf = self.tf
        lab = [tf.TensorSpec([None, self.num_true], tf.int64)]
        if self._masked():
            lab.append(tf.TensorSpec([None, self.num_true], tf.float32))
        return lab + [tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.float32)]

    def _sampled_values(self, labels):
        """(sampled candidates, true expected counts, sampled expected counts) for one step."""
        tf = self.tf
        L, S, T, kind = self.n_labels, self.num_sampled, self.num_true, self.p["sampler"]
        if kind == "uniform":
            sv = tf.random.uniform_candidate_sampler(labels, T, S, True, L, seed=self._sampler_seed)
        elif kind == "unigram":
            sv = tf.random.fixed_unigram_candidate_sampler(labels, T, S, True, L, unigrams=self._unigrams,
                                                           seed=self._sampler_seed)
        else:
            sv = tf.random.log_uniform_candidate_sampler(labels, T, S, True, L, seed=self._sampler_seed)
        sampled, true_ec, sampled_ec = sv
        if self.p["true_expected_count"] == "one":
            true_ec = tf.ones_like(true_ec)         # labels are always in the candidate set: no shift
        return sampled, true_ec, sampled_ec

    def _sampled_loss(self, h, labels, sv):
        """Per-sample loss of tf.nn.sampled_softmax_loss with the given sampled values."""
        return self.tf.nn.sampled_softmax_loss(
            weights=self.Ws[-1], biases=self.bs[-1], labels=labels, inputs=h, num_sampled=self.num_sampled,
            num_classes=self.n_labels, num_true=self.num_true, sampled_values=sv,
            remove_accidental_hits=self.p["remove_accidental_hits"])

    def _masked_sampled_loss(self, h, labels, mask, sv):
        """Per-sample multi-label sampled softmax: logits of the sample's labels (each once; masked slots
        at _NEG) and of the sampled classes, each shifted by minus the log of its expected count as in
        tf.nn.sampled_softmax_loss, sampled classes that are labels of the sample removed (accidental
        hits), cross-entropy against 1/|y| on each label."""
        tf = self.tf
        sampled, true_ec, sampled_ec = sv
        B, T = tf.shape(labels)[0], self.num_true
        ids = tf.concat([tf.reshape(labels, [-1]), sampled], 0)      # one gather, as TF's loss does
        w = tf.gather(self.Ws[-1], ids)
        bias = tf.gather(self.bs[-1], ids)
        n_true = B * T
        tw = tf.reshape(w[:n_true], [B, T, -1])
        tl = (tf.einsum("bd,btd->bt", h, tw) + tf.reshape(bias[:n_true], [B, T])
              - tf.math.log(tf.cast(true_ec, h.dtype)))
        sl = (tf.matmul(h, w[n_true:], transpose_b=True) + bias[n_true:]
              - tf.math.log(tf.cast(sampled_ec, h.dtype)))
        if self.p["remove_accidental_hits"]:
            row, col, _ = tf.nn.compute_accidental_hits(labels, sampled, num_true=T)
            pos = tf.stack([tf.cast(row, tf.int64), tf.cast(col, tf.int64)], 1)
            sl = tf.tensor_scatter_nd_update(sl, pos, tf.fill(tf.shape(row), tf.constant(_NEG, h.dtype)))
        tl = tf.where(mask > 0, tl, tf.constant(_NEG, h.dtype))
        n = tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1.0)
        logits = tf.concat([tl, sl], 1)
        target = tf.concat([mask / n, tf.zeros_like(sl)], 1)
        return tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits)

    def _loss(self, h, yargs):
        if self._masked():
            labels, mask, has, n_real = yargs
            per = self._masked_sampled_loss(h, labels, mask, self._sampled_values(labels))
        else:
            labels, has, n_real = yargs
            per = self._sampled_loss(h, labels, self._sampled_values(labels))
        return self.tf.reduce_sum(has * per) / n_real

    def _counters(self) -> dict[str, float]:
        return {"num_sampled": float(self.num_sampled), "num_true": float(self.num_true)}

    def _sparse_cap(self, var) -> int:
        # distinct output rows touched by a step: at most every label slot of a full batch plus the samples
        if var is self.Ws[-1] or var is self.bs[-1]:
            return self.batch_size * self.num_true + self.num_sampled
        return super()._sparse_cap(var)
