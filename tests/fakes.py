"""Test doubles for the harness: a fake data set, a controllable clock and a fake trainer.

The fake data set encodes, in every row, its label (feature ``label`` with value ``u`` in (0, 1]) and
its row id (feature ``n_labels`` with value ``row + 1``). The fake trainer's "quality" q grows with
the steps it has trained; it predicts a row's true label first iff ``u <= q``, so P@1 on any subset
is the fraction of rows with ``u <= q`` and is known exactly. It records which test rows every
``predict_topk`` call saw, and advances the shared ``CLOCK`` by ``step_time`` per step and
``eval_time`` per prediction call when ``fake_clock`` is set (otherwise it really sleeps
``step_time`` per step: used across processes).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from slidebench.contract import Dataset, StepStats


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += float(dt)


CLOCK = FakeClock()
LAST: list["FakeTrainer"] = []        # trainers created in this process (tests inspect them)
FAIL_NEXT = {"train": False}          # in-process switch: the next trainer raises in train_steps


def make_dataset(n_train: int = 1000, n_test: int = 500, n_labels: int = 50, seed: int = 0,
                 sorted_test: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)

    def part(n: int, sort: bool):
        labels = rng.integers(0, n_labels, n)
        if sort:
            labels = np.sort(labels)              # like the real test files: ordered by label
        u = rng.uniform(0.001, 1.0, n).astype(np.float32)
        rows = np.repeat(np.arange(n), 2)
        cols = np.stack([labels, np.full(n, n_labels)], 1).ravel()
        vals = np.stack([u, np.arange(1, n + 1, dtype=np.float32)], 1).ravel()
        X = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, n_labels + 1), dtype=np.float32)
        X.sort_indices()
        Y = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), labels)), shape=(n, n_labels), dtype=np.float32)
        for M in (X, Y):
            M.indices = M.indices.astype(np.int32)
            M.indptr = M.indptr.astype(np.int32)
        return X, Y

    Xtr, Ytr = part(n_train, False)
    Xte, Yte = part(n_test, sorted_test)
    ds = Dataset(name=f"fake-{n_train}x{n_labels}", X_train=Xtr, Y_train=Ytr, X_test=Xte, Y_test=Yte,
                 sha256="fake" + str(seed), meta={"fake": True})
    ds.validate()
    return ds


def load_fake(data: dict) -> Dataset:
    """Data loader for the runner's ``data_loader`` hook ("fakes:load_fake")."""
    return make_dataset(seed=int(data.get("seed", 0)))


def rows_of(X: sp.csr_matrix, n_labels: int) -> np.ndarray:
    """The test row ids encoded in a fake data set's X."""
    return np.asarray(X[:, n_labels].todense()).ravel().astype(np.int64) - 1


class FakeTrainer:
    system: ClassVar[str] = "fake"
    PARAMS = {"step_time", "eval_time", "rate", "nan_at_step", "raise_at_step", "fake_clock", "batch_size",
              "shuffle", "q0", "config", "lr"}

    def __init__(self):
        self.predicted: list[np.ndarray] = []
        self.steps = 0
        LAST.append(self)

    def setup(self, data: Dataset, params: dict[str, Any], *, seed: int, n_threads: int, batches=None) -> None:
        bad = set(params) - self.PARAMS
        if bad:
            raise ValueError(f"unknown fake params {sorted(bad)}")
        self.p = {"step_time": 0.01, "eval_time": 0.0, "rate": 0.01, "nan_at_step": None, "raise_at_step": None,
                  "fake_clock": False, "q0": 0.0, **params}
        self.n_labels = data.n_labels
        self.stream = batches if batches is not None else \
            data.batches(params["batch_size"], seed, shuffle=params.get("shuffle", True))
        self.fail = FAIL_NEXT["train"] or os.environ.get("FAKE_FAIL") == "1"
        FAIL_NEXT["train"] = False
        self.n_threads = n_threads

    def _tick(self, dt: float) -> None:
        if self.p["fake_clock"]:
            CLOCK.advance(dt)
        elif dt > 0:
            time.sleep(dt)

    def train_steps(self, n_steps: int) -> StepStats:
        samples = 0
        for _ in range(n_steps):
            b = self.stream.next_batch()
            samples += b.X.shape[0]
            self.steps += 1
            self._tick(self.p["step_time"])
            if self.p["raise_at_step"] is not None and self.steps >= self.p["raise_at_step"]:
                raise RuntimeError(f"fake failure at step {self.steps}")
            if self.fail and self.steps >= 3:
                raise RuntimeError("fake failure (FAIL_NEXT / FAKE_FAIL)")
        nan = self.p["nan_at_step"] is not None and self.steps >= self.p["nan_at_step"]
        loss = float("nan") if nan else 1.0 / (1 + self.steps)
        return StepStats(n_steps=n_steps, n_samples=samples, loss=loss, epoch=self.stream.epoch_progress,
                         counters={"fake_steps": self.steps})

    @property
    def quality(self) -> float:
        return min(1.0, self.p["q0"] + self.p["rate"] * self.steps)

    def predict_topk(self, X: sp.csr_matrix, k: int) -> np.ndarray:
        self.predicted.append(rows_of(X, self.n_labels))
        self._tick(self.p["eval_time"])
        Xl = X[:, : self.n_labels].tocsr()
        true = Xl.indices[Xl.indptr[:-1]]
        u = Xl.data[Xl.indptr[:-1]]
        q = self.quality
        out = np.empty((X.shape[0], k), np.int32)
        for j in range(k):
            out[:, j] = (true + 1 + j) % self.n_labels          # never the true label
        hit = u <= q
        out[hit, 0] = true[hit]
        return out

    def describe(self) -> dict[str, Any]:
        return {"system": "fake", "config": "default", "n_threads": self.n_threads, "device": "cpu",
                "build": {"fake": True}, "counters": {"fake_steps": self.steps}}


def set_logged_pass_order(path, order: str | None) -> None:
    """Rewrite a real SLIDE log's run_start as an older slidebench wrote it: another pass order under the
    same hash (None: no out_pass in the engine description, as before 043313f)."""
    path = Path(path)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[0])
    if order is None:
        rec["describe"]["engine"].pop("out_pass")
    else:
        rec["describe"]["engine"]["out_pass"] = order
    path.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
