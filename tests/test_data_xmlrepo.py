"""XMLRepository reader/writer: round trips, every malformed case (file, line, reason, nothing
written), cache behaviour, and hypothesis files against a slow reference parser written here."""
import re

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidebench.data import XMLRepoFormatError, find_real_files, load_dataset, read_xmlrepo, write_xmlrepo
from slidebench.data import xmlrepo as xr


# ------------------------------------------------------------------ reference parser (slow, obvious)
class RefError(Exception):
    pass


NUM = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def ref_parse(text: bytes):
    """Documented grammar, written independently of the package, line by line."""
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        raise RefError("ascii")
    lines = s.split("\n")
    head = lines[0].split()
    if len(head) != 3 or not all(h.isdigit() for h in head):
        raise RefError("header")
    N, D, L = map(int, head)
    body = lines[1:]
    if body and body[-1] == "" and s.endswith("\n"):
        body = body[:-1]                       # final newline terminates the last line
    if len(body) > N:
        if any(b.strip(" \t\r\n") for b in body[N:]):
            raise RefError("too many lines")
        body = body[:N]
    if len(body) < N:
        raise RefError("too few lines")
    rows_x, rows_y = [], []
    for line in body:
        line = line.rstrip(" \t\r")
        labs, feats = [], {}
        if line:
            m = re.match(r"^([0-9,]*)([ \t]+(.*))?$", line) if not re.match(r"^[0-9]+:", line) else None
            if m is None and re.match(r"^[0-9]+:", line):
                lab_field, feat_field = "", line
            elif m is None:
                raise RefError("line")
            else:
                lab_field, feat_field = m.group(1), m.group(3) or ""
                if lab_field == "" and not line[0] in " \t":
                    raise RefError("line")
            if lab_field:
                for t in lab_field.split(","):
                    if not t.isdigit() or int(t) >= L:
                        raise RefError("label")
                    if int(t) in labs:
                        raise RefError("dup label")
                    labs.append(int(t))
            for t in (re.split(r"[ \t]+", feat_field) if feat_field else []):
                if t.count(":") != 1:
                    raise RefError("pair")
                i, v = t.split(":")
                if not i.isdigit() or int(i) >= D:
                    raise RefError("feature")
                if not NUM.fullmatch(v):
                    raise RefError("value")
                with np.errstate(over="ignore"):
                    fv = np.float32(float(v))
                if not np.isfinite(fv):
                    raise RefError("nonfinite")
                if int(i) in feats:
                    raise RefError("dup feature")
                feats[int(i)] = fv
        rows_y.append(sorted(labs))
        rows_x.append(sorted(feats.items()))
    X = np.zeros((N, D), np.float32)
    Y = np.zeros((N, L), np.float32)
    for r, items in enumerate(rows_x):
        for i, v in items:
            X[r, i] = v
    for r, ls in enumerate(rows_y):
        Y[r, ls] = 1.0
    nnz = [len(x) for x in rows_x]
    return X, Y, nnz


def check_csr(M, shape):
    assert sp.isspmatrix_csr(M) and M.shape == shape
    assert M.dtype == np.float32 and M.indices.dtype == np.int32 and M.indptr.dtype == np.int32
    for i in range(shape[0]):
        row = M.indices[M.indptr[i]:M.indptr[i + 1]]
        assert np.all(np.diff(row) > 0)


# ------------------------------------------------------------------------------------ round trip
def random_pair(rng, n, D, L, density=0.2):
    X = sp.random(n, D, density=density, format="csr", dtype=np.float32, random_state=rng)
    X.data = (X.data * 10 - 3).astype(np.float32)
    X.data[X.data == 0] = 1.0
    Y = sp.random(n, L, density=0.3, format="csr", dtype=np.float32, random_state=rng)
    Y.data[:] = 1.0
    return X, Y


