"""Synthetic look-alikes of Delicious-200K and Amazon-670K with a planted, learnable structure.

Generative model (GENERATOR_VERSION 1)
--------------------------------------
Global, drawn once from ``default_rng([seed, 0])`` ("the model"):

* Label popularity: a Zipf law over popularity ranks, ``p(rank r) ~ (r + 1)^-label_alpha``; ranks
  are mapped to label ids by a random permutation (ids are *not* frequency-sorted, as in the real
  files, so a sampler that assumes sorted ids, like TF's log-uniform one, gets no free help).
* Feature popularity: the same with ``feature_alpha`` over the feature ids (word frequencies).
  Feature weights are tf-idf like: ``idf(f) = ln(2 + 1 / (D * q(f)))``.
* ``n_clusters`` latent topics with mixture weights ``pi(c) ~ (c + 1)^-cluster_alpha``. Topic c owns
  ``cluster_labels`` label slots: the first ``head_slots`` drawn from the label popularity law
  (popular labels are shared by many topics, which is what creates realistic co-occurrence of
  frequent labels across topics), the rest filled by walking through a random permutation of all
  label ids (so the tail of the label space is covered: most labels belong to one or two topics).
  Slot j of a topic carries weight ``w(j) ~ (j + 1)^-label_beta``: every topic has a few dominant
  labels and a long tail. Topic c also owns ``cluster_features`` feature ids drawn from the
  feature popularity law, with weights ``~ (j + 1)^-feature_beta``.

Each point (drawn in blocks of BLOCK points, block b of split s from ``default_rng([seed, s, b])``,
so a file streamed to disk equals the in-memory set exactly, independent of chunking):

1. topic ``c ~ pi``;
2. number of labels ``k = clip(round(LogNormal(mean=labels_mean, sigma=labels_sigma)), 1, max)``;
   label draws: each draw is, with probability ``label_noise``, a label from the global popularity
   law, else slot ``j ~ w`` of topic c; the first k distinct draws are the point's labels;
3. number of nonzeros ``n = clip(round(LogNormal(nnz_mean, nnz_sigma)), 1, max)``; word draws: each
   draw is, with probability ``feature_signal``, a feature of topic c (``~`` the topic's feature
   weights), else a background word from the global feature law; the first n distinct words are the
   point's features, with term frequency tf = how often the word was drawn (among 2n + 5 draws);
4. values ``(1 + ln tf) * idf(f)``, L2-normalised per point, rounded to 6 decimals (so the text
   files are short and read back bit-exactly).

What this gives: power-law label frequencies with a long tail, labels that co-occur within topics,
sparse bag-of-words features whose overlap reveals the topic only partly (background words and the
topic-feature sampling blur it), and labels that the topic predicts only in probability. A model
must learn the feature->topic->label map from data; the best possible P@1 is bounded well below 1
(the topic's top label is in a point's label set only with probability about
``1 - (1 - w(0))^k``), and a cosine kNN classifier reaches the mid range (see docs/data.md for the
measured figures). Targets of each preset and scale are in ``PRESETS``; ``dataset_stats`` measures
what a generated set achieves.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._progress import Progress

GENERATOR_VERSION = 1
BLOCK = 4096
SCALES = ("tiny", "small", "medium", "paper")


@dataclass(frozen=True)
class SynthSpec:
    """Every parameter of one synthetic data set (targets and model knobs)."""

    n_features: int
    n_labels: int
    n_train: int
    n_test: int
    nnz_mean: float          # target nonzeros per point
    nnz_sigma: float         # log-normal sigma of nonzeros per point
    labels_mean: float       # target labels per point
    labels_sigma: float
    label_alpha: float       # Zipf exponent of label popularity
    feature_alpha: float     # Zipf exponent of word popularity
    n_clusters: int
    cluster_alpha: float
    cluster_labels: int      # label slots per topic
    head_slots: int          # of which drawn from the popularity law
    label_beta: float        # within-topic label weight decay
    label_noise: float       # probability a label draw ignores the topic
    cluster_features: int    # feature ids per topic
    feature_beta: float      # within-topic word weight decay
    feature_signal: float    # probability a word draw comes from the topic

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _spec(**kw) -> SynthSpec:
    return SynthSpec(**kw)


# Real-set targets (PAPER.md): Delicious-200K 782,585 features, 205,443 labels, 196,606/100,095
# points, ~301 nonzeros and ~75.5 labels per point; Amazon-670K 135,909 features, 670,091 labels,
# 490,449/153,025 points, ~75.7 nonzeros and ~5.45 labels per point, ~4 points per label.
PRESETS: dict[str, dict[str, SynthSpec]] = {
    "delicious": {
        "paper": _spec(n_features=782585, n_labels=205443, n_train=196606, n_test=100095,
                       nnz_mean=301.0, nnz_sigma=0.6, labels_mean=75.5, labels_sigma=0.6,
                       label_alpha=0.8, feature_alpha=1.0, n_clusters=4000, cluster_alpha=0.5,
                       cluster_labels=600, head_slots=50, label_beta=0.6, label_noise=0.1,
                       cluster_features=1500, feature_beta=0.7, feature_signal=0.35),
        "small": _spec(n_features=50000, n_labels=20000, n_train=30000, n_test=6000,
                       nnz_mean=150.0, nnz_sigma=0.6, labels_mean=30.0, labels_sigma=0.6,
                       label_alpha=0.8, feature_alpha=1.0, n_clusters=600, cluster_alpha=0.5,
                       cluster_labels=250, head_slots=20, label_beta=0.6, label_noise=0.1,
                       cluster_features=800, feature_beta=0.7, feature_signal=0.35),
        # medium: the paper's regime for the output layer (>= 100k labels, where a dense softmax costs
        # what the paper's claim is about) at a size whose headline fits the default reproduce budget
        # (docs/figures.md); more topics than small so that the tail of the label space is covered.
        "medium": _spec(n_features=150000, n_labels=100000, n_train=60000, n_test=10000,
                        nnz_mean=150.0, nnz_sigma=0.6, labels_mean=30.0, labels_sigma=0.6,
                        label_alpha=0.8, feature_alpha=1.0, n_clusters=1500, cluster_alpha=0.5,
                        cluster_labels=250, head_slots=20, label_beta=0.6, label_noise=0.1,
                        cluster_features=800, feature_beta=0.7, feature_signal=0.35),
        "tiny": _spec(n_features=4000, n_labels=1000, n_train=2000, n_test=500,
                      nnz_mean=60.0, nnz_sigma=0.5, labels_mean=15.0, labels_sigma=0.5,
                      label_alpha=0.8, feature_alpha=1.0, n_clusters=40, cluster_alpha=0.5,
                      cluster_labels=120, head_slots=10, label_beta=0.6, label_noise=0.1,
                      cluster_features=200, feature_beta=0.7, feature_signal=0.35),
    },
    "amazon": {
        "paper": _spec(n_features=135909, n_labels=670091, n_train=490449, n_test=153025,
                       nnz_mean=75.7, nnz_sigma=0.6, labels_mean=5.45, labels_sigma=0.45,
                       label_alpha=0.8, feature_alpha=1.0, n_clusters=40000, cluster_alpha=0.3,
                       cluster_labels=24, head_slots=4, label_beta=0.8, label_noise=0.05,
                       cluster_features=150, feature_beta=0.7, feature_signal=0.3),
        "small": _spec(n_features=50000, n_labels=20000, n_train=40000, n_test=8000,
                       nnz_mean=75.0, nnz_sigma=0.6, labels_mean=5.45, labels_sigma=0.45,
                       label_alpha=0.8, feature_alpha=1.0, n_clusters=1500, cluster_alpha=0.3,
                       cluster_labels=24, head_slots=4, label_beta=0.8, label_noise=0.05,
                       cluster_features=150, feature_beta=0.7, feature_signal=0.3),
        # medium: Amazon-670K's 135,909 features and 200,000 labels (the paper's regime: a dense softmax
        # over 200k labels is ~10x SLIDE's step on 2 cores), sized so the headline fits the default
        # reproduce budget (docs/figures.md). 1,000 topics of 205 label slots: every label id is in some topic, and
        # ~100 training points per topic let a 128-unit network learn within a few thousand batches.
        "medium": _spec(n_features=135909, n_labels=200000, n_train=100000, n_test=10000,
                        nnz_mean=75.7, nnz_sigma=0.6, labels_mean=5.45, labels_sigma=0.45,
                        label_alpha=0.8, feature_alpha=1.0, n_clusters=1000, cluster_alpha=0.3,
                        cluster_labels=205, head_slots=4, label_beta=0.8, label_noise=0.05,
                        cluster_features=150, feature_beta=0.7, feature_signal=0.3),
        "tiny": _spec(n_features=3000, n_labels=1000, n_train=2000, n_test=500,
                      nnz_mean=40.0, nnz_sigma=0.5, labels_mean=4.0, labels_sigma=0.45,
                      label_alpha=0.8, feature_alpha=1.0, n_clusters=80, cluster_alpha=0.3,
                      cluster_labels=24, head_slots=4, label_beta=0.8, label_noise=0.05,
                      cluster_features=100, feature_beta=0.7, feature_signal=0.3),
    },
}


def get_spec(preset: str, scale: str) -> SynthSpec:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
    if scale not in PRESETS[preset]:
        raise ValueError(f"unknown scale {scale!r}; known scales: {', '.join(SCALES)}")
    return PRESETS[preset][scale]


def spec_sha256(spec: SynthSpec, seed: int) -> str:
    """Identity of a generated set: the generator version, its parameters and the seed."""
    blob = json.dumps({"generator_version": GENERATOR_VERSION, "seed": int(seed), "spec": spec.to_dict()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------------------ model
def _zipf_cdf(n: int, alpha: float) -> np.ndarray:
    w = (np.arange(n, dtype=np.float64) + 1.0) ** (-alpha)
    c = np.cumsum(w)
    return c / c[-1]


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1)


class _Model:
    def __init__(self, spec: SynthSpec, seed: int):
        s = spec
        rng = np.random.default_rng([int(seed), 0])
        self.spec = s
        self.label_perm = rng.permutation(s.n_labels).astype(np.int64)      # rank -> label id
        self.label_cdf = _zipf_cdf(s.n_labels, s.label_alpha)
        feat_perm = rng.permutation(s.n_features).astype(np.int64)
        self.feat_perm = feat_perm
        self.feat_cdf = _zipf_cdf(s.n_features, s.feature_alpha)
        q = np.diff(self.feat_cdf, prepend=0.0)                              # popularity by rank
        idf_rank = np.log(2.0 + 1.0 / (s.n_features * q))
        self.idf = np.empty(s.n_features, dtype=np.float64)
        self.idf[feat_perm] = idf_rank
        self.cluster_cdf = _zipf_cdf(s.n_clusters, s.cluster_alpha)
        C, m, h = s.n_clusters, s.cluster_labels, min(s.head_slots, s.cluster_labels)
        slots = np.empty((C, m), dtype=np.int64)
        slots[:, :h] = self.label_perm[_draw(self.label_cdf, rng.random((C, h)))]
        n_tail = C * (m - h)
        if n_tail:
            reps = -(-n_tail // s.n_labels)
            walk = np.concatenate([rng.permutation(s.n_labels) for _ in range(reps)])[:n_tail]
            slots[:, h:] = walk.reshape(C, m - h)
        # popular (head) labels sit at random positions of each topic's list, not in its top slots,
        # so the topic-specific labels lead and popularity alone does not predict the top label
        slots = np.take_along_axis(slots, np.argsort(rng.random((C, m)), axis=1), axis=1)
        self.slots = slots
        self.slot_cdf = _zipf_cdf(m, s.label_beta)
        self.cfeat = feat_perm[_draw(self.feat_cdf, rng.random((C, s.cluster_features)))]
        self.cfeat_cdf = _zipf_cdf(s.cluster_features, s.feature_beta)


def _lognormal_counts(rng, n, mean, sigma, hi):
    mu = np.log(mean) - 0.5 * sigma * sigma
    k = np.rint(rng.lognormal(mu, sigma, size=n)).astype(np.int64)
    return np.clip(k, 1, hi)


def _first_distinct(pt: np.ndarray, val: np.ndarray, dim: int, want: np.ndarray):
    """For draws (pt, val) in draw order (pt ascending), keep each point's first ``want[pt]``
    distinct values. Returns (pt, val, count) sorted by (pt, val); count = times val was drawn."""
    key = pt * dim + val
    order = np.argsort(key, kind="stable")
    sk = key[order]
    first = np.ones(sk.size, dtype=bool)
    first[1:] = sk[1:] != sk[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, sk.size))
    is_first = np.zeros(key.size, dtype=bool)
    is_first[order[starts]] = True
    # rank of each first occurrence within its point, in draw order
    fpos = np.flatnonzero(is_first)
    fpt = pt[fpos]
    grp_start = np.flatnonzero(np.r_[True, fpt[1:] != fpt[:-1]])
    rank = np.arange(fpos.size) - np.repeat(grp_start, np.diff(np.append(grp_start, fpos.size)))
    keep_pos = fpos[rank < want[fpt]]
    keep = np.zeros(key.size, dtype=bool)
    keep[keep_pos] = True
    sel = keep[order[starts]]                       # the kept distinct keys, in sorted key order
    kk = sk[starts][sel]
    return kk // dim, kk % dim, counts[sel]


def _block(model: _Model, split: int, b: int, n: int, seed: int):
    """Points of block b of split (0 = train, 1 = test): (X csr, Y csr) with n rows."""
    s = model.spec
    rng = np.random.default_rng([int(seed), 1 + split, int(b)])
    c = _draw(model.cluster_cdf, rng.random(n))
    # labels
    k = _lognormal_counts(rng, n, s.labels_mean, s.labels_sigma, min(s.n_labels, 4 * int(s.labels_mean) + 10))
    md = 2 * k + 3
    pt = np.repeat(np.arange(n, dtype=np.int64), md)
    noise = rng.random(pt.size) < s.label_noise
    lab = model.slots[c[pt], _draw(model.slot_cdf, rng.random(pt.size))]
    nn = int(noise.sum())
    lab[noise] = model.label_perm[_draw(model.label_cdf, rng.random(nn))]
    lrow, lcol, _ = _first_distinct(pt, lab, s.n_labels, k)
    # features
    nz = _lognormal_counts(rng, n, s.nnz_mean, s.nnz_sigma, min(s.n_features, 5 * int(s.nnz_mean) + 20))
    fd = 2 * nz + 5
    pt = np.repeat(np.arange(n, dtype=np.int64), fd)
    topic = rng.random(pt.size) < s.feature_signal
    f = np.empty(pt.size, dtype=np.int64)
    nt = int(topic.sum())
    f[topic] = model.cfeat[c[pt[topic]], _draw(model.cfeat_cdf, rng.random(nt))]
    f[~topic] = model.feat_perm[_draw(model.feat_cdf, rng.random(pt.size - nt))]
    frow, fcol, tf = _first_distinct(pt, f, s.n_features, nz)
    v = (1.0 + np.log(tf)) * model.idf[fcol]
    norm = np.sqrt(np.bincount(frow, weights=v * v, minlength=n))
    v = v / norm[frow]
    v = np.maximum(np.round(v, 6), 1e-6).astype(np.float32)
    X = sp.csr_matrix((v, fcol.astype(np.int32), _indptr(frow, n)), shape=(n, s.n_features))
    Y = sp.csr_matrix((np.ones(lrow.size, np.float32), lcol.astype(np.int32), _indptr(lrow, n)),
                      shape=(n, s.n_labels))
    X.has_sorted_indices = True
    Y.has_sorted_indices = True
    return X, Y


def _indptr(rows: np.ndarray, n: int) -> np.ndarray:
    p = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=p[1:])
    return p


def _blocks(spec: SynthSpec, split: int):
    total = spec.n_train if split == 0 else spec.n_test
    for b, lo in enumerate(range(0, total, BLOCK)):
        yield b, min(BLOCK, total - lo)


def _stack(parts, n_cols):
    if not parts:
        return sp.csr_matrix((0, n_cols), dtype=np.float32)
    data = np.concatenate([p.data for p in parts])
    indices = np.concatenate([p.indices for p in parts])
    counts = np.concatenate([np.diff(p.indptr) for p in parts])
    indptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    if indptr[-1] >= 2**31:
        raise ValueError("generated matrix has more than 2^31 nonzeros")
    M = sp.csr_matrix((data, indices, indptr.astype(np.int32)), shape=(counts.size, n_cols), copy=False)
    M.has_sorted_indices = True
    return M


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def generate(preset: str, scale: str, *, seed: int = 0, progress: bool = False, spec: SynthSpec | None = None):
    """Generate a synthetic set in memory: (X_train, Y_train, X_test, Y_test) CSR float32/int32.

    ``spec`` overrides the preset's parameters (for experiments with the generator itself).
    """
    seed = _check_seed(seed)
    spec = spec or get_spec(preset, scale)
    model = _Model(spec, seed)
    out = []
    with Progress(spec.n_train + spec.n_test, f"generate {preset}-{scale}", progress, unit="pt") as bar:
        for split in (0, 1):
            xs, ys = [], []
            for b, n in _blocks(spec, split):
                X, Y = _block(model, split, b, n, seed)
                xs.append(X)
                ys.append(Y)
                bar.update(n)
            out += [_stack(xs, spec.n_features), _stack(ys, spec.n_labels)]
    return tuple(out)


def write_files(preset: str, scale: str, out_dir, *, seed: int = 0, progress: bool = False,
                spec: SynthSpec | None = None) -> dict[str, Path]:
    """Stream a synthetic set to ``out_dir/{train,test}.txt`` in the XMLRepository format, one block
    at a time (memory: one block, never the whole set). Files are written to temporary names and
    moved into place when complete. Returns {"train": path, "test": path}."""
    from .files import atomic_open
    from .xmlrepo import format_lines
    seed = _check_seed(seed)
    spec = spec or get_spec(preset, scale)
    model = _Model(spec, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    with Progress(spec.n_train + spec.n_test, f"write {preset}-{scale} to {out_dir}", progress, unit="pt") as bar:
        for split, name in ((0, "train"), (1, "test")):
            n_total = spec.n_train if split == 0 else spec.n_test
            path = out_dir / f"{name}.txt"
            with atomic_open(path) as f:
                f.write(f"{n_total} {spec.n_features} {spec.n_labels}\n".encode())
                for b, n in _blocks(spec, split):
                    X, Y = _block(model, split, b, n, seed)
                    f.write(format_lines(X, Y))
                    bar.update(n)
            paths[name] = path
    return paths
