"""Data: XMLRepository reader/writer with cache, synthetic look-alikes, dataset statistics.

    from slidebench.data import load_dataset, read_xmlrepo, write_xmlrepo, dataset_stats, format_stats

``load_dataset(preset, scale)`` is the one entry point the harness uses: with ``data_dir`` it reads
the real Delicious-200K / Amazon-670K files (names searched: ``REAL_LAYOUT``; see docs/data.md),
otherwise it generates (and caches) the synthetic look-alike. Either way it returns a validated
:class:`slidebench.contract.Dataset`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..contract import Dataset
from ._progress import note
from .stats import dataset_stats, format_stats, knn_precision
from .synthetic import GENERATOR_VERSION, PRESETS, SCALES, generate, get_spec, spec_sha256, write_files
from .files import atomic_savez, csr_from_arrays, csr_to_arrays, file_sha256
from .xmlrepo import READER_VERSION, XMLRepoFormatError, read_header, read_xmlrepo, write_xmlrepo

__all__ = ["load_dataset", "read_xmlrepo", "write_xmlrepo", "dataset_stats", "format_stats", "knn_precision",
           "XMLRepoFormatError", "generate", "write_files", "PRESETS", "SCALES", "REAL_LAYOUT", "find_real_files",
           "default_cache_dir", "GENERATOR_VERSION", "READER_VERSION", "load_files", "split_validation", "read_header",
           "check_files"]

# preset -> (display name, folders searched under data_dir, (train, test) name pairs searched in each)
REAL_LAYOUT: dict[str, tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "delicious": ("Delicious-200K",
                  ("Delicious-200K", "Delicious200K", "DeliciousLarge", "deliciousLarge", "delicious", "."),
                  (("train.txt", "test.txt"),
                   ("Delicious_train.txt", "Delicious_test.txt"),
                   ("deliciousLarge_train.txt", "deliciousLarge_test.txt"),
                   ("deliciousLarge_shuf_train.txt", "deliciousLarge_shuf_test.txt"))),
    "amazon": ("Amazon-670K",
               ("Amazon-670K", "Amazon670K", "amazon", "."),
               (("train.txt", "test.txt"),
                ("amazon_train.txt", "amazon_test.txt"),
                ("Amazon_train.txt", "Amazon_test.txt"),
                ("amazon_shuf_train.txt", "amazon_shuf_test.txt"))),
}


def default_cache_dir() -> Path:
    """$SLIDEBENCH_DATA/cache if set, else <repo>/data/cache for a source checkout, else
    ~/.cache/slidebench."""
    env = os.environ.get("SLIDEBENCH_DATA", "").strip()
    if env:
        return Path(env).expanduser() / "cache"
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "data" / "cache"
    return Path.home() / ".cache" / "slidebench"


def _candidates(preset: str, data_dir: Path) -> list[tuple[Path, Path]]:
    _, folders, pairs = REAL_LAYOUT[preset]
    out = []
    for folder in folders:
        for tr, te in pairs:
            if folder == "." and tr == "train.txt":
                continue            # bare train.txt in data_dir would be ambiguous between presets
            out.append((data_dir / folder / tr, data_dir / folder / te))
    return out


def find_real_files(preset: str, data_dir) -> tuple[Path, Path]:
    """The (train, test) files of a real set under data_dir: the first pair in REAL_LAYOUT order
    where both exist. FileNotFoundError listing every path searched if none does."""
    if preset not in REAL_LAYOUT:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(sorted(REAL_LAYOUT))}")
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {data_dir} is not a directory")
    cands = _candidates(preset, data_dir)
    for tr, te in cands:
        if tr.is_file() and te.is_file():
            return tr, te
    half = [str(p) for pair in cands for p in pair if p.is_file()]
    listing = "\n  ".join(f"{tr.relative_to(data_dir)} + {te.relative_to(data_dir)}" for tr, te in cands)
    msg = (f"no {REAL_LAYOUT[preset][0]} files found under {data_dir}; looked for these train + test pairs:\n"
           f"  {listing}")
    if half:
        msg += f"\nfound only one file of a pair: {', '.join(half)}"
    raise FileNotFoundError(msg)


def load_dataset(preset: str, scale: str, *, data_dir=None, seed: int = 0, cache_dir=None,
                 progress: bool = False, duplicates: str = "error") -> Dataset:
    """The data set for (preset, scale).

    * ``data_dir`` given: the real files (scale is ignored): name "Delicious-200K" / "Amazon-670K",
      sha256 over both files' sha256, parsed arrays cached beside the files (or in ``cache_dir``).
    * otherwise: the synthetic look-alike at ``scale`` from ``seed``, name "<preset>-<scale>",
      sha256 of (generator version, parameters, seed); cached as .npz in ``cache_dir`` (default
      :func:`default_cache_dir`), so a second load takes seconds.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
    if data_dir is not None:
        tr, te = find_real_files(preset, data_dir)
        note(f"reading real {REAL_LAYOUT[preset][0]}: {tr} and {te}", progress)
        return _pair(REAL_LAYOUT[preset][0], tr, te, cache_dir=cache_dir, progress=progress, duplicates=duplicates,
                     meta={"preset": preset, "scale": "real"})

    spec = get_spec(preset, scale)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    sha = spec_sha256(spec, seed)
    name = f"{preset}-{scale}"
    meta = {"preset": preset, "scale": scale, "source": "synthetic", "seed": int(seed),
            "generator_version": GENERATOR_VERSION, "spec": spec.to_dict()}
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cpath = folder / f"{name}-s{seed}-{sha[:16]}.npz"
    meta["cache_path"] = str(cpath)
    if cpath.is_file():
        try:
            with np.load(cpath, allow_pickle=False) as z:
                if str(z["sha256"]) == sha:
                    ds = Dataset(name, csr_from_arrays(z, "Xtr"), csr_from_arrays(z, "Ytr"),
                                 csr_from_arrays(z, "Xte"), csr_from_arrays(z, "Yte"), sha256=sha, meta=meta)
                    ds.validate()
                    note(f"loaded {name} (seed {seed}) from {cpath}", progress)
                    return ds
        except (OSError, ValueError, KeyError) as e:
            note(f"cache {cpath} unreadable ({e}); regenerating", True)
    Xtr, Ytr, Xte, Yte = generate(preset, scale, seed=seed, progress=progress)
    ds = Dataset(name, Xtr, Ytr, Xte, Yte, sha256=sha, meta=meta)
    ds.validate()
    atomic_savez(cpath, **csr_to_arrays("Xtr", Xtr), **csr_to_arrays("Ytr", Ytr), **csr_to_arrays("Xte", Xte),
                 **csr_to_arrays("Yte", Yte), sha256=np.asarray(sha))
    note(f"cached {name} as {cpath}", progress)
    return ds