def test_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = random_pair(rng, 60, 40, 12)
    X = X.tolil(); X[3, :] = 0; X[4, :] = 0; X = X.tocsr(); X.eliminate_zeros()      # empty rows
    Y = Y.tolil(); Y[4, :] = 0; Y[5, :] = 0; Y = Y.tocsr(); Y.eliminate_zeros()
    X.data[0] = np.float32(1e-30); X.data[1] = np.float32(3.4e38); X.data[2] = np.float32(-0.1)
    p = write_xmlrepo(tmp_path / "rt.txt", X, Y)
    X2, Y2 = read_xmlrepo(p, cache=False)
    check_csr(X2, X.shape); check_csr(Y2, Y.shape)
    assert np.array_equal(X2.toarray(), X.toarray())          # bit-exact float32
    assert np.array_equal(Y2.toarray(), Y.toarray())
    text = p.read_text().split("\n")
    assert text[0] == "60 40 12" and text[4 + 1] == ""         # row 4 has neither labels nor features
    assert text[5 + 1].startswith(" ")                          # row 5: no labels -> leading space


def test_multi_chunk_equals_single_chunk(tmp_path):
    rng = np.random.default_rng(1)
    X, Y = random_pair(rng, 300, 50, 20)
    p = write_xmlrepo(tmp_path / "c.txt", X, Y)
    data = p.read_bytes()
    a = xr.parse_xmlrepo_bytes(data)
    b = xr.parse_xmlrepo_bytes(data, chunk_bytes=100)
    for m1, m2 in zip(a, b):
        assert (m1 != m2).nnz == 0


# ----------------------------------------------------------------------------- malformed input
BAD = [
    (b"x 10 5\n", 1, "bad header"),
    (b"1 10\n1 0:1\n", 1, "bad header"),
    (b"3 10 5\n1 0:1\n2 1:1\n", 4, "end of file after 2"),
    (b"1 10 5\n1 0:1\n2 1:1\n", 3, "more point lines"),
    (b"2 10 5\n1 0:1\n1 zz:1\n", 3, "bad feature id token 'zz'"),
    (b"2 10 5\n1 0:1\n1 0:1x\n", 3, "bad value token '1x'"),
    (b"2 10 5\n1 0:1\n1 0:1:2\n", 3, "bad feature token"),
    (b"2 10 5\n1 0:1\n1 2 0:1\n", 3, "bad feature token '2'"),
    (b"2 10 5\n1,,2 0:1\n1 0:1\n", 2, "empty label id"),
    (b"2 10 5\n1 0:1\n5 0:1\n", 3, "label id 5 out of range"),
    (b"2 10 5\n1 0:1\n1 10:1\n", 3, "feature id 10 out of range"),
    (b"2 10 5\n-1 0:1\n1 0:1\n", 2, "negative label id -1"),
    (b"2 10 5\n1 0:1\n1 -3:1\n", 3, "negative feature id -3"),
    (b"2 10 5\n1 0:nan\n1 0:1\n", 2, "non-finite value 'nan'"),
    (b"2 10 5\n1 0:1\n1 0:inf\n", 3, "non-finite value 'inf'"),
    (b"2 10 5\n1 0:1\n1 0:1e39\n", 3, "non-finite value '1e39'"),
    (b"2 10 5\n1,1 0:1\n1 0:1\n", 2, "duplicate label id 1"),
    (b"2 10 5\n1 0:1\n1 4:1 2:1 4:3\n", 3, "duplicate feature id 4"),
    (b"2 10 5\n1 0:1\n1 0:1\xc3\xa9\n", 3, "non-ASCII"),
]


@pytest.mark.parametrize("content, line, reason", BAD, ids=[b[2] for b in BAD])
def test_malformed_input_names_file_line_reason_and_writes_nothing(tmp_path, content, line, reason):
    src = tmp_path / "src"
    src.mkdir()
    p = src / "bad.txt"
    p.write_bytes(content)
    cache = tmp_path / "cache"
    with pytest.raises(XMLRepoFormatError) as ei:
        read_xmlrepo(p, cache_dir=cache)
    e = ei.value
    assert isinstance(e, ValueError)
    assert e.line == line and reason in e.reason
    assert str(p) in str(e) and f"line {line}" in str(e)
    assert not cache.exists() or list(cache.iterdir()) == []
    assert sorted(x.name for x in src.iterdir()) == ["bad.txt"]      # nothing beside the source either
    with pytest.raises(XMLRepoFormatError):                           # default cache location too
        read_xmlrepo(p)
    assert sorted(x.name for x in src.iterdir()) == ["bad.txt"]


