"""benchmarks/engine_ab.py: bad input is refused with a clear message before any worker trains."""
import pytest

from benchmarks.engine_ab import main


def test_checkout_without_a_venv_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--old", str(tmp_path), "--new", str(tmp_path), "--samplers", "random1000", "--threads", "1"])
    assert "has no .venv/bin/python" in str(e.value.code)


@pytest.mark.parametrize("argv, msg", [
    (["--samplers", "bogus"], "unknown sampler(s) bogus for shape 200k"),
    (["--shape", "670k", "--samplers", "random1000"], "unknown sampler(s) random1000 for shape 670k"),
    (["--pairs", "1"], "--pairs must be >= 2"),
])
def test_bad_arguments(tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as e:
        main(["--old", str(tmp_path), "--new", str(tmp_path)] + argv)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_unknown_pass_order_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--old", str(tmp_path), "--new", str(tmp_path), "--new-pass", "rows"])
    assert e.value.code == 2
    assert "--new-pass" in capsys.readouterr().err
