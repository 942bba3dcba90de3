"""asv benchmarks of the SLIDE engine (slidebench.engine): speed, memory and accuracy per commit.

Shapes are moderate (20,000 features, 10,000 labels, hidden 128, batch 128) so that
``asv run --python=same --quick`` (``make asv``) finishes in a few minutes on 2 cores.

* ``time_*``: one training step (an LSH vanilla sampler per hash family, and the `default`
  configuration: 1,000 uniform output neurons with the sampling correction), hashing a batch of
  hidden activations, a full table rebuild of the output layer, predict_topk on 1,000 rows;
  parameters: thread count (1, 2) and hash family.
* ``peakmem_*``: a few training steps from scratch (network, tables, optimiser state).
* ``track_*``: P@1 after a fixed number of steps on a tiny planted task at one thread (deterministic),
  so an accuracy regression shows up in asv like a speed regression.

Wall clock (``timeit.default_timer``) and OMP_WAIT_POLICY=PASSIVE (set before the engine is
imported: idle OpenMP threads must not spin while asv measures).

Noise: every timed benchmark takes 4 rounds (asv interleaves the rounds of all benchmarks, so a
burst of load hits one round, not every sample), 10-30 repeats a round after a warm-up, and a
`number` of calls per sample that makes one sample >= ~20 ms; the training step never includes a
rehash (rehash_every is out of reach; the table rebuild has its own benchmark). asv reports the
median. The stated noise threshold for comparing commits is a factor of 1.25:

    asv continuous -f 1.25 --interleave-rounds HEAD~1 HEAD

On a quiet machine identical engine code stays within that factor; a shared 2-core VM can exceed it
(docs/engine.md, "asv").
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import timeit  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

N_FEATURES = 20_000
N_LABELS = 10_000
HIDDEN = 128
BATCH = 128
NNZ = 60
THREADS = [1, 2]
FAMILIES = ["dwta", "simhash"]


def planted(n_rows, n_features=N_FEATURES, n_labels=N_LABELS, nnz=NNZ, n_topics=200, seed=0):
    """A learnable multi-label set: each row belongs to a topic; 70% of its features come from the
    topic's feature block; its labels are the topic's head label plus 0-2 more from the topic's block."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, n_topics, n_rows)
    fb = n_features // n_topics
    lb = n_labels // n_topics
    cols = np.where(rng.random((n_rows, nnz)) < 0.7,
                    topic[:, None] * fb + rng.integers(0, fb, (n_rows, nnz)),
                    rng.integers(0, n_features, (n_rows, nnz)))
    X = sp.csr_matrix((np.ones(n_rows * nnz, np.float32), cols.ravel(),
                       np.arange(0, n_rows * nnz + 1, nnz)), shape=(n_rows, n_features))
    X.sum_duplicates()
    X.sort_indices()
    nl = rng.integers(0, 3, n_rows)
    # the topic's head label always, plus 0-2 more from its block: P@1 near 1 once topics are learnt
    lab = [np.unique(np.concatenate([[t * lb], t * lb + rng.integers(0, lb, k)])) for t, k in zip(topic, nl)]
    indptr = np.concatenate([[0], np.cumsum([len(v) for v in lab])])
    Y = sp.csr_matrix((np.ones(indptr[-1], np.float32), np.concatenate(lab), indptr), shape=(n_rows, n_labels))
    for M in (X, Y):
        M.indices = M.indices.astype(np.int32)
        M.indptr = M.indptr.astype(np.int32)
        M.data = M.data.astype(np.float32)
    return X, Y


def _params(family="dwta", **kw):
    p = {"hidden": [HIDDEN], "sampler": "vanilla", "hash": family, "K": 6, "L": 50, "lr": 1e-3}
    p.update(kw)
    return p


class _Stable:
    """Repeat settings shared by the timed benchmarks (see the module docstring)."""
    timer = timeit.default_timer
    rounds = 4
    repeat = (10, 30, 20.0)       # min repeats, max repeats, max seconds per round
    warmup_time = 1.0
    min_run_count = 10


class TrainStep(_Stable):
    """One optimiser step of a 20k-10k network (batch 128, LSH vanilla sampler); no rehash inside."""

    params = (THREADS, FAMILIES)
    param_names = ["threads", "hash"]
    number = 4

    def setup(self, threads, family):
        from slidebench.engine import Network
        self.X, self.Y = planted(BATCH * 16, seed=1)
        self.net = Network.from_params(N_FEATURES, N_LABELS, _params(family, rehash_every=10**9,
                                                                     rebuild_every=10**9),
                                       seed=0, n_threads=threads)
        self.i = 0
        for _ in range(4):
            self._step()

    def _step(self):
        lo = (self.i % 16) * BATCH
        self.i += 1
        return self.net.train_batch(self.X[lo:lo + BATCH], self.Y[lo:lo + BATCH])

    def time_train_step(self, threads, family):
        self._step()


