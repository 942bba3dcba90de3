"""Reader and writer for the Extreme Classification Repository text format, with an atomic cache.

Format (what this reader accepts, exactly)
-----------------------------------------
* Line 1, the header: three non-negative integers ``N D L`` separated by whitespace
  (points, features, labels).
* Then one line per point: the label field, a run of spaces/tabs, then ``feature:value`` pairs
  separated by runs of spaces/tabs. The label field is comma-separated 0-based label ids with no
  spaces (``3,17,42``). A point with no labels has an empty label field: the line starts with a
  space/tab (the repository's convention) or directly with a ``feature:value`` pair (accepted: a
  label id never contains ``:``, so this is unambiguous). A point may have no features (a line with
  only labels, or an empty line = no labels and no features).
* Ids are unsigned decimal integers (leading zeros allowed), ``0 <= id < D`` (features) and
  ``0 <= id < L`` (labels). Values are decimal floats (``0.5``, ``.5``, ``5.``, ``-1e-3``,
  ``+2E+05``) that must be finite as float32.
* Trailing spaces/tabs/``\\r`` at the end of a line are ignored (so CRLF files read fine). The file
  must have exactly ``N`` point lines; blank lines *after* the N-th point line are ignored, any
  other surplus or shortage is an error.
* Duplicate ids inside one line are an error by default (``duplicates="error"``). With
  ``duplicates="sum"`` the values of a repeated feature are summed and a repeated label is kept
  once.

Output: features as scipy CSR (float32 values, int32 indices sorted ascending and unique per row)
with shape ``(N, D)``; labels as CSR of the same kind with value 1.0 and shape ``(N, L)``.

Malformed input raises :class:`XMLRepoFormatError` (a ``ValueError``) naming the file, the 1-based
line number and what is wrong; nothing is written (no cache file) on error.

Speed and memory: the file is streamed twice, once to hash it (the cache key) and count newlines,
colons and commas (line count check, output sizes), then to parse it in chunks of about 2 MB of
whole lines with numpy over the raw bytes (token boundaries from byte classes, the grammar
checked on token transitions), filling preallocated output arrays: peak memory is the output
plus one chunk's work, never the whole text. Numbers are converted without per-token
Python: ids by digit arithmetic over byte columns, values by a DFA over byte columns that checks
the value grammar and accumulates the integer mantissa and exponent, then one exact IEEE
operation (``M * 10**k`` or ``M / 10**-k`` with ``M <= 2**53``, ``|k| <= 22``), which equals
Python's correctly rounded ``float(text)``; the rare other values (long mantissas, large
exponents) go through ``float`` (those kernels are in ``_xmlfast``). Any chunk the fast path
rejects is re-read line by line by a plain Python parser that finds the first bad line and says
what is wrong with it.

Cache: ``<name>.<sha256[:16]>-r<READER_VERSION>-<duplicates>.npz`` beside the source file (or in
``cache_dir``), holding the arrays plus the full sha256 and the reader version, written to a
temporary file in the same folder and moved into place with ``os.replace`` (a crash never leaves a
half-written cache under the final name).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._progress import Progress, note
# the fast path's kernels live in _xmlfast; parse_ids / parse_values / _Reject / _PAD are named here too
# because the tests reach them as xmlrepo's
from ._xmlfast import _NONFINITE, _PAD, _VALUE_RE, _Reject, _fast_chunk, parse_ids, parse_values  # noqa: F401
from .files import atomic_open, atomic_savez, csr_from_arrays, csr_to_arrays

READER_VERSION = 1
CHUNK_BYTES = 2 << 20
_DUP_POLICIES = ("error", "sum")


class XMLRepoFormatError(ValueError):
    """Malformed XMLRepository file: ``path``, 1-based ``line`` (0 = whole file) and ``reason``."""

    def __init__(self, path, line: int, reason: str):
        self.path = str(path)
        self.line = int(line)
        self.reason = reason
        where = f"{self.path}, line {self.line}" if self.line > 0 else self.path
        super().__init__(f"{where}: {reason}")


# ---------------------------------------------------------------------------- slow line parser
def _parse_id(tok: str, kind: str, dim: int, path, lineno: int) -> int:
    if tok == "":
        raise XMLRepoFormatError(path, lineno, f"empty {kind} id")
    if tok.startswith("-") and tok[1:].isdigit() and tok[1:].isascii():
        raise XMLRepoFormatError(path, lineno, f"negative {kind} id {tok}")
    if not (tok.isascii() and tok.isdigit()):
        raise XMLRepoFormatError(path, lineno, f"bad {kind} id token {tok!r} (expected a non-negative integer)")
    v = int(tok)
    if v >= dim:
        raise XMLRepoFormatError(path, lineno, f"{kind} id {v} out of range: the header declares {dim} {kind}s "
                                 f"(ids 0..{dim - 1})")
    return v


def _parse_value(tok: str, path, lineno: int) -> float:
    if tok.lower() in _NONFINITE:
        raise XMLRepoFormatError(path, lineno, f"non-finite value {tok!r}")
    if not _VALUE_RE.match(tok):
        raise XMLRepoFormatError(path, lineno, f"bad value token {tok!r} (expected a decimal number)")
    with np.errstate(over="ignore"):
        v = np.float32(float(tok))
    if not np.isfinite(v):
        raise XMLRepoFormatError(path, lineno, f"non-finite value {tok!r} (overflows float32)")
    return float(v)


def parse_line(raw: bytes, lineno: int, n_features: int, n_labels: int, *, path="<bytes>",
               duplicates: str = "error"):
    """Parse one point line the slow, obvious way: (labels list, feature ids list, values list).

    Used to locate and explain errors the fast path found, and as the reference in tests. Features
    come back sorted by id; duplicates are an error or merged per ``duplicates``.
    """
    try:
        line = raw.decode("ascii")
    except UnicodeDecodeError:
        raise XMLRepoFormatError(path, lineno, "non-ASCII byte in line") from None
    line = line.rstrip(" \t\r")
    labels: list[int] = []
    feats: dict[int, float] = {}
    if line == "":
        return [], [], []
    bad = [c for c in line if not (c.isascii() and (c.isalnum() or c in " \t,:.+-"))]
    if bad:
        raise XMLRepoFormatError(path, lineno, f"unexpected character {bad[0]!r}")
    if line[0] in " \t":
        label_field, feat_field = "", line.lstrip(" \t")
    else:
        m = re.search(r"[ \t]+", line)
        head, rest = (line[:m.start()], line[m.end():]) if m else (line, "")
        if ":" in head:
            label_field, feat_field = "", line
        else:
            label_field, feat_field = head, rest
    if label_field:
        seen = set()
        for tok in label_field.split(","):
            lab = _parse_id(tok, "label", n_labels, path, lineno)
            if lab in seen:
                if duplicates == "error":
                    raise XMLRepoFormatError(path, lineno, f"duplicate label id {lab} "
                                             "(pass duplicates='sum' to keep repeated labels once)")
                continue
            seen.add(lab)
            labels.append(lab)
    if feat_field:
        for tok in re.split(r"[ \t]+", feat_field):
            parts = tok.split(":")
            if len(parts) != 2:
                raise XMLRepoFormatError(path, lineno, f"bad feature token {tok!r} (expected id:value)")
            fid = _parse_id(parts[0], "feature", n_features, path, lineno)
            if "," in parts[1]:
                raise XMLRepoFormatError(path, lineno, f"bad feature token {tok!r} (expected id:value)")
            val = _parse_value(parts[1], path, lineno)
            if fid in feats:
                if duplicates == "error":
                    raise XMLRepoFormatError(path, lineno, f"duplicate feature id {fid} "
                                             "(pass duplicates='sum' to add repeated features' values)")
                feats[fid] = float(np.float32(np.float32(feats[fid]) + np.float32(val)))
            else:
                feats[fid] = val
    fids = sorted(feats)
    return sorted(labels), fids, [feats[f] for f in fids]


# --------------------------------------------------------------------------------------- header
BOM = b"\xef\xbb\xbf"


def _parse_header(line: bytes, path):
    if line.startswith(BOM):
        raise XMLRepoFormatError(path, 1, "the file starts with a UTF-8 byte-order mark (BOM), which the format "
                                 "does not allow; save it without one, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' FILE")
    try:
        parts = line.decode("ascii").split()
    except UnicodeDecodeError:
        raise XMLRepoFormatError(path, 1, "header is not ASCII (expected 'N_points N_features N_labels')") from None
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise XMLRepoFormatError(path, 1, f"bad header {line[:80]!r} (expected three non-negative integers "
                                 "'N_points N_features N_labels')")
    n, d, l = (int(p) for p in parts)
    if d < 1 or l < 1:
        raise XMLRepoFormatError(path, 1, f"bad header: {d} features and {l} labels (both must be >= 1)")
    if max(n, d, l) >= 2**31 - 1:
        raise XMLRepoFormatError(path, 1, "bad header: a dimension does not fit in int32")
    return n, d, l


def _slow_chunk(lines: list[bytes], first_lineno: int, D: int, L: int, duplicates: str, path):
    lab_counts = np.zeros(len(lines), dtype=np.int64)
    feat_counts = np.zeros(len(lines), dtype=np.int64)
    labs: list[int] = []
    fids: list[int] = []
    vals: list[float] = []
    for i, raw in enumerate(lines):
        lb, fi, va = parse_line(raw, first_lineno + i, D, L, path=path, duplicates=duplicates)
        lab_counts[i] = len(lb)
        feat_counts[i] = len(fi)
        labs += lb
        fids += fi
        vals += va
    return (lab_counts, feat_counts, np.asarray(labs, dtype=np.int32), np.asarray(fids, dtype=np.int32),
            np.asarray(vals, dtype=np.float32))


class _Out:
    """Growable flat output buffer (preallocated to an upper bound, so normally never grown)."""

    def __init__(self, cap: int, dtype):
        self.a = np.empty(max(int(cap), 0), dtype=dtype)
        self.n = 0

    def add(self, x: np.ndarray) -> None:
        if self.n + x.size > self.a.size:
            grown = np.empty(max(2 * self.a.size, self.n + x.size), dtype=self.a.dtype)
            grown[:self.n] = self.a[:self.n]
            self.a = grown
        self.a[self.n:self.n + x.size] = x
        self.n += x.size

    def result(self) -> np.ndarray:
        return self.a if self.n == self.a.size else self.a[:self.n].copy()


def _csr(counts: np.ndarray, indices: np.ndarray, data, n_rows: int, n_cols: int, what: str,
         path) -> sp.csr_matrix:
    nnz = int(counts.sum())
    if nnz >= 2**31:
        raise XMLRepoFormatError(path, 0, f"{what} has {nnz} nonzeros, more than int32 indices can address")
    indptr = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(counts, out=indptr[1:])
    if data is None:
        data = np.ones(nnz, dtype=np.float32)
    M = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols), copy=False)
    M.has_sorted_indices = True
    return M


class _Scan:
    """One streaming pass over a file: sha256 (optional), counts of newlines, colons and commas,
    and newlines per block (to find the start of a given line later without a second full pass)."""

    def __init__(self, f, *, sha: bool, counts: bool = True, block: int = 16 << 20):
        h = hashlib.sha256() if sha else None
        self.counted = counts
        self.blocks: list[tuple[int, int]] = []         # (offset, newlines in block)
        self.newlines = self.colons = self.commas = 0
        self.size = 0
        self.last_byte = b""
        f.seek(0)
        while True:
            b = f.read(block)
            if not b:
                break
            if h is not None:
                h.update(b)
            if counts:
                k = b.count(b"\n")
                self.blocks.append((self.size, k))
                self.newlines += k
                self.colons += b.count(b":")
                self.commas += b.count(b",")
            self.size += len(b)
            self.last_byte = b[-1:]
        self.sha256 = h.hexdigest() if h is not None else None

    def offset_after_newline(self, f, k: int) -> int:
        """File offset just after the k-th newline (0-based) of the file."""
        seen = 0
        for off, cnt in self.blocks:
            if seen + cnt > k:
                f.seek(off)
                arr = np.frombuffer(f.read(16 << 20), dtype=np.uint8)
                return off + int(np.flatnonzero(arr == 10)[k - seen]) + 1
            seen += cnt
        raise AssertionError("newline index beyond the file")


def _parse_stream(f, scan: _Scan, *, path, duplicates: str, progress: bool, chunk_bytes: int):
    """Parse an XMLRepository file from the binary file object ``f`` (``scan`` from _Scan(f)),
    reading ``chunk_bytes`` at a time: memory is the output arrays plus one chunk's work."""
    if duplicates not in _DUP_POLICIES:
        raise ValueError(f"duplicates must be one of {_DUP_POLICIES}, got {duplicates!r}")
    if not scan.counted:
        scan = _Scan(f, sha=False)
    if scan.size == 0:
        raise XMLRepoFormatError(path, 1, "empty file (expected a header 'N_points N_features N_labels')")
    f.seek(0)
    header = f.readline()
    N, D, L = _parse_header(header.rstrip(b"\n"), path)
    body_start = len(header)
    body_newlines = scan.newlines - (1 if header.endswith(b"\n") else 0)
    n_lines = body_newlines + (1 if scan.size > body_start and scan.last_byte != b"\n" else 0)
    if n_lines > N:
        # the text after the N-th point line may only be blank
        f.seek(scan.offset_after_newline(f, N))
        while True:
            b = f.read(16 << 20)
            if not b:
                break
            if b.strip(b" \t\r\n") != b"":
                raise XMLRepoFormatError(path, N + 2, f"more point lines than the header declares ({N})")
    if n_lines < N:
        raise XMLRepoFormatError(path, n_lines + 2, f"end of file after {n_lines} point lines, but the header "
                                 f"declares {N} points")
    # upper bounds: one colon per pair; one label per comma plus one per line
    feat_i, feat_v = _Out(scan.colons, np.int32), _Out(scan.colons, np.float32)
    lab_i = _Out(scan.commas + N, np.int32)
    lab_c = np.zeros(N, dtype=np.int64)
    feat_c = np.zeros(N, dtype=np.int64)
    f.seek(body_start)
    carry = b""
    i = 0                                               # point lines done
    with Progress(scan.size - body_start, f"parse {Path(str(path)).name}", progress, unit="B") as bar:
        while i < N:
            block = f.read(chunk_bytes)
            text = carry + block if carry else block
            if block:
                cut = text.rfind(b"\n") + 1             # complete lines only
                if cut == 0:
                    carry = text
                    continue
                text, carry = text[:cut], text[cut:]
            elif text:                                  # end of file: a last line without newline
                text, carry = text + b"\n", b""
            else:
                raise AssertionError("end of file before the counted lines")
            k = text.count(b"\n")
            if i + k > N:                               # past the N-th line: only blank text (checked above)
                pos = -1
                for _ in range(N - i):
                    pos = text.index(b"\n", pos + 1)
                text, k = text[:pos + 1], N - i
            n = len(text)
            buf = np.zeros(n + _PAD, dtype=np.uint8)
            buf[:n] = np.frombuffer(text, dtype=np.uint8)
            try:
                res = _fast_chunk(buf, n, k, D, L, duplicates)
            except _Reject:
                _slow_chunk(text[:-1].split(b"\n"), i + 2, D, L, duplicates, path)
                raise XMLRepoFormatError(
                    path, 0, f"internal error: the fast parser rejected lines {i + 2}..{i + k + 1} but the line "
                    "parser accepted them; please report this file") from None
            del buf
            lab_c[i:i + k] = res[0]
            feat_c[i:i + k] = res[1]
            lab_i.add(res[2])
            feat_i.add(res[3])
            feat_v.add(res[4])
            del res
            bar.update(n)
            i += k
    X = _csr(feat_c, feat_i.result(), feat_v.result(), N, D, "the feature matrix", path)
    Y = _csr(lab_c, lab_i.result(), None, N, L, "the label matrix", path)
    return X, Y


