"""The TensorFlow baselines' common trainer: the network, batch encoding, the step and prediction functions.

Configuration lives in ``config.py``, TensorFlow start-up in ``tf_runtime.py``, the row-sparse Adam in
``rowsparse_adam.py``. Nothing here imports TensorFlow at module import time; ``setup`` does.

The network (the same model the engine trains): sparse input -> hidden ReLU layer(s) -> dense output
over every label. The loss is the engine's: per sample, softmax cross-entropy against soft targets
1/|y| on each true label; batch loss = sum over samples / (number of samples in the batch), samples
without labels contribute 0 loss and no gradient.

Two input paths:
  * ``sparse_matmul`` (the 2019 script's way): ``tf.sparse.sparse_dense_matmul``. Its gradient with
    respect to the input weight matrix is a *dense* [n_features, hidden] tensor.
  * ``gather``: the batch's distinct feature ids are gathered from the input matrix (an embedding
    lookup), each nonzero picks its row and is scaled by its value, and a segment sum per sample gives
    the hidden pre-activation. The gradient is row-sparse (``tf.IndexedSlices`` on the distinct ids).
Two optimiser implementations:
  * ``keras``: ``keras.optimizers.Adam`` / ``SGD`` (Keras 3), whose Adam state updates densely.
  * ``rowsparse``: ``rowsparse_adam``'s Adam/SGD: dense gradients get the textbook Adam update, row-sparse
    gradients update only the touched rows of the weights and of both moments (lazy Adam), with the
    global step's bias correction.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ..contract import Dataset, StepStats, check_csr, derive_seed
from . import rowsparse_adam
from .config import check_int, check_setup_args, require_setup, resolve_params, thread_settings
from .tf_runtime import configure_tf, keras_version, quiet_stderr
from .topk import block_top_k

# ------------------------------------------------------------------------------- initial weights


def init_weights(sizes: list[int], scheme: str, std: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Weights [fan_in, fan_out] and zero biases for consecutive layer sizes, float32, from numpy.

    'release': truncated normal (redrawn beyond 2 std, as tf.random.truncated_normal), std
    2/sqrt(fan_in+fan_out), as the 2019 TF script; 'normal': N(0, std), as the engine.
    """
    rng = np.random.default_rng(seed)
    out = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        if scheme == "release":
            s = 2.0 / math.sqrt(fan_in + fan_out)
            w = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
            bad = np.abs(w) > 2.0
            while bad.any():
                w[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
                bad = np.abs(w) > 2.0
            w *= np.float32(s)
        else:
            w = rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.float32(std)
        out.append((w, np.zeros(fan_out, np.float32)))
    return out


def top_sum(counts: np.ndarray, k: int) -> int:
    """Sum of the k largest counts: an exact upper bound of a k-row batch's total."""
    if counts.size == 0:
        return 0
    k = min(k, counts.size)
    return int(np.partition(counts, counts.size - k)[counts.size - k:].sum())


# ------------------------------------------------------------------------------- the trainer base


class TFTrainerBase:
    """Common Trainer implementation; subclasses define the loss (``_loss``) and the label encoding."""

    system: ClassVar[str] = ""
    CONFIGS: ClassVar[dict[str, dict[str, Any]]] = {}
    EXTRA_KEYS: ClassVar[dict[str, str]] = {}
    OUT_ROWS: ClassVar[bool] = False      # output weights stored [n_labels, hidden] (sampled softmax)

    def __init__(self) -> None:
        self.p: dict[str, Any] | None = None
        self.traces = 0
        self.update_traces = 0
        self._shapes_seen: set[tuple] = set()

    # ---------------------------------------------------------------- contract

    def setup(self, data: Dataset, params: dict[str, Any], *, seed: int, n_threads: int, batches=None) -> None:
        check_setup_args(self.system, seed, n_threads)
        p = resolve_params(self.system, self.CONFIGS, params, self.EXTRA_KEYS)
        self._validate_extra(p)
        data.validate()
        from .validate import preflight_memory
        preflight_memory(self.system, p, data.n_features, data.n_labels)
        t0 = time.perf_counter()
        _, inter = thread_settings(p, n_threads)          # inter-op 1 unless the config says otherwise
        tf, dev = configure_tf(n_threads, inter, p["device"])
        self.tf, self.dev, self.p = tf, dev, p
        self.seed, self.n_threads, self.inter_op_threads = int(seed), int(n_threads), int(inter)
        self.n_features, self.n_labels = data.n_features, data.n_labels
        self.batch_size = int(p["batch_size"])
        self.stream = batches if batches is not None else data.batches(self.batch_size, seed, shuffle=p["shuffle"])
        self._rng = np.random.default_rng(derive_seed(seed, "tf_baseline"))
        tf.random.set_seed(derive_seed(seed, "tf_ops") % (2 ** 31 - 1))
        self.gather = p["input_path"] == "gather"
        self.xla = bool(p["xla"])
        self.xla_update = bool(p["xla_update"]) and not self.xla      # with xla the whole step is compiled
        self.pad_x = self.xla or self.xla_update                        # fixed nnz / distinct-feature shapes
        self.spare_out = self.OUT_ROWS and self.xla_update              # spare output row: padding target
        # fixed capacities (XLA compiles per concrete shape: pad every batch to one shape)
        row_nnz = np.diff(data.X_train.indptr)
        row_lab = np.diff(data.Y_train.indptr)
        self.nnz_cap = max(1, top_sum(row_nnz, self.batch_size))
        self.uniq_cap = min(self.nnz_cap, self.n_features) + 1
        self.lab_cap = max(1, top_sum(row_lab, self.batch_size))
        self._prepare_labels(data, p)

        sizes = [self.n_features] + list(p["hidden"]) + [self.n_labels]
        init = init_weights(sizes, p["init"], float(p["init_std"]), derive_seed(seed, "init"))
        with tf.device(dev):
            self.Ws, self.bs = [], []
            for i, (w, b) in enumerate(init):
                if i == 0 and self.gather:      # one extra all-zero row: the padding target of the gather path
                    w = np.concatenate([w, np.zeros((1, w.shape[1]), np.float32)])
                if i == len(init) - 1 and self.OUT_ROWS:
                    w = np.ascontiguousarray(w.T)
                    if self.spare_out:
                        w = np.concatenate([w, np.zeros((1, w.shape[1]), np.float32)])
                        b = np.concatenate([b, np.zeros(1, np.float32)])
                self.Ws.append(tf.Variable(w, name=f"W{i}"))
                self.bs.append(tf.Variable(b, name=f"b{i}"))
            del init
            self.variables = [v for pair in zip(self.Ws, self.bs) for v in pair]
            self._build_optimizer()
            self._build_functions()
        self.steps_done = 0
        self._warmup(data)
        self.init_time_s = time.perf_counter() - t0

    def _state_variables(self) -> list:
        """Every variable a training step changes: weights and optimiser state."""
        if self.opt is not None:
            return list(self.variables) + list(self.opt.variables)
        return list(self.variables) + self.rs.variables()

    def _warmup(self, data: Dataset) -> None:
        """Trace (and under XLA compile) the step and the prediction inside the untimed setup: run one step on
        the first training rows, then restore every weight and optimiser state to the initial values, so the
        first timed step does not pay for compilation and training is unchanged. The batch order is not
        touched (the stream is not used); the sampled softmax's label RNG and TF's candidate sampler advance."""
        state = self._state_variables()
        saved = [v.numpy() for v in state]
        rows = min(self.batch_size, data.X_train.shape[0])
        args = self._encode_x(data.X_train[:rows]) + self._encode_y(data.Y_train[:rows])
        with quiet_stderr():
            float(self._step(*args))
            self.predict_topk(data.X_train[:2], 1)
        for v, a in zip(state, saved):
            v.assign(a)
        self._predict_calls = 0

    def train_steps(self, n_steps: int) -> StepStats:
        require_setup(self.system, self.p is not None, "train_steps")
        check_int(self.system, "n_steps", n_steps, 1)
        total, n_samples = 0.0, 0
        for _ in range(n_steps):
            batch = self.stream.next_batch()
            args = self._encode_x(batch.X) + self._encode_y(batch.Y)
            if self.xla:
                self._shapes_seen.add(tuple(np.shape(a) for a in args))
            if self.steps_done < 2:                 # first calls trace/compile: keep TF's noise quiet
                with quiet_stderr():
                    loss = self._step(*args)
            else:
                loss = self._step(*args)
            total += float(loss)                    # reads the value back: the step is finished
            n_samples += batch.X.shape[0]
            self.steps_done += 1
        return StepStats(n_steps=n_steps, n_samples=n_samples, loss=total / n_steps,
                         epoch=self.stream.epoch_progress, counters=self._counters())

    def predict_topk(self, X_csr: sp.csr_matrix, k: int) -> np.ndarray:
        require_setup(self.system, self.p is not None, "predict_topk")
        check_csr(X_csr, "X", self.n_features)
        check_int(self.system, "k", k, 1, self.n_labels, f"in [1, n_labels={self.n_labels}]")
        n = X_csr.shape[0]
        out = np.empty((n, k), np.int32)
        step = int(self.p["predict_batch"])
        for lo in range(0, n, step):
            Xb = X_csr[lo:lo + step]
            rows, cols = self._coo(Xb)
            with quiet_stderr() if lo == 0 and self._predict_calls == 0 else contextlib.nullcontext():
                out[lo:lo + Xb.shape[0]] = self._predict(rows, cols, Xb.data, np.int64(Xb.shape[0]),
                                                        np.int32(k)).numpy()
        self._predict_calls += 1
        return out

    def describe(self) -> dict[str, Any]:
        tf = self.tf if self.p is not None else None
        d: dict[str, Any] = {"system": self.system,
                             "config": self.p["config"] if self.p else None,
                             "n_threads": getattr(self, "n_threads", None),
                             "device": self.p["device"] if self.p else None}
        if self.p is None:
            return d
        d.update({
            "library": "tensorflow", "tf_version": tf.__version__,
            "keras_version": keras_version(),
            "tf_built_with_cuda": bool(tf.test.is_built_with_cuda()),
            "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
            "xla": self.xla, "traces": self.traces, "predict_traces": self.predict_traces,
            "xla_input_shapes": len(self._shapes_seen) if self.xla else None,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "tf_device": self.dev,
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.p.items()},
            "n_parameters": sum(int(np.prod(v.shape)) for v in self.get_params().values()),
            "xla_update": self.xla_update, "update_traces": self.update_traces,
            "capacities": {"nnz": self.nnz_cap, "uniq": self.uniq_cap, "labels": self.lab_cap} if self.pad_x else None,
            "init_time_s": self.init_time_s,
            "steps": self.steps_done,
        })
        return d

    # ---------------------------------------------------------------- parameters (engine layout)

    def get_params(self) -> dict[str, np.ndarray]:
        """{"W0": [fan_in, fan_out], "b0", "W1", "b1", ...} float32 copies, layer 0 = input->hidden."""
        if self.p is None:
            raise RuntimeError(f"{self.system}: call setup() before get_params()")
        out = {}
        last = len(self.Ws) - 1
        for i, (W, b) in enumerate(zip(self.Ws, self.bs)):
            w, bb = W.numpy(), b.numpy()
            if i == 0 and self.gather:
                w = w[:self.n_features]
            if i == last and self.OUT_ROWS:
                w, bb = w[:self.n_labels].T, bb[:self.n_labels]
            out[f"W{i}"] = np.ascontiguousarray(w, dtype=np.float32)
            out[f"b{i}"] = bb.astype(np.float32, copy=True)
        return out

    def set_params(self, d: dict[str, np.ndarray]) -> None:
        """Same layout as get_params; a missing key or shape mismatch raises ValueError. Optimiser state is kept."""
        if self.p is None:
            raise RuntimeError(f"{self.system}: call setup() before set_params()")
        expect = {k: v.shape for k, v in self.get_params().items()}
        extra = set(d) - set(expect)
        if extra:
            raise ValueError(f"{self.system}: set_params got unknown keys {sorted(extra)}; expected {sorted(expect)}")
        for k, shape in expect.items():
            if k not in d:
                raise ValueError(f"{self.system}: set_params is missing {k!r}")
            if tuple(np.shape(d[k])) != tuple(shape):
                raise ValueError(f"{self.system}: set_params {k!r} has shape {tuple(np.shape(d[k]))}, expected {tuple(shape)}")
        last = len(self.Ws) - 1
        for i, (W, b) in enumerate(zip(self.Ws, self.bs)):
            w, bb = np.asarray(d[f"W{i}"], np.float32), np.asarray(d[f"b{i}"], np.float32)
            if i == 0 and self.gather:
                w = np.concatenate([w, np.zeros((1, w.shape[1]), np.float32)])
            if i == last and self.OUT_ROWS:
                w = w.T
                if self.spare_out:
                    w = np.concatenate([w, np.zeros((1, w.shape[1]), np.float32)])
                    bb = np.concatenate([bb, np.zeros(1, np.float32)])
            W.assign(np.ascontiguousarray(w))
            b.assign(bb)

    # ---------------------------------------------------------------- batch encoding (inside the clock)

    @staticmethod
    def _coo(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        rows = np.repeat(np.arange(X.shape[0], dtype=np.int32), np.diff(X.indptr))
        return rows, X.indices

    def _encode_x(self, X: sp.csr_matrix) -> tuple:
        rows, cols = self._coo(X)
        vals = X.data
        b = X.shape[0]
        if not self.gather:
            idx = np.stack([rows.astype(np.int64), cols.astype(np.int64)], axis=1)
            return (idx, vals, np.int64(b))
        uniq, pos = np.unique(cols, return_inverse=True)
        uniq = uniq.astype(np.int32)
        pos = pos.astype(np.int32)
        if self.pad_x:  # pad to fixed shapes; padding nonzeros have value 0 and point at the all-zero spare row
            nnz, u = len(cols), len(uniq)
            pos = np.concatenate([pos, np.full(self.nnz_cap - nnz, u, np.int32)])
            uniq = np.concatenate([uniq, np.full(self.uniq_cap - u, self.n_features, np.int32)])
            vals = np.concatenate([vals, np.zeros(self.nnz_cap - nnz, np.float32)])
            rows = np.concatenate([rows, np.zeros(self.nnz_cap - nnz, np.int32)])
        if self.xla:    # the short last batch is padded with empty rows (no features, no labels)
            b = self.batch_size
        return (uniq, pos, vals, rows, np.int64(b))

    def _x_signature(self) -> list:
        tf = self.tf
        if not self.gather:
            return [tf.TensorSpec([None, 2], tf.int64), tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int64)]
        return [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int64)]

    # ---------------------------------------------------------------- graph pieces

    def _hidden(self, xargs: tuple):
        """Input path + hidden ReLU layers -> [b, h_last]."""
        tf = self.tf
        if not self.gather:
            idx, vals, b = xargs
            st = tf.sparse.SparseTensor(idx, vals, tf.stack([b, tf.constant(self.n_features, tf.int64)]))
            h = tf.sparse.sparse_dense_matmul(st, self.Ws[0])
        else:
            uniq, pos, vals, rows, b = xargs
            w_rows = tf.gather(self.Ws[0], uniq)                       # [U, h]: row-sparse gradient
            contrib = tf.gather(w_rows, pos) * vals[:, None]            # [nnz, h]
            h = tf.math.unsorted_segment_sum(contrib, rows, self._nseg(b))
        h = tf.nn.relu(h + self.bs[0])
        for W, bias in zip(self.Ws[1:-1], self.bs[1:-1]):
            h = tf.nn.relu(tf.matmul(h, W) + bias)
        return h

    def _nseg(self, b):
        """Number of rows of the batch: a compile-time constant under XLA (batches are padded to batch_size)."""
        return self.batch_size if self.xla else self.tf.cast(b, self.tf.int32)

    def _full_logits(self, h):
        tf = self.tf
        W, b = self.Ws[-1], self.bs[-1]
        if self.spare_out:
            W, b = W[:self.n_labels], b[:self.n_labels]
        return (tf.matmul(h, W, transpose_b=True) if self.OUT_ROWS else tf.matmul(h, W)) + b

    def _build_optimizer(self) -> None:
        tf, p = self.tf, self.p
        self.rs = None
        self.opt = None
        if p["optimizer_impl"] == "keras":
            import keras
            if p["optimizer"] == "adam":
                self.opt = keras.optimizers.Adam(learning_rate=p["lr"], beta_1=p["beta1"], beta_2=p["beta2"],
                                                 epsilon=p["eps"])
            else:
                self.opt = keras.optimizers.SGD(learning_rate=p["lr"])
            self.opt.build(self.variables)
        else:
            self.rs = rowsparse_adam.make_state(tf, self.variables, p)

    def _apply(self, grads) -> None:
        """One optimiser step on self.variables (traced inside the step function)."""
        tf = self.tf
        if self.opt is not None:
            self.opt.apply_gradients(zip(grads, self.variables))
            return
        prepared = []
        for var, g in zip(self.variables, grads):
            if isinstance(g, tf.IndexedSlices):
                if not self._unique_indices(var):
                    g = rowsparse_adam.sum_repeated_rows(tf, g)
                if self.xla_update and var is not self.Ws[0]:
                    g = rowsparse_adam.pad_rows(tf, g, self._sparse_cap(var), tf.shape(var)[0] - 1)
            prepared.append(g)
        if self.xla_update:
            self._apply_compiled(prepared)
        else:
            self._update(prepared)

    def _update(self, grads) -> None:
        rowsparse_adam.update(self.tf, self.rs, self.variables, grads)

    def _sparse_cap(self, var) -> int:
        """Fixed row count of the padded row-sparse gradient of var (xla_update): subclasses with row-sparse
        output gradients define it; the gather path's input matrix uses uniq_cap (padded at encoding)."""
        raise NotImplementedError(f"{self.system}: no fixed row capacity for {var.name}")

    def _unique_indices(self, var) -> bool:
        """True when the row-sparse gradient of var is known to have distinct indices (the gather path's
        input matrix: the batch's feature ids are made unique before the lookup; only the padding target
        row can repeat, and its gradient and update are exactly zero)."""
        return self.gather and var is self.Ws[0]

    def _build_functions(self) -> None:
        tf = self.tf
        sig = self._x_signature() + self._y_signature()
        nx = len(self._x_signature())

        def step(*args):
            self.traces += 1                                    # Python side effect: counts traces
            with tf.GradientTape() as tape:
                h = self._hidden(args[:nx])
                loss = self._loss(h, args[nx:])
            grads = tape.gradient(loss, self.variables)
            self._apply(grads)
            return loss

        self._step = tf.function(step, input_signature=sig, jit_compile=self.xla)
        if self.xla_update:
            def apply_compiled(grads):
                self.update_traces += 1
                self._update(grads)
            self._apply_compiled = tf.function(apply_compiled, jit_compile=True)
        self.predict_traces = 0
        self._predict_calls = 0

        def predict(rows, cols, vals, b, k):
            self.predict_traces += 1
            idx = tf.stack([tf.cast(rows, tf.int64), tf.cast(cols, tf.int64)], axis=1)
            st = tf.sparse.SparseTensor(idx, vals, tf.stack([b, tf.constant(self.n_features, tf.int64)]))
            W0 = self.Ws[0][:self.n_features] if self.gather else self.Ws[0]
            h = tf.nn.relu(tf.sparse.sparse_dense_matmul(st, W0) + self.bs[0])
            for W, bias in zip(self.Ws[1:-1], self.bs[1:-1]):
                h = tf.nn.relu(tf.matmul(h, W) + bias)
            return block_top_k(tf, self._full_logits(h), k)    # = tf.math.top_k(...).indices, faster

        self._predict = tf.function(predict, input_signature=[
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int32)])

    # ---------------------------------------------------------------- subclass hooks

    def _validate_extra(self, p: dict[str, Any]) -> None:
        pass

    def _prepare_labels(self, data: Dataset, p: dict[str, Any]) -> None:
        pass

    def _encode_y(self, Y: sp.csr_matrix) -> tuple:
        raise NotImplementedError

    def _y_signature(self) -> list:
        raise NotImplementedError

    def _loss(self, h, yargs):
        raise NotImplementedError

    def _counters(self) -> dict[str, float]:
        return {}


