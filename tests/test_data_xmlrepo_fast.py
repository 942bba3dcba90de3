"""The reader's fast path: the vectorised number conversion (digit arithmetic over byte columns)
against Python (values equal np.float32(float(text)) bit for bit, ids int(text); anything outside
the documented value grammar rejected), and the streaming reader's chunk boundaries."""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidebench.data import xmlrepo as xr

GRAMMAR = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def buffer_of(tokens):
    """Tokens separated by single spaces (and a final newline), as the parser's padded buffer."""
    text = b" ".join(tokens) + b"\n"
    buf = np.zeros(len(text) + xr._PAD, dtype=np.uint8)
    buf[:len(text)] = np.frombuffer(text, dtype=np.uint8)
    lens = np.array([len(t) for t in tokens], dtype=np.int64)
    starts = np.cumsum(lens + 1) - (lens + 1)
    return buf, starts, lens


def ref_f32(tok: bytes) -> np.float32:
    with np.errstate(over="ignore"):
        return np.float32(float(tok))


def same_bits(got: np.ndarray, toks) -> bool:
    want = np.array([ref_f32(t) for t in toks], dtype=np.float32)
    with np.errstate(over="ignore"):
        got32 = got.astype(np.float32)
    return np.array_equal(got32.view(np.uint32), want.view(np.uint32))


def formatted_floats():
    base = st.floats(allow_nan=False, allow_infinity=False, width=64)
    f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
    return st.one_of(
        base.map(repr),
        f32.map(lambda v: str(np.float32(v))),
        st.tuples(base, st.integers(0, 25)).map(lambda t: f"{t[0]:.{t[1]}e}"),
        st.tuples(st.floats(-1e9, 1e9, allow_nan=False), st.integers(0, 25)).map(lambda t: f"{t[0]:.{t[1]}f}"),
        st.tuples(st.integers(0, 10**30), st.integers(-60, 60), st.sampled_from(["", "+", "-"]),
                  st.sampled_from(["e", "E"])).map(lambda t: f"{t[2]}{t[0]}{t[3]}{t[1]}"),
        st.tuples(st.text("0", max_size=25), st.text("0123456789", min_size=1, max_size=25),
                  st.text("0123456789", max_size=25)).map(lambda t: f"{t[0]}{t[1]}.{t[2]}"),
        st.sampled_from(["0", "-0", "+0", ".0", "0.", "-.5", "5.e3", "1e-45", "1.4e-45", "7e-46", "3.4028235e38",
                         "3.4028236e38", "3.40282357e38", "1e39", "0e999999999", "1e-999999", "9007199254740993",
                         "9007199254740993e-16", "1.00000005960464477539", "1.000000059604644775390625",
                         "0.000000000000000000000000000000000000000000001"]),
    ).map(lambda s: s.encode())


@settings(max_examples=300, deadline=None)
@given(st.lists(formatted_floats(), min_size=1, max_size=40))
def test_values_equal_float32_of_python_float_bit_for_bit(toks):
    assert all(GRAMMAR.fullmatch(t.decode()) for t in toks)
    buf, starts, lens = buffer_of(toks)
    got = xr.parse_values(buf, starts, lens)
    assert same_bits(got, toks)


@settings(max_examples=400, deadline=None)
@given(st.text("0123456789.eE+-", min_size=1, max_size=30))
def test_value_grammar_accepts_exactly_the_documented_forms(s):
    tok = s.encode()
    buf, starts, lens = buffer_of([tok])
    if GRAMMAR.fullmatch(s):
        assert same_bits(xr.parse_values(buf, starts, lens), [tok])
    else:
        with pytest.raises(xr._Reject):
            xr.parse_values(buf, starts, lens)
    # the same token among valid neighbours: rejected or converted the same way
    toks = [b"1", tok, b"0.25"]
    buf, starts, lens = buffer_of(toks)
    if GRAMMAR.fullmatch(s):
        assert same_bits(xr.parse_values(buf, starts, lens), toks)
    else:
        with pytest.raises(xr._Reject):
            xr.parse_values(buf, starts, lens)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text("0123456789", min_size=1, max_size=26), min_size=1, max_size=30))
def test_ids_equal_python_int(digits):
    toks = [d.encode() for d in digits]
    buf, starts, lens = buffer_of(toks)
    got = xr.parse_ids(buf, starts, lens)
    want = [min(int(d), 2**62) for d in digits]
    assert got.tolist() == want


@pytest.mark.parametrize("bad", [b"1.5", b"1e3", b"+1", b"-1", b"1-"])
def test_ids_reject_non_digits(bad):
    buf, starts, lens = buffer_of([b"12", bad])
    with pytest.raises(xr._Reject):
        xr.parse_ids(buf, starts, lens)


# ------------------------------------------------------------------------------- streaming reader
def test_streaming_chunks_long_lines_and_tails(tmp_path):
    """Lines longer than a chunk, a last line without newline, and blank surplus lines spread over
    several chunks parse the same at any chunk size; non-blank surplus far past line N is an error."""
    rng = np.random.default_rng(5)
    lines = []
    for i in range(40):
        n = int(rng.integers(0, 60 if i % 7 else 400))
        fids = np.sort(rng.choice(1000, n, replace=False))
        pairs = " ".join(f"{f}:{rng.standard_normal():.6g}" for f in fids)
        lines.append(f"{i % 9},{9 + i % 3} {pairs}".rstrip())
    body = "\n".join(lines)
    for tail in ["", "\n", "\n\n  \n\t\n" * 50]:
        data = f"40 1000 12\n{body}{tail}".encode()
        ref = xr.parse_xmlrepo_bytes(data, chunk_bytes=1 << 20)
        for cb in (1, 13, 100, 4096):
            got = xr.parse_xmlrepo_bytes(data, chunk_bytes=cb)
            assert all((a != b).nnz == 0 for a, b in zip(ref, got))
        assert ref[0].shape == (40, 1000) and ref[1].nnz == 80
    bad = f"40 1000 12\n{body}\n" + "\n" * 500 + "3 1:1\n"
    with pytest.raises(xr.XMLRepoFormatError, match="more point lines") as ei:
        xr.parse_xmlrepo_bytes(bad.encode(), chunk_bytes=64)
    assert ei.value.line == 42
    p = tmp_path / "t.txt"
    p.write_bytes(f"40 1000 12\n{body}\n".encode())
    X, Y = xr.read_xmlrepo(p, cache_dir=tmp_path / "c")
    assert (X != ref[0]).nnz == 0 and (Y != ref[1]).nnz == 0
    X2, _ = xr.read_xmlrepo(p, cache_dir=tmp_path / "c")              # from the cache
    assert (X2 != ref[0]).nnz == 0