def parse_xmlrepo_bytes(data: bytes, *, path="<bytes>", duplicates: str = "error", progress: bool = False,
                        chunk_bytes: int = CHUNK_BYTES) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Parse the whole text of an XMLRepository file (bytes) into (X, Y). See the module docstring."""
    f = io.BytesIO(data)
    return _parse_stream(f, _Scan(f, sha=False), path=path, duplicates=duplicates, progress=progress,
                         chunk_bytes=chunk_bytes)


# ------------------------------------------------------------------------------------ file + cache
def cache_path_for(path, sha: str, cache_dir=None, duplicates: str = "error") -> Path:
    path = Path(path)
    folder = Path(cache_dir) if cache_dir is not None else path.parent
    return folder / f"{path.name}.{sha[:16]}-r{READER_VERSION}-{duplicates}.npz"


def _find_cached(path: Path, sha: str, cache_dir, duplicates: str) -> Path | None:
    """A cache of these bytes written under any file name, beside the file (as given or resolved), in
    ``cache_dir`` or in the default cache folder."""
    suffix = f".{sha[:16]}-r{READER_VERSION}-{duplicates}.npz"
    folders = [path.parent, path.resolve().parent, _default_cache_dir() / "xmlrepo"]
    if cache_dir is not None:
        folders.insert(0, Path(cache_dir))
    for folder in folders:
        try:
            hits = sorted(folder.glob("*" + suffix))
        except OSError:
            continue
        if hits:
            return hits[0]
    return None


def read_header(path) -> tuple[int, int, int]:
    """(n_points, n_features, n_labels) from the first line; XMLRepoFormatError when it is malformed
    (a BOM gets its own message), FileNotFoundError when the file is missing. Reads one line only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"XMLRepository file not found: {path}")
    with open(path, "rb") as f:
        line = f.readline(4096)
    return _parse_header(line.rstrip(b"\r\n"), path)