class TrainStepDefault(TrainStep):
    """One step of the engine's `default` configuration as the SLIDE trainer runs it (labels + 1,000
    uniform output neurons, the sampling correction): the path of the headline runs, no tables."""

    params = (THREADS,)
    param_names = ["threads"]
    number = 2

    def setup(self, threads):
        from slidebench.engine import Network
        from slidebench.trainers.slide import SlideTrainer
        self.X, self.Y = planted(BATCH * 16, seed=1)
        # the trainer's own resolution of `default` (its pass order included: the row order since 043313f)
        params = SlideTrainer._engine_params({"config": "default", "batch_size": BATCH}, N_FEATURES, N_LABELS)
        self.net = Network.from_params(N_FEATURES, N_LABELS, params, seed=0, n_threads=threads)
        self.i = 0
        for _ in range(4):           # warm-up: first-touch of the optimiser state (TrainStep's _step)
            self._step()

    def time_train_step(self, threads):
        self._step()


class Hashing(_Stable):
    """Hashing: a batch of hidden activations (per-sample keys), and a rebuild of all output tables."""

    params = (THREADS, FAMILIES)
    param_names = ["threads", "hash"]

    def setup(self, threads, family):
        from slidebench.engine import LSHIndex
        rng = np.random.default_rng(0)
        self.H = np.maximum(rng.standard_normal((BATCH, HIDDEN)), 0).astype(np.float32)
        self.W = rng.standard_normal((N_LABELS, HIDDEN)).astype(np.float32)
        self.idx = LSHIndex(family, HIDDEN, 6, 50, 18, 128, seed=1)
        self.idx.build(self.W, n_threads=threads)
        self.threads = threads

    def time_hash_batch(self, threads, family):
        for _ in range(20):           # one call is ~1 ms: 20 per sample
            self.idx.hash_rows(self.H, n_threads=threads)

    def time_table_rebuild(self, threads, family):
        self.idx.build(self.W, n_threads=threads)


class Predict(_Stable):
    """predict_topk (exact: full output layer) of 1,000 rows."""

    params = (THREADS,)
    param_names = ["threads"]

    def setup(self, threads):
        from slidebench.engine import Network
        self.X, _ = planted(1000, seed=2)
        self.net = Network.from_params(N_FEATURES, N_LABELS, _params(), seed=0, n_threads=threads)

    def time_predict_topk(self, threads):
        self.net.predict_topk(self.X, 5)


class Memory:
    params = (THREADS,)
    param_names = ["threads"]

    def setup(self, threads):
        self.X, self.Y = planted(BATCH * 4, seed=3)

    def peakmem_train(self, threads):
        from slidebench.engine import Network
        net = Network.from_params(N_FEATURES, N_LABELS, _params(), seed=0, n_threads=threads)
        for i in range(4):
            net.train_batch(self.X[i * BATCH:(i + 1) * BATCH], self.Y[i * BATCH:(i + 1) * BATCH])


class Accuracy:
    """P@1 on held-out planted rows after a fixed number of steps at one thread (deterministic)."""

    params = (["dwta", "simhash", "random"],)
    param_names = ["sampler"]
    unit = "P@1"
    STEPS = 150
    timeout = 300

    def setup(self, sampler):
        self.Xtr, self.Ytr = planted(BATCH * 50, n_features=5000, n_labels=2000, n_topics=100, seed=4)
        self.Xte, self.Yte = planted(1000, n_features=5000, n_labels=2000, n_topics=100, seed=5)

    def track_p_at_1(self, sampler):
        from slidebench.engine import Network
        p = _params("dwta" if sampler == "random" else sampler, lr=3e-3)
        if sampler == "random":
            p = {"hidden": [HIDDEN], "sampler": "random", "lr": 3e-3}
        net = Network.from_params(5000, 2000, p, seed=0, n_threads=1)
        n = self.Xtr.shape[0] // BATCH
        for s in range(self.STEPS):
            lo = (s % n) * BATCH
            net.train_batch(self.Xtr[lo:lo + BATCH], self.Ytr[lo:lo + BATCH])
        top = net.predict_topk(self.Xte, 1)[:, 0]
        Y = self.Yte.tocsr()
        hit = [top[i] in Y.indices[Y.indptr[i]:Y.indptr[i + 1]] for i in range(Y.shape[0])]
        return float(np.mean(hit))
