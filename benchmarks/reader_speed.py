"""Speed of the XMLRepository reader: first parse and cache load, in seconds and MB/s.

A plain script, not an asv benchmark (asv imports every module here, so nothing runs on import and
no function is named like an asv benchmark). It writes a file of the requested number of lines
in the Extreme Classification Repository format with a fast numpy generator (defaults: the shape
of Amazon-670K's training set, 490,449 lines, ~75 ``feature:value`` pairs a line, ~5 labels),
or times an existing file with ``--file``, then reads it with ``read_xmlrepo`` into a temporary
cache folder (first parse, cache written), reads it again (cache load) and prints both.

    .venv/bin/python benchmarks/reader_speed.py --lines 490449
    .venv/bin/python benchmarks/reader_speed.py --file /path/to/train.txt

Peak RSS is the process's maximum resident size after the first parse (``ru_maxrss``), which
includes the generator's blocks (small) and the parsed matrices.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _n_digits(v: np.ndarray) -> np.ndarray:
    n = np.ones(v.shape, dtype=np.int64)
    p = 10
    while True:
        more = v >= p
        if not more.any():
            return n
        n += more
        p *= 10


def _put_uint(buf: np.ndarray, pos: np.ndarray, v: np.ndarray, nd: np.ndarray) -> None:
    """Write unsigned ints ``v`` as decimal text (``nd`` digits) starting at ``pos``."""
    v = v.copy()
    for j in range(int(nd.max()) - 1, -1, -1):       # last digit first
        has = nd > j
        buf[pos[has] + j] = 48 + (v[has] % 10)
        v[has] //= 10


def _block_text(rng, n: int, n_features: int, n_labels: int, pairs: float, labels: float) -> bytes:
    """``n`` point lines: sorted unique label ids, sorted unique feature ids with values 0.dddddd."""
    n_lab = np.maximum(1, rng.poisson(labels, n))
    n_pair = np.maximum(1, rng.poisson(pairs, n))

    def sorted_ids(counts, dim):
        # strictly increasing ids per line: per-line cumulative sums of gaps >= 1 whose mean spreads
        # the line's ids over the range (ids falling off the end are dropped; the first never does)
        line = np.repeat(np.arange(n), counts)
        gap_max = np.maximum(1, 2 * dim // (counts + 1))
        gaps = 1 + (rng.random(line.size) * gap_max[line]).astype(np.int64)
        c = np.cumsum(gaps)
        first = np.cumsum(counts) - counts
        ids = c - (c[first] - gaps[first])[line] - 1
        keep = ids < dim
        return line[keep], ids[keep]

    lab_line, lab = sorted_ids(n_lab, n_labels)
    feat_line, fid = sorted_ids(n_pair, n_features)
    val = rng.integers(1, 1_000_000, fid.size)              # written as 0.dddddd
    nl = np.bincount(lab_line, minlength=n)
    nf = np.bincount(feat_line, minlength=n)
    # tokens in file order per line: labels, then id value id value ...
    per_line = nl + 2 * nf
    line_tok0 = np.cumsum(per_line) - per_line
    T = int(per_line.sum())
    tlen = np.empty(T, dtype=np.int64)
    tsep = np.empty(T, dtype=np.uint8)
    lab_pos = line_tok0[lab_line] + (np.arange(lab.size) - np.repeat(np.cumsum(nl) - nl, nl))
    k = np.arange(fid.size) - np.repeat(np.cumsum(nf) - nf, nf)
    fid_pos = line_tok0[feat_line] + nl[feat_line] + 2 * k
    lab_nd, fid_nd = _n_digits(lab), _n_digits(fid)
    tlen[lab_pos] = lab_nd
    tsep[lab_pos] = ord(",")
    tlen[fid_pos] = fid_nd
    tsep[fid_pos] = ord(":")
    tlen[fid_pos + 1] = 8
    tsep[fid_pos + 1] = ord(" ")
    last_lab = lab_pos[np.cumsum(nl)[nl > 0] - 1]
    tsep[last_lab] = ord(" ")
    last = line_tok0 + per_line - 1
    tsep[last[per_line > 0]] = ord("\n")
    tstart = np.cumsum(tlen + 1) - (tlen + 1)
    buf = np.empty(int(tstart[-1] + tlen[-1] + 1), dtype=np.uint8)
    buf[tstart + tlen] = tsep
    _put_uint(buf, tstart[lab_pos], lab, lab_nd)
    _put_uint(buf, tstart[fid_pos], fid, fid_nd)
    vs = tstart[fid_pos + 1]
    buf[vs] = ord("0")
    buf[vs + 1] = ord(".")
    _put_uint(buf, vs + 2, val, np.full(val.size, 6))
    return buf.tobytes()


def write_file(path: Path, n_lines: int, *, n_features: int = 135909, n_labels: int = 670091,
               pairs: float = 75.0, labels: float = 5.4, seed: int = 0, block: int = 20000) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(f"{n_lines} {n_features} {n_labels}\n".encode())
        for lo in range(0, n_lines, block):
            f.write(_block_text(rng, min(block, n_lines - lo), n_features, n_labels, pairs, labels))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=490449, help="point lines to generate (default: Amazon-670K train)")
    ap.add_argument("--pairs", type=float, default=75.0, help="mean feature:value pairs per line")
    ap.add_argument("--file", type=Path, help="time this existing file instead of generating one")
    ap.add_argument("--runs", type=int, default=1, help="first-parse runs (each into a fresh cache); median shown")
    ap.add_argument("--check", action="store_true", help="also compare with the slow line parser on 2,000 lines")
    args = ap.parse_args(argv)
    from slidebench.data import xmlrepo as xr

    tmp = Path(tempfile.mkdtemp(prefix="reader_speed_"))
    try:
        if args.file is None:
            t = time.perf_counter()
            path = write_file(tmp / "gen.txt", args.lines, pairs=args.pairs)
            print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB, {args.lines} lines) "
                  f"in {time.perf_counter() - t:.1f} s", flush=True)
        else:
            path = args.file
        mb = path.stat().st_size / 1e6
        parse_s = []
        for r in range(args.runs):
            cdir = tmp / f"cache{r}"
            t = time.perf_counter()
            X, Y = xr.read_xmlrepo(path, cache_dir=cdir)
            parse_s.append(time.perf_counter() - t)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"run {r + 1}: first parse {parse_s[-1]:.1f} s ({mb / parse_s[-1]:.1f} MB/s), "
                  f"peak RSS so far {rss:.0f} MB; X {X.shape} nnz {X.nnz}, Y nnz {Y.nnz}", flush=True)
            del X, Y
        t = time.perf_counter()
        X, Y = xr.read_xmlrepo(path, cache_dir=tmp / "cache0")
        load_s = time.perf_counter() - t
        print(f"cache load {load_s:.2f} s ({mb / load_s:.0f} MB/s of source text)", flush=True)
        if args.check:
            with open(path, "rb") as f:
                head = [f.readline() for _ in range(2001)]
            N, D, L = (int(x) for x in head[0].split())
            for i, raw in enumerate(head[1:]):
                lb, fi, va = xr.parse_line(raw.rstrip(b"\n"), i + 2, D, L)
                row = X[i]
                assert row.indices.tolist() == fi and np.array_equal(row.data, np.asarray(va, np.float32)), i
                assert Y[i].indices.tolist() == lb, i
            print("check: first 2,000 lines equal the slow line parser's", flush=True)
        print(f"median first parse {np.median(parse_s):.1f} s over {len(parse_s)} run(s), {mb:.0f} MB, "
              f"{mb / np.median(parse_s):.1f} MB/s; cache load {load_s:.2f} s; cores visible {os.cpu_count()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
