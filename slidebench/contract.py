"""The contract every system implements, and the pieces every system must share.

The runner (slidebench.harness.loop) owns the clock: it brackets only ``Trainer.train_steps`` with
``time.perf_counter``. Everything here is the same for every system:

* ``Dataset``: the one in-memory form of a data set (scipy CSR features and labels).
* ``BatchStream``: the one source of training batches. Every trainer draws its batches from a
  ``BatchStream`` built by ``Dataset.batches`` with the run's seed and batch size, so every system
  sees the same batch order. Slicing a batch out of the shuffled training set happens inside
  ``train_steps`` (inside the clock) for every system; it is a row gather of ``batch_size`` CSR rows
  (tens of microseconds) and is identical code for all systems.
* ``derive_seed``: one user seed -> independent, named streams (init, order, engine threads, ...).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

# ----------------------------------------------------------------------------------------- seeds


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one named purpose, derived from the user seed via numpy's SeedSequence.

    Purposes in use: "init" (weights), "order" (batch order), "engine" (per-thread RNG states and
    hash functions), "eval" (evaluation subset, derived from the *data* seed so every system and
    every run seed share it).
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    ss = np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


# ------------------------------------------------------------------------------------------ data

#: The params keys the runner sets (from [run] batch_sizes, the protocol and [[systems]] config); an
#: experiment file may not set them in params or sweep, and every trainer accepts them.
RUNNER_KEYS: tuple[str, ...] = ("batch_size", "shuffle", "config")


def batches_per_epoch(n_rows: int, batch_size: int) -> int:
    """Batches in one pass over ``n_rows`` rows: the last batch is short, never dropped or padded."""
    return -(-int(n_rows) // int(batch_size))


def check_csr(X: sp.csr_matrix, name: str, n_cols: int | None = None) -> None:
    """Raise ValueError unless X is CSR with float32 data, int32 indices, sorted, in range."""
    if not sp.isspmatrix_csr(X) and not isinstance(X, sp.csr_array):
        raise ValueError(f"{name} must be a scipy CSR matrix, got {type(X).__name__}")
    if X.dtype != np.float32:
        raise ValueError(f"{name} must have float32 values, got {X.dtype}")
    if X.indices.dtype != np.int32 or X.indptr.dtype != np.int32:
        raise ValueError(f"{name} must have int32 indices/indptr, got {X.indices.dtype}/{X.indptr.dtype}")
    if n_cols is not None and X.shape[1] != n_cols:
        raise ValueError(f"{name} has {X.shape[1]} columns, expected {n_cols}")


@dataclass
class Dataset:
    """A data set in memory. Labels are CSR with value 1.0 for each true label (0-based ids)."""

    name: str
    X_train: sp.csr_matrix
    Y_train: sp.csr_matrix
    X_test: sp.csr_matrix
    Y_test: sp.csr_matrix
    sha256: str = ""                     # of the source files (real) or of the generator parameters
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_labels(self) -> int:
        return int(self.Y_train.shape[1])

    def validate(self) -> None:
        check_csr(self.X_train, "X_train")
        check_csr(self.X_test, "X_test", self.n_features)
        check_csr(self.Y_train, "Y_train")
        check_csr(self.Y_test, "Y_test", self.n_labels)
        if self.X_train.shape[0] != self.Y_train.shape[0]:
            raise ValueError(f"X_train has {self.X_train.shape[0]} rows but Y_train {self.Y_train.shape[0]}")
        if self.X_test.shape[0] != self.Y_test.shape[0]:
            raise ValueError(f"X_test has {self.X_test.shape[0]} rows but Y_test {self.Y_test.shape[0]}")

    def batches(self, batch_size: int, seed: int, shuffle: bool = True) -> "BatchStream":
        return BatchStream(self.X_train, self.Y_train, batch_size, seed, shuffle=shuffle)


@dataclass
class Batch:
    X: sp.csr_matrix      # [b, n_features] float32, int32 indices
    Y: sp.csr_matrix      # [b, n_labels] labels
    epoch: int            # 0-based epoch this batch belongs to
    index: int            # 0-based batch index within the epoch


class BatchStream:
    """The one batch order. Epoch e visits the training rows in the order
    ``permutation(rng(derive_seed(seed, "order") + e))`` when ``shuffle`` (the fair default) or in
    file order (the 2019 release's way). Batches are consecutive slices of that order; the last batch
    of an epoch is short when ``batch_size`` does not divide the number of rows (never padded, never
    dropped), so one epoch is exactly one pass over the data for every system.
    """

    def __init__(self, X: sp.csr_matrix, Y: sp.csr_matrix, batch_size: int, seed: int, shuffle: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
        if X.shape[0] == 0:
            raise ValueError("the training set is empty")
        self.X, self.Y = X, Y
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.n = int(X.shape[0])
        self.batches_per_epoch = batches_per_epoch(self.n, self.batch_size)
        self.epoch = 0
        self.index = 0            # next batch index within the epoch
        self.samples_seen = 0
        self.steps = 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        rng = np.random.default_rng(derive_seed(self.seed, "order") + epoch)
        return rng.permutation(self.n)

    def next_batch(self) -> Batch:
        lo = self.index * self.batch_size
        rows = self._order[lo:lo + self.batch_size]
        b = Batch(self.X[rows], self.Y[rows], self.epoch, self.index)
        self.samples_seen += len(rows)
        self.steps += 1
        self.index += 1
        if self.index == self.batches_per_epoch:
            self.epoch += 1
            self.index = 0
            self._order = self._epoch_order(self.epoch)
        return b

    @property
    def epoch_progress(self) -> float:
        """Epochs completed as a real number (e.g. 1.5 = one and a half passes)."""
        return self.epoch + self.index / self.batches_per_epoch


# -------------------------------------------------------------------------------------- contract


@dataclass
class StepStats:
    """What ``train_steps`` returns: enough for the run log, nothing the runner must trust for time."""

    n_steps: int
    n_samples: int
    loss: float                  # mean training loss over the steps (NaN signals divergence)
    epoch: float                 # epochs completed after these steps (BatchStream.epoch_progress)
    counters: dict[str, float] = field(default_factory=dict)   # e.g. mean active neurons per sample


@runtime_checkable
class Trainer(Protocol):
    """Every system (the SLIDE engine, each TensorFlow baseline, test fakes) implements this.

    * ``setup`` is untimed: build weights, tables, trace graphs. The runner builds the run's
      ``BatchStream`` and hands it over as ``batches``; the trainer draws every training batch from it
      (so the runner knows, from the stream, how many steps were really done). ``batches=None``
      (direct calls in tests) means ``data.batches(params["batch_size"], seed,
      shuffle=params.get("shuffle", True))``.
    * ``validate_params(params, n_features, n_labels)`` (optional classmethod) checks params without
      allocating anything and without importing TensorFlow; the runner calls it before any run.
    * ``eval_metrics(X_eval)`` (optional) returns extra numbers stored in each eval record
      (``trainer_metrics``); called untimed after scoring.
    * ``train_steps`` is the only timed call; it must block until the work is really done (no
      asynchronous GPU work left in flight).
    * ``predict_topk`` is untimed; returns int32 [n, k], best first.
    * ``describe`` returns build info, thread settings, device and counters for the run log.
    """

    system: ClassVar[str]

    def setup(self, data: Dataset, params: dict[str, Any], *, seed: int, n_threads: int,
              batches: BatchStream | None = None) -> None: ...

    def train_steps(self, n_steps: int) -> StepStats: ...

    def predict_topk(self, X_csr: sp.csr_matrix, k: int) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...