def test_duplicates_sum_policy():
    X, Y = xr.parse_xmlrepo_bytes(b"1 10 5\n1,3,1 4:1 2:0.5 4:2\n", duplicates="sum")
    assert X.toarray()[0, 4] == 3.0 and X.toarray()[0, 2] == 0.5 and X.nnz == 2
    assert Y.indices.tolist() == [1, 3]
    with pytest.raises(ValueError, match="duplicates"):
        xr.parse_xmlrepo_bytes(b"1 10 5\n1 0:1\n", duplicates="keep")


def test_format_variants_accepted():
    txt = (b"5 10 5\r\n"
           b"3,1\t 7:0.5  2:.25 \r\n"      # tabs, double spaces, CRLF, unsorted features
           b" 0:1e-2\n"                      # no labels (leading space)
           b"4:+2.\n"                        # no labels, feature first
           b"0004\n"                         # labels only, leading zeros
           b"\n"                             # empty point
           b"\n  \n")                        # trailing blank lines ignored
    X, Y = xr.parse_xmlrepo_bytes(txt)
    assert X.toarray()[0, [2, 7]].tolist() == [0.25, 0.5]
    assert X[1].toarray()[0, 0] == np.float32(0.01) and X[2].toarray()[0, 4] == 2.0
    assert Y[0].indices.tolist() == [1, 3] and Y[3].indices.tolist() == [4]
    assert X[3].nnz == 0 and X[4].nnz == 0 and Y[4].nnz == 0


# --------------------------------------------------------------------------------------- cache
def test_cache_written_atomically_and_used(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    X, Y = random_pair(rng, 30, 20, 8)
    p = write_xmlrepo(tmp_path / "d.txt", X, Y)
    X1, Y1 = read_xmlrepo(p)
    caches = list(tmp_path.glob("d.txt.*.npz"))
    assert len(caches) == 1 and f"-r{xr.READER_VERSION}-" in caches[0].name
    assert not list(tmp_path.glob(".*tmp"))
    monkeypatch.setattr(xr, "parse_xmlrepo_bytes", lambda *a, **k: pytest.fail("cache not used"))
    X2, Y2 = read_xmlrepo(p)
    assert (X1 != X2).nnz == 0 and (Y1 != Y2).nnz == 0
    check_csr(X2, X.shape)
    monkeypatch.undo()
    # a changed file gets a new key; the old cache is not reused
    write_xmlrepo(p, X * 2, Y)
    X3, _ = read_xmlrepo(p)
    assert np.allclose(X3.toarray(), 2 * X.toarray())
    assert len(list(tmp_path.glob("d.txt.*.npz"))) == 2


def test_cache_dir_and_crash_leaves_no_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    X, Y = random_pair(rng, 10, 8, 4)
    p = write_xmlrepo(tmp_path / "e.txt", X, Y)
    cdir = tmp_path / "cc"

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        read_xmlrepo(p, cache_dir=cdir)
    assert list(cdir.iterdir()) == []                    # the temp file was removed, no final file
    monkeypatch.undo()
    read_xmlrepo(p, cache_dir=cdir)
    assert len(list(cdir.glob("e.txt.*.npz"))) == 1


# ---------------------------------------------------------------------- hypothesis vs reference
ws = st.sampled_from([" ", "  ", "\t", " \t"])
val = st.one_of(st.floats(-1e6, 1e6, allow_nan=False, width=32).map(lambda v: repr(float(v))),
                st.sampled_from(["1", ".5", "5.", "-0", "+3e-2", "2E+03", "007.50"]))


@st.composite
def xml_files(draw, valid=True):
    D = draw(st.integers(1, 12))
    L = draw(st.integers(1, 8))
    n = draw(st.integers(0, 8))
    lines = []
    for _ in range(n):
        labs = draw(st.lists(st.integers(0, L - 1), unique=True, max_size=4))
        lab_s = ",".join(("0" * draw(st.integers(0, 1))) + str(x) for x in labs)
        feats = draw(st.lists(st.integers(0, D - 1), unique=True, max_size=5))
        pairs = [f"{f}:{draw(val)}" for f in feats]
        if pairs:
            sep = draw(ws)
            line = (lab_s + draw(ws) if lab_s else draw(st.sampled_from([" ", "\t", ""]))) + sep.join(pairs)
        else:
            line = lab_s
        line += draw(st.sampled_from(["", " ", "\r"]))
        lines.append(line)
    end = draw(st.sampled_from(["\n", "", "\n\n"]))
    if lines and lines[-1].strip(" \t\r") == "":
        end = end or "\n"              # an empty last point needs its newline to exist at all
    text = f"{n} {D} {L}\n" + "\n".join(lines) + end
    if n == 0:
        text = f"0 {D} {L}\n"
    data = text.encode()
    if not valid:
        # mutate: insert, delete or replace one byte in the body
        pos = draw(st.integers(len(f"{n} {D} {L}\n"), max(len(data), len(f"{n} {D} {L}\n"))))
        ch = draw(st.sampled_from(list(b"0123456789 ,:.-+eE\tx\n")))
        op = draw(st.sampled_from(["ins", "del", "rep"]))
        if op == "ins":
            data = data[:pos] + bytes([ch]) + data[pos:]
        elif op == "del" and pos < len(data):
            data = data[:pos] + data[pos + 1:]
        elif pos < len(data):
            data = data[:pos] + bytes([ch]) + data[pos + 1:]
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xml_files())
def test_hypothesis_valid_files_match_reference(data):
    Xr, Yr, _ = ref_parse(data)
    for chunk in (xr.CHUNK_BYTES, 7):
        X, Y = xr.parse_xmlrepo_bytes(data, chunk_bytes=chunk)
        check_csr(X, Xr.shape); check_csr(Y, Yr.shape)
        assert np.array_equal(X.toarray(), Xr) and np.array_equal(Y.toarray(), Yr)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xml_files(valid=False))
