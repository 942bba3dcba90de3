"""The fast path of the XMLRepository reader (``xmlrepo``): byte classes and numpy kernels that
tokenise a chunk of whole lines at once and convert ids and values without per-token Python.

``_fast_chunk`` parses a chunk or raises ``_Reject``; the reader then re-reads that chunk line by
line with its plain parser, which names the first bad line. The value conversion is exact: a DFA
over byte columns checks the grammar and accumulates the integer mantissa and exponent, then one
correctly rounded IEEE operation (``M * 10**k`` or ``M / 10**-k``, ``M <= 2**53``, ``|k| <= 22``);
other values go through Python's ``float``. See ``xmlrepo``'s docstring for the format.
"""
from __future__ import annotations

import re

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# ---------------------------------------------------------------------------------- byte classes
_OTHER, _DIGIT, _VCHAR, _WS, _COMMA, _COLON, _NL = 0, 1, 2, 3, 4, 5, 6
_CLS = np.zeros(256, dtype=np.uint8)
_CLS[ord("0"):ord("9") + 1] = _DIGIT
for _c in b".eE+-":
    _CLS[_c] = _VCHAR
for _c in b" \t\r":
    _CLS[_c] = _WS
_CLS[ord(",")] = _COMMA
_CLS[ord(":")] = _COLON
_CLS[ord("\n")] = _NL
_CLS_TABLE = _CLS.tobytes()

_VALUE_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_NONFINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


# ------------------------------------------------------------------------------------ fast path
class _Reject(Exception):
    """The fast path saw something wrong in a chunk; the slow parser will say what."""


# Padding (zero bytes) after the logical end of every chunk buffer, so per-column gathers
# buf[starts + j] never index past the buffer for tokens up to _MAX_W bytes long.
_MAX_W = 24
_PAD = _MAX_W + 8

# Value grammar  [+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?  as a DFA run over all
# value tokens at once, one byte column at a time. Any byte that is not part of a value (a
# separator, or the zero padding) ends the token: accepting states go to _V_DONE / _V_DONE_EXP,
# the others to _V_BAD; both end states absorb everything after.
(_V_START, _V_SIGN, _V_INT, _V_DOT_INT, _V_DOT, _V_FRAC, _V_E, _V_ESIGN, _V_EXP, _V_BAD, _V_DONE,
 _V_DONE_EXP) = range(12)


def _value_dfa() -> np.ndarray:
    digit, dot, e, sign = 0, 1, 2, 3
    table = {
        _V_START: {digit: _V_INT, dot: _V_DOT, sign: _V_SIGN},
        _V_SIGN: {digit: _V_INT, dot: _V_DOT},
        _V_INT: {digit: _V_INT, dot: _V_DOT_INT, e: _V_E, None: _V_DONE},
        _V_DOT_INT: {digit: _V_FRAC, e: _V_E, None: _V_DONE},
        _V_DOT: {digit: _V_FRAC},
        _V_FRAC: {digit: _V_FRAC, e: _V_E, None: _V_DONE},
        _V_E: {digit: _V_EXP, sign: _V_ESIGN},
        _V_ESIGN: {digit: _V_EXP},
        _V_EXP: {digit: _V_EXP, None: _V_DONE_EXP},
    }
    byte_class = {}
    for c in range(256):
        ch = bytes([c])
        byte_class[c] = (digit if ch.isdigit() else dot if ch == b"." else e if ch in b"eE"
                         else sign if ch in b"+-" else None)
    out = np.full((12, 256), _V_BAD, dtype=np.uint16)
    for s in range(12):
        for c in range(256):
            if s in (_V_DONE, _V_DONE_EXP):
                out[s, c] = s
            elif s in table:
                out[s, c] = table[s].get(byte_class[c], _V_BAD)
    return out.ravel()


_VDFA = _value_dfa()
_POW10 = 10.0 ** np.arange(23)             # exact doubles 1e0 .. 1e22
_EXACT_M = 2 ** 53


