"""Shared machinery of the TensorFlow baselines: configurations, TensorFlow start-up, the network.

Nothing here imports TensorFlow at module import time; ``import_tf`` does, once, inside ``setup``.

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
  * ``rowsparse``: this module's Adam/SGD: dense gradients get the textbook Adam update, row-sparse
    gradients update only the touched rows of the weights and of both moments (lazy Adam), with the
    global step's bias correction.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ..contract import Dataset, StepStats, check_csr, derive_seed
from . import DeviceUnavailable

# ------------------------------------------------------------------------------- configurations

#: Keys the runner may put in params beside a system's own keys.
RUNNER_KEYS = {"batch_size", "shuffle", "config"}

#: Every parameter shared by both baselines, with its meaning (docs/baselines.md has the full table).
COMMON_KEYS = {
    "device": "'cpu' (default) or 'gpu' (DeviceUnavailable when none is visible)",
    "hidden": "hidden ReLU layer sizes, e.g. [128]",
    "optimizer": "'adam' or 'sgd'",
    "lr": "learning rate", "beta1": "Adam beta1", "beta2": "Adam beta2", "eps": "Adam epsilon",
    "init": "'release' (truncated normal, std 2/sqrt(fan_in+fan_out), biases 0) or 'normal' (N(0, init_std), biases 0)",
    "init_std": "std of the 'normal' init",
    "input_path": "'sparse_matmul' or 'gather'",
    "optimizer_impl": "'keras' (Keras 3 optimizers, dense Adam state) or 'rowsparse' (lazy Adam on touched rows)",
    "xla": "compile the training step with XLA (jit_compile=True); needs input_path='gather', optimizer_impl='rowsparse'",
    "xla_update": "compile only the row-sparse optimiser update with XLA (gradients padded to fixed shapes); for "
                  "steps whose loss XLA cannot compile (sampled softmax); needs optimizer_impl='rowsparse'",
    "inter_op_threads": "TensorFlow inter-op pool size (None: the run's thread count)",
    "predict_batch": "rows per top-k batch at evaluation",
}


def resolve_params(system: str, configs: dict[str, dict[str, Any]], params: dict[str, Any],
                   extra_keys: dict[str, str]) -> dict[str, Any]:
    """Named configuration (params["config"]; absent or "default" means "tuned") + overrides, validated.

    Unknown keys raise ValueError naming the key. Returns a new dict with every key explicit.
    """
    if not isinstance(params, dict):
        raise ValueError(f"{system}: params must be a dict, got {type(params).__name__}")
    name = params.get("config", "tuned")
    if name == "default":       # an experiment file that names no config gets the strongest honest one
        name = "tuned"
    if name not in configs:
        raise ValueError(f"{system}: unknown config {name!r}; known configs: {', '.join(sorted(configs))}")
    known = set(COMMON_KEYS) | set(extra_keys) | RUNNER_KEYS
    for key in params:
        if key not in known:
            raise ValueError(f"{system}: unknown parameter {key!r}; known parameters: {', '.join(sorted(known))}")
    p = dict(configs[name])
    p.update(params)
    p["config"] = name
    if "batch_size" not in p:
        raise ValueError(f"{system}: params must contain 'batch_size' (the runner puts it there)")
    p.setdefault("shuffle", True)
    _validate_common(system, p)
    return p


def _check(cond: bool, system: str, key: str, value: Any, what: str) -> None:
    if not cond:
        raise ValueError(f"{system}: parameter {key!r} = {value!r} is invalid: {what}")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _validate_common(system: str, p: dict[str, Any]) -> None:
    _check(_is_int(p["batch_size"]) and p["batch_size"] >= 1, system, "batch_size", p["batch_size"], "must be an int >= 1")
    _check(isinstance(p["shuffle"], bool), system, "shuffle", p["shuffle"], "must be true or false")
    _check(p["device"] in ("cpu", "gpu"), system, "device", p["device"], "must be 'cpu' or 'gpu'")
    h = p["hidden"]
    _check(isinstance(h, (list, tuple)) and len(h) >= 1 and all(_is_int(v) and v >= 1 for v in h),
           system, "hidden", h, "must be a non-empty list of ints >= 1")
    _check(p["optimizer"] in ("adam", "sgd"), system, "optimizer", p["optimizer"], "must be 'adam' or 'sgd'")
    for key in ("lr", "eps"):
        _check(isinstance(p[key], (int, float)) and not isinstance(p[key], bool) and p[key] > 0 and math.isfinite(p[key]),
               system, key, p[key], "must be a finite number > 0")
    for key in ("beta1", "beta2"):
        _check(isinstance(p[key], (int, float)) and 0 <= p[key] < 1, system, key, p[key], "must be in [0, 1)")
    _check(p["init"] in ("release", "normal"), system, "init", p["init"], "must be 'release' or 'normal'")
    _check(isinstance(p["init_std"], (int, float)) and p["init_std"] > 0, system, "init_std", p["init_std"], "must be > 0")
    _check(p["input_path"] in ("sparse_matmul", "gather"), system, "input_path", p["input_path"],
           "must be 'sparse_matmul' or 'gather'")
    _check(p["optimizer_impl"] in ("keras", "rowsparse"), system, "optimizer_impl", p["optimizer_impl"],
           "must be 'keras' or 'rowsparse'")
    _check(isinstance(p["xla"], bool), system, "xla", p["xla"], "must be true or false")
    if p["xla"]:
        _check(p["input_path"] == "gather" and p["optimizer_impl"] == "rowsparse", system, "xla", p["xla"],
               "XLA needs input_path='gather' and optimizer_impl='rowsparse' (SparseTensorDenseMatMul has no "
               "XLA kernel and the Keras optimiser is not compiled with the step)")
    _check(isinstance(p["xla_update"], bool), system, "xla_update", p["xla_update"], "must be true or false")
    if p["xla_update"]:
        _check(p["optimizer_impl"] == "rowsparse", system, "xla_update", p["xla_update"],
               "needs optimizer_impl='rowsparse' (the Keras optimiser is not compiled)")
    t = p["inter_op_threads"]
    _check(t is None or (_is_int(t) and t >= 1), system, "inter_op_threads", t, "must be null/None or an int >= 1")
    _check(_is_int(p["predict_batch"]) and p["predict_batch"] >= 1, system, "predict_batch", p["predict_batch"],
           "must be an int >= 1")


# ------------------------------------------------------------------------------- TensorFlow start-up

_NOISE_PREFIXES = ("I0000", "WARNING: All log messages before absl::InitializeLog()", "To enable the following instructions")
_NOISE_SUBSTRINGS = ("rebuild TensorFlow with the appropriate compiler flags", "oneDNN custom operations are on",
                     "XLA service", "StreamExecutor device", "Compiled cluster using XLA",
                     "disabling MLIR crash reproducer", "cpu_feature_guard")


@contextlib.contextmanager
def quiet_stderr():
    """Capture file descriptor 2 (TensorFlow's C++ logging writes there before absl is initialised and
    ignores TF_CPP_MIN_LOG_LEVEL for those lines); afterwards re-emit every captured line that is not
    known start-up/compile noise, so real warnings and errors still reach the user."""
    if os.environ.get("SLIDEBENCH_TF_VERBOSE", "") not in ("", "0"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):   # no real fd 2 (e.g. some embedded interpreters): nothing to capture
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except Exception:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            keep = [ln for ln in text.splitlines()
                    if ln.strip() and not ln.startswith(_NOISE_PREFIXES) and not any(s in ln for s in _NOISE_SUBSTRINGS)]
            if keep:
                sys.stderr.write("\n".join(keep) + "\n")


_TF = None


def import_tf():
    """Import TensorFlow quietly (once). Only baseline setup() calls this."""
    global _TF
    if _TF is not None:
        return _TF
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import tensorflow as tf
        try:
            import absl.logging
            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:
            pass
        tf.get_logger().setLevel("ERROR")
        tf.autograph.set_verbosity(0)
    _TF = tf
    return tf


def configure_tf(n_threads: int, inter_op_threads: int, device: str):
    """Set thread pools and visible devices before the first op; returns (tf, device_string).

    Raises RuntimeError when TensorFlow was already initialised in this process with other thread
    settings (thread pools are per process; run each configuration in its own process), and
    DeviceUnavailable when device='gpu' and no GPU is visible.
    """
    tf = import_tf()
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise DeviceUnavailable(
            "device='gpu' was asked but TensorFlow sees no GPU "
            f"(tensorflow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}); "
            "the run is skipped, not moved to the CPU")
    for what, want, getter, setter in (
            ("intra-op", n_threads, tf.config.threading.get_intra_op_parallelism_threads,
             tf.config.threading.set_intra_op_parallelism_threads),
            ("inter-op", inter_op_threads, tf.config.threading.get_inter_op_parallelism_threads,
             tf.config.threading.set_inter_op_parallelism_threads)):
        try:
            setter(int(want))
        except RuntimeError as e:
            if getter() != int(want):
                raise RuntimeError(
                    f"TensorFlow was already initialised in this process with {what} threads = {getter()}, "
                    f"but this run asks for {want}; thread pools are fixed per process, so run it in a fresh "
                    f"process (the runner does) ({e})") from None
    if device == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as e:
            if tf.config.get_visible_devices("GPU"):
                raise RuntimeError(f"cannot hide the GPUs for a CPU run: TensorFlow is already initialised ({e})") from None
    return tf, ("/GPU:0" if device == "gpu" else "/CPU:0")


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
        if not _is_int(n_threads) or n_threads < 1:
            raise ValueError(f"{self.system}: n_threads must be an int >= 1, got {n_threads!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"{self.system}: seed must be an int >= 0, got {seed!r}")
        p = resolve_params(self.system, self.CONFIGS, params, self.EXTRA_KEYS)
        self._validate_extra(p)
        data.validate()
        from .validate import preflight_memory
        preflight_memory(self.system, p, data.n_features, data.n_labels)
        t0 = time.perf_counter()
        inter = p["inter_op_threads"] if p["inter_op_threads"] is not None else n_threads
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
        extra = [self.t] + (list(self.ms) + list(self.vs) if self.p["optimizer"] == "adam" else [])
        return list(self.variables) + extra

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
        if self.p is None:
            raise RuntimeError(f"{self.system}: call setup() before train_steps()")
        if not _is_int(n_steps) or n_steps < 1:
            raise ValueError(f"{self.system}: n_steps must be an int >= 1, got {n_steps!r}")
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
        if self.p is None:
            raise RuntimeError(f"{self.system}: call setup() before predict_topk()")
        check_csr(X_csr, "X", self.n_features)
        if not _is_int(k) or not 1 <= k <= self.n_labels:
            raise ValueError(f"{self.system}: k must be an int in [1, n_labels={self.n_labels}], got {k!r}")
        tf = self.tf
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
            "keras_version": _keras_version(),
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
        if p["optimizer_impl"] == "keras":
            import keras
            if p["optimizer"] == "adam":
                self.opt = keras.optimizers.Adam(learning_rate=p["lr"], beta_1=p["beta1"], beta_2=p["beta2"],
                                                 epsilon=p["eps"])
            else:
                self.opt = keras.optimizers.SGD(learning_rate=p["lr"])
            self.opt.build(self.variables)
        else:
            self.opt = None
            self.t = tf.Variable(0.0, dtype=tf.float32, name="adam_t")
            if p["optimizer"] == "adam":
                self.ms = [tf.Variable(tf.zeros_like(v), name=v.name.split(":")[0] + "_m") for v in self.variables]
                self.vs = [tf.Variable(tf.zeros_like(v), name=v.name.split(":")[0] + "_v") for v in self.variables]

    def _apply(self, grads) -> None:
        """One optimiser step on self.variables (traced inside the step function)."""
        tf = self.tf
        if self.opt is not None:
            self.opt.apply_gradients(zip(grads, self.variables))
            return
        prepared = []
        for var, g in zip(self.variables, grads):
            if isinstance(g, tf.IndexedSlices):
                idx, gv = g.indices, g.values
                if not self._unique_indices(var):      # sum the rows of repeated ids (scatter needs distinct ids)
                    idx, inv = tf.unique(idx)
                    gv = tf.math.unsorted_segment_sum(gv, inv, tf.shape(idx)[0])
                if self.xla_update and var is not self.Ws[0]:
                    # pad to a fixed row count; the padding points at the spare (never used) last row and carries
                    # a zero gradient, so its moments stay 0 and its update is exactly 0
                    pad = self._sparse_cap(var) - tf.shape(idx)[0]
                    idx = tf.concat([idx, tf.fill([pad], tf.cast(tf.shape(var)[0] - 1, idx.dtype))], axis=0)
                    gv = tf.pad(gv, tf.stack([tf.stack([0, pad])] + [[0, 0]] * (len(var.shape) - 1)))
                g = tf.IndexedSlices(gv, idx)
            prepared.append(g)
        if self.xla_update:
            self._apply_compiled(prepared)
        else:
            self._update(prepared)

    def _sparse_cap(self, var) -> int:
        """Fixed row count of the padded row-sparse gradient of var (xla_update): subclasses with row-sparse
        output gradients define it; the gather path's input matrix uses uniq_cap (padded at encoding)."""
        raise NotImplementedError(f"{self.system}: no fixed row capacity for {var.name}")

    def _update(self, grads) -> None:
        """Row-sparse Adam / SGD given gradients whose IndexedSlices have distinct ids (except the zero padding)."""
        tf, p = self.tf, self.p
        lr = tf.constant(p["lr"], tf.float32)
        if p["optimizer"] == "sgd":
            for var, g in zip(self.variables, grads):
                if isinstance(g, tf.IndexedSlices):
                    var.scatter_sub(tf.IndexedSlices(lr * g.values, g.indices))
                else:
                    var.assign_sub(lr * g)
            return
        b1, b2, eps = (tf.constant(p[k], tf.float32) for k in ("beta1", "beta2", "eps"))
        t = self.t.assign_add(1.0)
        c1 = 1.0 - tf.pow(b1, t)
        c2 = 1.0 - tf.pow(b2, t)
        for var, m, v, g in zip(self.variables, self.ms, self.vs, grads):
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
            return tf.math.top_k(self._full_logits(h), k=k, sorted=True).indices

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


def _keras_version() -> str:
    try:
        import keras
        return keras.__version__
    except Exception:   # keras ships with TF 2.16+; report its absence rather than fail describe()
        return "unavailable"
