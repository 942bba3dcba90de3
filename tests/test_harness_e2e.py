"""End to end through the CLI (``python -m slidebench`` in a subprocess): a tiny experiment with the
real engine on the tiny Amazon look-alike, and (where TensorFlow is installed) a baseline."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from slidebench.harness.runlog import read_log

REPO = Path(__file__).resolve().parent.parent

E2E = """
[experiment]
name = "{name}"
description = "end-to-end test"
protocol = "fair"

[data]
preset = "amazon"
scale = "tiny"

[budget]
steps = 24
train_seconds = 60

[eval]
every_steps = 8
subset_size = 300

[run]
seeds = [0]
threads = [1]
batch_sizes = [64]

{systems}
"""

SLIDE = """
[[systems]]
label = "SLIDE-full"
system = "slide"
params = { sampler = "full", hidden = [32], lr = 1e-3 }

[[systems]]
label = "SLIDE-lsh"
system = "slide"
params = { sampler = "vanilla", hash = "dwta", K = 4, L = 8, hidden = [32], lr = 1e-3 }
"""

TF = """
[[systems]]
label = "TF-CPU"
system = "tf_full_softmax"
config = "paper"
params = { hidden = [32] }
"""


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return subprocess.run([sys.executable, "-m", "slidebench", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def write_exp(tmp_path: Path, name: str, systems: str) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(E2E.replace("{name}", name).replace("{systems}", systems))
    return p


def check_run_logs(res: Path, name: str, labels: list[str]) -> list:
    logs = []
    for label in labels:
        files = sorted((res / "raw" / name / label).glob("s0-*.jsonl"))
        assert len(files) == 1, f"{label}: {list((res / 'raw' / name / label).iterdir())}"
        log = read_log(files[0])
        assert log.complete, (label, log.run_stop)
        assert log.run_stop["status"] == "budget_steps" and log.run_stop["steps"] == 24
        assert [e["step"] for e in log.evals] == [0, 8, 16, 24]
        assert all(e["n_eval"] == 300 for e in log.evals)
        assert 0.0 <= log.run_stop["final_p_at_1"] <= 1.0
        assert log.run_stop["final_n_eval"] == log.run_start["dataset"]["n_test"]
        m = log.run_start["manifest"]
        assert m["thread_env"]["OMP_NUM_THREADS"] == "1"
        assert log.run_start["dataset"]["sha256"]
        logs.append(log)
    return logs


@pytest.mark.slow
def test_cli_end_to_end_with_engine(tmp_path):
    res = tmp_path / "results"
    exp = write_exp(tmp_path, "e2e", SLIDE)
    dry = cli("run", str(exp), "--dry-run", "--results-dir", str(res))
    assert dry.returncode == 0, dry.stderr
    assert "2 runs" in dry.stdout and "[new]" in dry.stdout

    r = cli("run", str(exp), "--results-dir", str(res))
    assert r.returncode == 0, r.stdout + r.stderr
    logs = check_run_logs(res, "e2e", ["SLIDE-full", "SLIDE-lsh"])
    for log in logs:
        assert log.run_start["manifest"]["engine"]["openmp"] is True
        assert log.run_start["describe"]["system"] == "slide"
    # the full sampler learns on the planted structure: loss falls
    full = logs[0]
    assert full.evals[-1]["train_loss"] < full.evals[1]["train_loss"]

    again = cli("run", str(exp), "--resume", "--results-dir", str(res))
    assert again.returncode == 0 and again.stdout.count("skipped_finished") == 2, again.stdout

    s = cli("summarize", "e2e", "--results-dir", str(res))
    assert s.returncode == 0, s.stderr
    runs = pd.read_csv(res / "summary" / "e2e_runs.csv")
    curves = pd.read_csv(res / "summary" / "e2e_curves.csv")
    assert sorted(runs["label"]) == ["SLIDE-full", "SLIDE-lsh"] and runs["complete"].all()
    assert len(curves) == 8 and (curves["n_threads"] == 1).all() and (curves["scale"] == "tiny").all()
    assert (res / "summary" / "e2e_ttt.csv").exists()


def test_cli_reports_bad_key(tmp_path):
    p = write_exp(tmp_path, "bad", SLIDE).read_text().replace("steps = 24", "stepz = 24")
    (tmp_path / "bad.toml").write_text(p)
    r = cli("run", str(tmp_path / "bad.toml"), "--dry-run", timeout=60)
    assert r.returncode == 2 and "'stepz'" in r.stderr and "bad.toml" in r.stderr


def test_cli_help_on_each_subcommand():
    for sub in (["--help"], ["run", "--help"], ["summarize", "--help"], ["reproduce", "--help"],
                ["data", "generate", "--help"], ["data", "stats", "--help"], ["env", "--help"]):
        r = cli(*sub, timeout=60)
        assert r.returncode == 0 and "usage" in r.stdout, (sub, r.stderr)


@pytest.mark.tf
@pytest.mark.slow
def test_cli_end_to_end_with_tf_baseline(tmp_path):
    pytest.importorskip("tensorflow")
    res = tmp_path / "results"
    exp = write_exp(tmp_path, "e2etf", TF)
    r = cli("run", str(exp), "--results-dir", str(res), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    log = check_run_logs(res, "e2etf", ["TF-CPU"])[0]
    assert log.run_start["describe"]["system"] == "tf_full_softmax"
    assert log.run_start["manifest"]["thread_env"]["TF_NUM_INTRAOP_THREADS"] == "1"