def _tokens_bytes(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> list[bytes]:
    b = buf.tobytes() if len(starts) else b""
    return [b[s:s + n] for s, n in zip(starts.tolist(), lens.tolist())]


def _columns(buf: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Bytes buf[starts[i] + j] for j < width as a (width, T) array: each column j contiguous."""
    return np.ascontiguousarray(sliding_window_view(buf, width)[starts].T)


def parse_ids(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Unsigned decimal ids of the tokens buf[starts[i]:starts[i]+lens[i]] as int64, by digit
    arithmetic over byte columns (no per-token Python). Raises _Reject on a non-digit byte.
    ``buf`` must extend at least ``_PAD`` bytes past the last token."""
    T = starts.size
    out = np.zeros(T, dtype=np.int64)
    if T == 0:
        return out
    long_ = lens > 18                       # may not fit int64 digit arithmetic: Python int (rare)
    W = int(min(lens.max(), 18))
    G = _columns(buf, starts, W)
    for j in range(W):
        d = G[j] - np.uint8(48)
        inside = lens > j
        if np.any(inside & (d > 9)):
            raise _Reject
        out = np.where(inside, out * 10 + d, out)
    if np.any(long_):
        li = np.flatnonzero(long_)
        toks = _tokens_bytes(buf, starts[li], lens[li])
        if not all(t.isdigit() for t in toks):
            raise _Reject
        out[li] = [min(int(t), 2**62) for t in toks]
    return out


def parse_values(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Decimal values of the tokens as float64 equal to ``float(text)`` exactly (so ``.astype(float32)``
    equals ``np.float32(float(text))`` bit for bit), or _Reject if a token breaks the grammar.

    The grammar is checked by a DFA over byte columns; the mantissa digits M, the count of
    fraction digits and the exponent E are accumulated with integer arithmetic, and the value is
    ``M * 10**k`` or ``M / 10**-k`` (k = E - fraction digits): one correctly rounded IEEE operation
    on exact operands when M <= 2**53 and |k| <= 22 (the classic exact fast path), so it equals
    the correctly rounded ``float(text)``. Other tokens (long mantissas, large exponents, tokens
    longer than _MAX_W bytes) go through Python's ``float`` one by one.
    """
    T = starts.size
    if T == 0:
        return np.zeros(0, dtype=np.float64)
    W = int(min(lens.max(), _MAX_W))
    state = np.zeros(T, dtype=np.uint16)
    M = np.zeros(T, dtype=np.int64)
    nd = np.zeros(T, dtype=np.int32)      # mantissa digits
    nf = np.zeros(T, dtype=np.int32)      # of which after the dot
    G = _columns(buf, starts, W + 1)
    for j in range(W + 1):
        b = G[j]
        state = _VDFA.take((state << 8) | b)
        m = (state == _V_INT) | (state == _V_FRAC)       # a mantissa digit was just read
        M = np.where(m, M * 10 + (b - np.uint8(48)), M)
        nd += m
        nf += state == _V_FRAC
    too_long = lens > W
    if np.any(~too_long & (state != _V_DONE) & (state != _V_DONE_EXP)):
        raise _Reject
    neg = G[0] == ord("-")
    del G
    k = -nf.astype(np.int64)
    ex = np.flatnonzero(state == _V_DONE_EXP)
    slow = too_long | (nd > 18)
    if ex.size:
        # exponent of the tokens that have one: digits after the e/E, with its sign
        s, n = starts[ex], lens[ex]
        E = np.zeros(ex.size, dtype=np.int64)
        eneg = np.zeros(ex.size, dtype=bool)
        seen_e = np.zeros(ex.size, dtype=bool)
        for j in range(int(min(n.max(), W))):
            b = buf[s + j]
            inside = n > j
            in_exp = seen_e & inside
            eneg |= in_exp & (b == ord("-"))
            d = b - np.uint8(48)
            dig = in_exp & (d < 10)
            E = np.where(dig, np.minimum(E * 10 + d, 10**6), E)
            seen_e |= inside & ((b | 0x20) == ord("e"))
        k[ex] += np.where(eneg, -E, E)
    fast = ~slow & (M <= _EXACT_M) & (np.abs(k) <= 22)
    kk = np.clip(k, -22, 22)
    Mf = M.astype(np.float64)
    p = _POW10[np.abs(kk)]
    v = np.where(kk >= 0, Mf * p, Mf / p)
    v = np.where(neg, -v, v)
    if not np.all(fast):
        si = np.flatnonzero(~fast)
        toks = _tokens_bytes(buf, starts[si], lens[si])
        vals = []
        for t in toks:
            if not _VALUE_RE.match(t.decode("ascii")):
                raise _Reject
            vals.append(float(t))
        v[si] = vals
    return v


def _fast_chunk(buf: np.ndarray, n: int, n_lines: int, D: int, L: int, duplicates: str):
    """Parse ``n_lines`` complete lines held in ``buf[:n]`` (which ends with b'\\n'; ``buf`` has at
    least ``_PAD`` zero bytes after it). Returns per-line label and feature counts and the flat
    arrays (labels int32, feature ids int32, values float32), or raises _Reject."""
    a = buf[:n]
    cls = np.frombuffer(a.tobytes().translate(_CLS_TABLE), dtype=np.uint8)
    if not cls.all():                       # an _OTHER byte (class 0) anywhere
        raise _Reject
    is_sep = cls >= _WS
    nlpos = np.flatnonzero(a == 10)
    if nlpos.size != n_lines or a[n - 1] != 10:
        raise _Reject
    # token boundaries: sep-status changes alternate start, end, start, ... (the chunk ends with a
    # newline, so the last token is closed)
    edge = np.flatnonzero(is_sep[1:] != is_sep[:-1]) + 1
    if not is_sep[0]:
        edge = np.concatenate([np.zeros(1, dtype=edge.dtype), edge])
    del is_sep
    starts, ends = edge[0::2], edge[1::2]
    T = starts.size
    lab_counts = np.zeros(n_lines, dtype=np.int64)
    feat_counts = np.zeros(n_lines, dtype=np.int64)
    n_punct = int(np.count_nonzero((cls - np.uint8(_COMMA)) < 2))        # commas and colons
    if T == 0:
        if n_punct:
            raise _Reject
        return lab_counts, feat_counts, np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32)
    # line of each token: tokens before the k-th newline, per line, expanded
    tok_line = np.repeat(np.arange(n_lines), np.diff(np.searchsorted(starts, nlpos), prepend=0))
    nextc = cls[ends]
    prevc = cls[starts - 1]
    if starts[0] == 0:
        prevc[0] = _NL
    is_fid = nextc == _COLON
    is_val = prevc == _COLON
    if np.any(is_fid & is_val):
        raise _Reject
    kind = is_fid.view(np.uint8) + 2 * is_val.view(np.uint8)            # 0 label, 1 feature id, 2 value
    # transitions between neighbouring tokens of one line: label,label (one comma between),
    # label feature (whitespace), feature:value (one colon), value feature (whitespace)
    same = tok_line[1:] == tok_line[:-1]
    code = kind[:-1] * np.uint8(3) + kind[1:]
    gap1 = (starts[1:] - ends[:-1]) == 1
    ll = (code == 0) & (nextc[:-1] == _COMMA)
    fv = code == 5
    ok = (code == 1) | (code == 7) | ((ll | fv) & gap1)
    if not np.all(ok | ~same):
        raise _Reject
    # every comma/colon byte must be the single byte of a label,label or feature:value gap
    if n_punct != int(np.count_nonzero(same & (ll | fv))):
        raise _Reject
    # first token of each line: not a value; a label must start the line (a feature may follow
    # whitespace: a point without labels)
    fi = np.flatnonzero(np.concatenate([[True], ~same]))
    fk = kind[fi]
    tl = tok_line[fi]
    ls = np.where(tl > 0, nlpos[np.maximum(tl - 1, 0)] + 1, 0)
    if np.any(fk == 2) or np.any((fk == 0) & (starts[fi] != ls)):
        raise _Reject
    lens = ends - starts
    del ends, nextc, prevc, code, gap1, ll, fv, ok, same
    is_lab = kind == 0
    is_id = ~is_val
    ids = parse_ids(buf, starts[is_id], lens[is_id])
    kid = kind[is_id]
    lab = ids[kid == 0]
    fid = ids[kid == 1]
    del ids, kid
    if np.any(lab >= L) or np.any(fid >= D):
        raise _Reject
    with np.errstate(over="ignore"):
        val = parse_values(buf, starts[is_val], lens[is_val]).astype(np.float32)
    if not np.all(np.isfinite(val)):
        raise _Reject
    lab_line = tok_line[is_lab]
    fid_line = tok_line[is_fid]
    del tok_line, starts, lens

    def sort_dedupe(row, col, dim, values):
        key = row * dim + col
        if key.size > 1 and not np.all(key[1:] > key[:-1]):
            order = np.argsort(key, kind="stable")
            key = key[order]
            values = values[order] if values is not None else None
            dup = key[1:] == key[:-1]
            if np.any(dup):
                if duplicates == "error":
                    raise _Reject
                keep = np.ones(key.size, dtype=bool)
                keep[1:] = ~dup
                grp = np.flatnonzero(keep)
                if values is not None:
                    values = np.add.reduceat(values, grp).astype(np.float32)
                key = key[grp]
            return key // dim, key % dim, values
        return row, col, values

    lrow, lab, _ = sort_dedupe(lab_line, lab, L, None)
    frow, fid, val = sort_dedupe(fid_line, fid, D, val)
    lab_counts = np.bincount(lrow, minlength=n_lines)
    feat_counts = np.bincount(frow, minlength=n_lines)
    return lab_counts, feat_counts, lab.astype(np.int32), fid.astype(np.int32), val