def _default_cache_dir() -> Path:
    from . import default_cache_dir
    return default_cache_dir()


def read_xmlrepo(path, *, cache: bool = True, cache_dir=None, duplicates: str = "error",
                 progress: bool = False) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Read an XMLRepository text file into (X, Y) CSR matrices (float32 values, int32 indices).

    With ``cache`` the result is kept as an .npz keyed by the file's sha256 and READER_VERSION,
    beside the file or in ``cache_dir`` (if the file's folder is not writable and no cache_dir is
    given, the default cache folder is used and a warning says so). Malformed input raises
    :class:`XMLRepoFormatError` and writes nothing.
    """
    path = Path(path)
    if duplicates not in _DUP_POLICIES:
        raise ValueError(f"duplicates must be one of {_DUP_POLICIES}, got {duplicates!r}")
    if not path.is_file():
        raise FileNotFoundError(f"XMLRepository file not found: {path}")
    with open(path, "rb") as f:
        scan = _Scan(f, sha=True, counts=False)        # the cache key; counts only if we parse
        sha = scan.sha256
        cpath = None
        if cache:
            if cache_dir is None and not os.access(path.parent, os.W_OK):
                cache_dir = _default_cache_dir() / "xmlrepo"
                warnings.warn(f"{path.parent} is not writable; caching the parsed {path.name} in {cache_dir}",
                              RuntimeWarning, stacklevel=2)
            cpath = cache_path_for(path.resolve(), sha, cache_dir, duplicates)
            if not cpath.is_file():          # keyed by content: the same bytes under another name or link
                cpath = _find_cached(path, sha, cache_dir, duplicates) or cpath
            if cpath.is_file():
                try:
                    with np.load(cpath, allow_pickle=False) as z:
                        if str(z["sha256"]) == sha and int(z["reader_version"]) == READER_VERSION:
                            X, Y = csr_from_arrays(z, "X"), csr_from_arrays(z, "Y")
                            note(f"loaded {path.name} from cache {cpath}", progress)
                            return X, Y
                except (OSError, ValueError, KeyError) as e:
                    warnings.warn(f"ignoring unreadable cache {cpath} ({e}); re-parsing {path}", RuntimeWarning,
                                  stacklevel=2)
        X, Y = _parse_stream(f, scan, path=path, duplicates=duplicates, progress=progress,
                             chunk_bytes=CHUNK_BYTES)
    if cpath is not None:
        atomic_savez(cpath, **csr_to_arrays("X", X), **csr_to_arrays("Y", Y), sha256=np.asarray(sha),
                     reader_version=np.asarray(READER_VERSION))
        note(f"cached {path.name} as {cpath}", progress)
    return X, Y


# ---------------------------------------------------------------------------------------- writer
def _check_pair(X, Y):
    if not sp.issparse(X) or not sp.issparse(Y):
        raise ValueError("write_xmlrepo needs scipy sparse X and Y")
    X = sp.csr_matrix(X)
    Y = sp.csr_matrix(Y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    X.sum_duplicates()
    Y.sum_duplicates()
    X.sort_indices()
    Y.sort_indices()
    xd = X.data.astype(np.float32)
    if not np.all(np.isfinite(xd)):
        raise ValueError("X has non-finite values (NaN/inf cannot be written)")
    return X, Y


def format_lines(X: sp.csr_matrix, Y: sp.csr_matrix) -> bytes:
    """The point lines (no header) for CSR X, Y, each ending in a newline. Values are written with
    the shortest decimal that reads back to the same float32; explicit zeros are kept."""
    n = X.shape[0]
    if n == 0:
        return b""
    fid_s = X.indices.astype(str)
    val_s = X.data.astype(np.float32).astype(str)
    pairs = np.strings.add(np.strings.add(fid_s, ":"), val_s).tolist() if X.nnz else []
    labs = Y.indices.astype(str).tolist()
    xp, yp = X.indptr.tolist(), Y.indptr.tolist()
    out = []
    for i in range(n):
        lab = ",".join(labs[yp[i]:yp[i + 1]])
        feats = " ".join(pairs[xp[i]:xp[i + 1]])
        out.append(f"{lab} {feats}" if feats else (lab if lab else ""))
    return ("\n".join(out) + "\n").encode("ascii")


def write_xmlrepo(path, X, Y, *, progress: bool = False, rows_per_chunk: int = 20000) -> Path:
    """Write (X, Y) in the XMLRepository text format, atomically (temp file + os.replace).

    A point with no labels starts its line with a space; a point with neither labels nor features
    is an empty line. Values round-trip exactly through :func:`read_xmlrepo` (as float32).
    """
    X, Y = _check_pair(X, Y)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = X.shape[0]
    with atomic_open(path) as f, Progress(n, f"write {path.name}", progress, unit="pt") as bar:
        f.write(f"{n} {X.shape[1]} {Y.shape[1]}\n".encode())
        for lo in range(0, n, rows_per_chunk):
            hi = min(n, lo + rows_per_chunk)
            f.write(format_lines(X[lo:hi], Y[lo:hi]))
            bar.update(hi - lo)
    return path