def test_hypothesis_mutated_files_accept_or_reject_like_reference(data):
    try:
        Xr, Yr, _ = ref_parse(data)
    except RefError:
        with pytest.raises(XMLRepoFormatError):
            xr.parse_xmlrepo_bytes(data)
        return
    X, Y = xr.parse_xmlrepo_bytes(data)
    assert np.array_equal(X.toarray(), Xr) and np.array_equal(Y.toarray(), Yr)


# ----------------------------------------------------------------------------------- real layout
def test_real_file_discovery_and_error_lists_names(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        find_real_files("amazon", tmp_path)
    msg = str(ei.value)
    for name in ["Amazon-670K/train.txt + Amazon-670K/test.txt", "amazon_train.txt"]:
        assert name in msg
    d = tmp_path / "Amazon-670K"
    d.mkdir()
    (d / "amazon_train.txt").write_text("0 3 2\n")
    with pytest.raises(FileNotFoundError, match="found only one file"):
        find_real_files("amazon", tmp_path)
    (d / "amazon_test.txt").write_text("0 3 2\n")
    assert find_real_files("amazon", tmp_path) == (d / "amazon_train.txt", d / "amazon_test.txt")
    with pytest.raises(ValueError, match="unknown preset"):
        find_real_files("wiki", tmp_path)


def test_load_real_dataset_from_data_dir(tmp_path):
    rng = np.random.default_rng(4)
    X, Y = random_pair(rng, 40, 30, 10)
    Xt, Yt = random_pair(rng, 15, 30, 10)
    d = tmp_path / "Delicious-200K"
    write_xmlrepo(d / "train.txt", X, Y)
    write_xmlrepo(d / "test.txt", Xt, Yt)
    ds = load_dataset("delicious", "small", data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert ds.name == "Delicious-200K" and ds.meta["source"] == "real" and len(ds.sha256) == 64
    assert np.array_equal(ds.X_test.toarray(), Xt.toarray()) and ds.n_labels == 10
    write_xmlrepo(d / "test.txt", Xt[:, :20], Yt)            # declared dims disagree
    with pytest.raises(ValueError, match="declares"):
        load_dataset("delicious", "small", data_dir=tmp_path, cache_dir=tmp_path / "c")
