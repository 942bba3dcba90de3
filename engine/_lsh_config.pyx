# cython: language_level=3
"""The one place for the LSH configuration rules: family / insertion / query-mode names and their
kernel codes, the limits (K*L hash codes, L tables, range_pow), check_config, and the small argument
checks LSHIndex uses. LSHIndex (engine/_lsh.pyx) validates through check_config when it is built,
the network's tables are LSHIndex objects (engine/network.py), and engine/config.py takes the names
and limits from here, so a rule is written once. See docs/lsh.md."""
import numpy as np

from lsh_kernels cimport *

FAMILIES = {"simhash": SB_SIMHASH, "wta": SB_WTA, "dwta": SB_DWTA, "doph": SB_DOPH}
_FAMILY_NAMES = {v: k for k, v in FAMILIES.items()}
INSERTIONS = {"fifo": SB_FIFO, "reservoir": SB_RESERVOIR}
_INSERTION_NAMES = {v: k for k, v in INSERTIONS.items()}
QUERY_MODES = {"vanilla": SB_Q_VANILLA, "topk": SB_Q_TOPK, "threshold": SB_Q_THRESHOLD}
MAX_BINS = SB_MAX_BINS
MAX_TABLES = SB_MAX_TABLES
MAX_RANGE_POW = SB_MAX_RANGE_POW


def _as_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def check_config(family, dim, K, L, range_pow, bucket_size, insertion="fifo"):
    """Raise ValueError naming the first invalid LSH setting; return (family_code, insertion_code)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown hash family {family!r}; known: {', '.join(FAMILIES)}")
    if insertion not in INSERTIONS:
        raise ValueError(f"unknown insertion {insertion!r}; known: {', '.join(INSERTIONS)}")
    dim = _as_int(dim, "dim")
    K = _as_int(K, "K")
    L = _as_int(L, "L")
    range_pow = _as_int(range_pow, "range_pow")
    bucket_size = _as_int(bucket_size, "bucket_size")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if dim > 2**31 - 1:
        raise ValueError(f"dim must be < 2**31, got {dim}")
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    if L < 1 or L > SB_MAX_TABLES:
        raise ValueError(f"L must be in 1..{SB_MAX_TABLES}, got {L}")
    if range_pow < 1 or range_pow > SB_MAX_RANGE_POW:
        raise ValueError(f"range_pow must be in 1..{SB_MAX_RANGE_POW} (2**range_pow buckets per table), "
                         f"got {range_pow}")
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
    if K * L > SB_MAX_BINS:
        raise ValueError(f"K*L must be <= {SB_MAX_BINS} hash codes per vector, got K={K} x L={L} = {K * L}")
    fam, ins = FAMILIES[family], INSERTIONS[insertion]
    code = lsh_config_error(fam, dim, K, L, range_pow, bucket_size, ins)
    if code != SB_CFG_OK:     # the kernel and this function must agree
        raise ValueError(f"LSH configuration refused by the kernel (code {code})")
    return fam, ins


def _available_bytes():
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency
        return None


def _check_n_threads(n_threads):
    n_threads = _as_int(n_threads, "n_threads")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    return n_threads