def _pair(name: str, tr: Path, te: Path, *, cache_dir=None, progress: bool = False, duplicates: str = "error",
          meta: dict | None = None) -> Dataset:
    Xtr, Ytr = read_xmlrepo(tr, cache_dir=cache_dir, progress=progress, duplicates=duplicates)
    Xte, Yte = read_xmlrepo(te, cache_dir=cache_dir, progress=progress, duplicates=duplicates)
    if Xtr.shape[1] != Xte.shape[1] or Ytr.shape[1] != Yte.shape[1]:
        raise ValueError(f"{tr} declares {Xtr.shape[1]} features / {Ytr.shape[1]} labels but {te} declares "
                         f"{Xte.shape[1]} / {Yte.shape[1]}")
    sha_tr, sha_te = file_sha256(tr), file_sha256(te)
    import hashlib
    sha = hashlib.sha256(f"{sha_tr}\n{sha_te}\n".encode()).hexdigest()
    ds = Dataset(name, Xtr, Ytr, Xte, Yte, sha256=sha,
                 meta={**(meta or {}), "source": "real", "train_path": str(tr), "test_path": str(te),
                       "train_sha256": sha_tr, "test_sha256": sha_te, "reader_version": READER_VERSION,
                       "duplicates": duplicates})
    ds.validate()
    return ds


def load_files(train, test=None, *, name: str | None = None, cache_dir=None, progress: bool = False,
               duplicates: str = "error") -> Dataset:
    """Any XMLRepository train/test pair by path, called ``name`` (default: the train file's folder name).
    Without ``test`` the training file is used as both (for statistics only). Parsed arrays are cached by
    content (see read_xmlrepo), so the cache is found whatever path or link the files are reached by."""
    tr = Path(train).expanduser()
    te = Path(test).expanduser() if test is not None else tr
    name = name or tr.resolve().parent.name or tr.stem
    note(f"reading {name}: {tr} and {te}", progress)
    return _pair(name, tr, te, cache_dir=cache_dir, progress=progress, duplicates=duplicates,
                 meta={"preset": None, "scale": "user"})


def check_files(train, test) -> dict:
    """Both files present with a readable header that agree on features and labels (reads two lines);
    returns {"train": (n, d, l), "test": (n, d, l)}. FileNotFoundError / XMLRepoFormatError / ValueError."""
    h_tr, h_te = read_header(train), read_header(test)
    if h_tr[1:] != h_te[1:]:
        raise ValueError(f"{train} declares {h_tr[1]} features / {h_tr[2]} labels but {test} declares "
                         f"{h_te[1]} / {h_te[2]}")
    return {"train": h_tr, "test": h_te}


def split_validation(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Hold out a seeded, shuffled ``fraction`` of the TRAINING set as the evaluation set (for tuning: the
    test set is never read for evaluation); the rest trains. Named "<name>/val"."""
    from ..contract import derive_seed
    if not 0 < fraction <= 0.5:
        raise ValueError(f"validation fraction must be in (0, 0.5], got {fraction!r}")
    n = int(ds.X_train.shape[0])
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise ValueError(f"validation fraction {fraction} leaves no training rows ({n} rows)")
    order = np.random.default_rng(derive_seed(int(seed), "validation")).permutation(n)
    val, tr = np.sort(order[:n_val]), np.sort(order[n_val:])
    out = Dataset(f"{ds.name}/val", ds.X_train[tr], ds.Y_train[tr], ds.X_train[val], ds.Y_train[val],
                  sha256=ds.sha256, meta={**ds.meta, "validation": float(fraction), "n_validation": n_val})
    for M in (out.X_train, out.Y_train, out.X_test, out.Y_test):
        M.indices = M.indices.astype(np.int32, copy=False)
        M.indptr = M.indptr.astype(np.int32, copy=False)
    out.validate()
    return out
