"""Files written so that a crash never leaves a half-written one under its final name, and the
CSR <-> npz array layout the data caches use."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_open(target: Path):
    """Open a temporary file in the target's folder for binary writing; on success fsync it and
    os.replace it over ``target``; on any error remove it, leaving ``target`` untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_savez(target: Path, **arrays) -> None:
    """Write an .npz atomically (see atomic_open)."""
    with atomic_open(target) as f:
        np.savez(f, **arrays)


def csr_to_arrays(prefix: str, M: sp.csr_matrix) -> dict:
    return {f"{prefix}_data": M.data, f"{prefix}_indices": M.indices, f"{prefix}_indptr": M.indptr,
            f"{prefix}_shape": np.asarray(M.shape, dtype=np.int64)}


def csr_from_arrays(z, prefix: str) -> sp.csr_matrix:
    shape = tuple(int(s) for s in z[f"{prefix}_shape"])
    M = sp.csr_matrix((z[f"{prefix}_data"], z[f"{prefix}_indices"], z[f"{prefix}_indptr"]), shape=shape, copy=False)
    M.has_sorted_indices = True
    return M
