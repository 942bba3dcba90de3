"""The run loop and the runner, with a fake trainer and a controllable clock (tests/fakes.py)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import fakes
from slidebench.harness import executors, loop, process
from slidebench.harness.runlog import RunLogWriter, partial_path, read_log
from slidebench.harness.spec import RunSpec, parse_experiment
from slidebench.reporting.summarize import olympic_mean, summarize_experiment
from slidebench.trainers import register

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
register("fake", "fakes:FakeTrainer")
CHILD_ENV = {"PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])}


def make_run(protocol="fair", budget=None, ev=None, params=None, seed=0, batch_size=100, experiment="t",
             label="FAKE") -> RunSpec:
    budget = budget or {"train_seconds": 3.0}
    budget.setdefault("stop_at_target", True)
    if ev is None:
        ev = {"every_seconds": 1.0, "subset_size": 200} if protocol == "fair" else \
            {"every_steps": 4, "prefix_size": 100, "epoch_prefix_size": 250}
    p = {"step_time": 0.25, "fake_clock": True}
    p.update(params or {})
    return RunSpec(experiment=experiment, label=label, system="fake", config="default", params=p, sweep={},
                   seed=seed, n_threads=1, batch_size=batch_size, protocol=protocol,
                   data={"preset": "amazon", "scale": "tiny", "data_dir": None, "seed": 0},
                   budget=budget, eval=ev)


def run_fake(tmp_path, run: RunSpec, data=None):
    data = data or fakes.make_dataset()
    tr = fakes.FakeTrainer()
    path = tmp_path / "log.jsonl"
    with RunLogWriter(path) as log:
        stop = loop.execute(run, data, tr, log, clock=fakes.CLOCK)
    return read_log(path), tr, data, stop


# ----------------------------------------------------------------------------------------- clock


def test_eval_time_is_excluded_from_train_time(tmp_path):
    run = make_run(params={"eval_time": 100.0})
    log, tr, data, stop = run_fake(tmp_path, run)
    assert stop["status"] == "budget_time"
    assert len(log.evals) >= 4
    for e in log.evals:
        # train time is exactly the fake's step time x steps: eval's 100 s never leak in
        assert e["train_time_s"] == pytest.approx(0.25 * e["step"])
        assert e["eval_time_s"] == pytest.approx(100.0)
    # wall time counts the evaluations
    last = log.evals[-1]
    assert last["wall_time_s"] >= last["train_time_s"] + 100.0 * (len(log.evals) - 1)
    assert stop["train_time_s"] == pytest.approx(0.25 * stop["steps"])
    assert log.run_start["init_time_s"] == 0.0


def test_fair_cadence_and_subset(tmp_path):
    from slidebench.metrics import eval_subset
    run = make_run(budget={"train_seconds": 5.0})
    log, tr, data, stop = run_fake(tmp_path, run)
    n_test = data.X_test.shape[0]
    expected = np.asarray(eval_subset(n_test, 200, 0))
    assert not np.array_equal(np.sort(expected), np.arange(200)), "fair subset must not be a prefix"
    inter = tr.predicted[: len(log.evals)]
    for rows in inter:                                   # every intermediate eval: the same seeded subset
        assert np.array_equal(rows, expected)
    assert np.array_equal(np.sort(np.concatenate(tr.predicted[len(log.evals):])), np.arange(n_test))
    assert all(e["n_eval"] == 200 and e["subset"] == "subset200" for e in log.evals)
    assert stop["final_n_eval"] == n_test
    # eval points: at 0, then the first chunk ending at or after k*1.0 s (overshoot < one 0.25 s step)
    times = [e["train_time_s"] for e in log.evals]
    assert times[0] == 0.0
    for k, t in enumerate(times[1:-1], start=1):
        assert k <= t < k + 0.25 + 1e-9, times
    assert times[-1] == pytest.approx(stop["train_time_s"]) and 5.0 <= times[-1] < 5.25 + 1e-9
    # the subset is seeded by the DATA seed: another run seed gives the same rows
    run2 = make_run(budget={"train_seconds": 1.0}, seed=5)
    _, tr2, _, _ = run_fake(tmp_path / "b", run2, data)
    assert np.array_equal(tr2.predicted[0], expected)


def test_fair_every_steps(tmp_path):
    run = make_run(budget={"steps": 23}, ev={"every_steps": 5, "subset_size": 50})
    log, *_ , stop = run_fake(tmp_path, run)
    assert [e["step"] for e in log.evals] == [0, 5, 10, 15, 20, 23]
    assert stop["status"] == "budget_steps" and stop["steps"] == 23


def test_paper_protocol_prefix_and_epoch_ends(tmp_path):
    # 1000 training rows, batch 100 -> 10 batches per epoch; 2 epochs; eval every 4 batches
    run = make_run(protocol="paper", budget={"epochs": 2})
    assert run.trainer_params()["shuffle"] is False
    log, tr, data, stop = run_fake(tmp_path, run)
    n_test = data.X_test.shape[0]
    steps = [e["step"] for e in log.evals]
    assert steps == [0, 4, 8, 10, 12, 16, 20]
    subsets = [e["subset"] for e in log.evals]
    assert subsets == ["prefix100", "prefix100", "prefix100", "prefix250", "prefix100", "prefix100", "prefix250"]
    for e, rows in zip(log.evals, tr.predicted):
        size = 250 if e["reason"] == "epoch_end" else 100
        assert np.array_equal(rows, np.arange(size))     # a prefix of the (label-sorted) test file
    assert np.array_equal(np.concatenate(tr.predicted[len(log.evals):]), np.arange(n_test))
    assert stop["status"] == "budget_epochs" and stop["steps"] == 20 and stop["epoch"] == pytest.approx(2.0)
    # the fake's batches came in file order (shuffle=False)
    assert tr.stream.shuffle is False


def test_paper_and_fair_disagree_on_sorted_test_file(tmp_path):
    """The point of the paper protocol: on a label-sorted test file a prefix is biased."""
    data = fakes.make_dataset()
    a = run_fake(tmp_path / "f", make_run(budget={"steps": 8}, ev={"every_steps": 4, "subset_size": 100}), data)
    b = run_fake(tmp_path / "p", make_run(protocol="paper", budget={"steps": 8}), data)
    assert a[0].evals[0]["subset"] == "subset100" and b[0].evals[0]["subset"] == "prefix100"
    assert a[3]["final_n_eval"] == b[3]["final_n_eval"] == data.X_test.shape[0]


# ----------------------------------------------------------------------------------------- stops


def test_epoch_budget(tmp_path):
    run = make_run(budget={"epochs": 1.5, "train_seconds": 1000.0}, ev={"every_seconds": 1.0, "subset_size": 50})
    log, tr, data, stop = run_fake(tmp_path, run)
    assert stop["status"] == "budget_epochs" and stop["steps"] == 15 and stop["samples_seen"] == 1500


def test_time_budget_overshoots_at_most_one_step(tmp_path):
    run = make_run(budget={"train_seconds": 2.6})
    _, _, _, stop = run_fake(tmp_path, run)
    assert stop["status"] == "budget_time" and 2.6 <= stop["train_time_s"] < 2.6 + 0.25 + 1e-9


def test_target_stop_and_time_to_target(tmp_path):
    # quality grows 0.01 per step: P@1 on the subset crosses 0.3 around step 30 (7.5 train-s)
    run = make_run(budget={"train_seconds": 100.0, "target_p_at_1": 0.3}, params={"rate": 0.01})
    log, tr, data, stop = run_fake(tmp_path, run)
    assert stop["status"] == "reached_target"
    hits = [e for e in log.evals if e["p_at_1"] >= 0.3]
    assert hits and hits[0] is log.evals[-1]                 # stopped at the first eval at/above target
    assert all(e["p_at_1"] < 0.3 for e in log.evals[:-1])
    assert stop["time_to_target_s"] == pytest.approx(hits[0]["train_time_s"])
    assert 5.0 < stop["time_to_target_s"] < 12.0
    assert stop["final_p_at_1"] is not None


def test_target_without_stopping(tmp_path):
    run = make_run(budget={"train_seconds": 12.0, "target_p_at_1": 0.2, "stop_at_target": False},
                   params={"rate": 0.01})
    log, *_, stop = run_fake(tmp_path, run)
    assert stop["status"] == "budget_time" and stop["time_to_target_s"] is not None
    first = next(e for e in log.evals if e["p_at_1"] >= 0.2)
    assert stop["time_to_target_s"] == pytest.approx(first["train_time_s"])
    assert stop["best_p_at_1"] == max(e["p_at_1"] for e in log.evals)


def test_nan_loss_is_diverged(tmp_path):
    run = make_run(budget={"train_seconds": 100.0}, params={"nan_at_step": 7})
    log, tr, data, stop = run_fake(tmp_path, run)
    assert stop["status"] == "diverged"
    assert 7 <= stop["steps"] <= 14
    assert stop["final_p_at_1"] is None
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert all("NaN" not in l for l in lines)                 # strict JSON: NaN written as null
    for l in lines:
        json.loads(l)


def test_exception_in_train_steps_leaves_readable_error_log(tmp_path):
    run = make_run(budget={"train_seconds": 100.0}, params={"raise_at_step": 5})
    log, tr, data, stop = run_fake(tmp_path, run)
    assert stop["status"] == "error"
    assert "fake failure at step 5" in stop["error"] and "Traceback" in stop["error"]
    assert log.run_start is not None and log.run_stop["status"] == "error" and len(log.evals) >= 1
    assert not log.complete


def test_error_in_setup_and_device_unavailable(tmp_path):
    bad = make_run(params={"nonsense": 1})
    log, *_, stop = run_fake(tmp_path, bad)
    assert stop["status"] == "error" and "nonsense" in stop["error"]
    assert log.run_start is not None

    from slidebench.baselines import DeviceUnavailable

    class NoGPU(fakes.FakeTrainer):
        def setup(self, *a, **k):
            raise DeviceUnavailable("device='gpu' asked but no GPU is visible")

    path = tmp_path / "gpu.jsonl"
    with RunLogWriter(path) as w:
        stop = loop.execute(make_run(), fakes.make_dataset(), NoGPU(), w, clock=fakes.CLOCK)
    assert stop["status"] == "skipped" and "no GPU" in stop["reason"]
    assert read_log(path).complete


def test_adaptive_chunks_respect_cadence_with_fast_steps(tmp_path):
    run = make_run(budget={"train_seconds": 3.0}, ev={"every_seconds": 0.5, "subset_size": 50},
                   params={"step_time": 1 / 1024})
    log, tr, data, stop = run_fake(tmp_path, run)
    times = [e["train_time_s"] for e in log.evals]
    for k, t in enumerate(times[1:-1], start=1):
        assert k * 0.5 <= t <= k * 0.5 + 0.05, times       # chunks grow, but never far past an eval point
    assert stop["steps"] >= 3 * 1024


# ------------------------------------------------------------------------- files: rerun, resume


def test_rerun_replaces_only_its_own_file_and_failure_keeps_good_one(tmp_path):
    res = tmp_path / "results"
    fakes.CLOCK.advance(1)
    r0 = make_run(budget={"steps": 6}, ev={"every_steps": 3, "subset_size": 50}, seed=0)
    r1 = make_run(budget={"steps": 6}, ev={"every_steps": 3, "subset_size": 50}, seed=1)
    load = "fakes:load_fake"
    assert process.run_one(r0, res, data_loader=load, clock=fakes.CLOCK)["status"] == "budget_steps"
    assert process.run_one(r1, res, data_loader=load, clock=fakes.CLOCK)["status"] == "budget_steps"
    f0, f1 = r0.log_path(res), r1.log_path(res)
    assert f0.exists() and f1.exists() and not partial_path(f0).exists()
    b1 = f1.read_bytes()
    first = f0.read_bytes()
    time.sleep(1.1)                                          # run_start has a 1-second timestamp
    assert process.run_one(r0, res, data_loader=load, clock=fakes.CLOCK)["status"] == "budget_steps"
    second = f0.read_bytes()
    assert second != first and f1.read_bytes() == b1         # replaced its own file only
    # a failing rerun of the same configuration: the good file stays, the failure is kept beside it
    fakes.FAIL_NEXT["train"] = True
    stop = process.run_one(r0, res, data_loader=load, clock=fakes.CLOCK)
    assert stop["status"] == "error"
    assert f0.read_bytes() == second
    assert read_log(partial_path(f0)).status == "error"
    df = summarize_experiment("t", res)["runs"]
    assert len(df) == 2 and df["complete"].all()             # the summary uses the good log
    # --resume: finished runs are skipped without starting a process
    exp = parse_experiment({"experiment": {"name": "t"}, "data": {"preset": "amazon"}, "budget": {"steps": 6},
                            "eval": {"every_steps": 3}, "run": {"seeds": [0]},
                            "systems": [{"label": "FAKE", "system": "fake"}]}, tmp_path / "t.toml")
    out = executors.run_experiment(exp, [r0, r1], res, resume=True, progress=False)
    assert [o["action"] for o in out] == ["skipped_finished", "skipped_finished"]


def test_refuses_log_whose_hash_disagrees_with_its_name(tmp_path):
    res = tmp_path / "results"
    r0 = make_run(budget={"steps": 3}, ev={"every_steps": 3, "subset_size": 50})
    process.run_one(r0, res, data_loader="fakes:load_fake", clock=fakes.CLOCK)
    f0 = r0.log_path(res)
    lines = f0.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["config_hash"] = "deadbeef"
    f0.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
    with pytest.raises(process.RunError, match="disagrees"):
        executors.run_experiment(None, [r0], res, resume=True, progress=False)


def test_reuse_identical_run_from_another_experiment(tmp_path):
    res = tmp_path / "results"
    a = make_run(budget={"steps": 3}, ev={"every_steps": 3, "subset_size": 50}, experiment="expA", label="X")
    b = make_run(budget={"steps": 3}, ev={"every_steps": 3, "subset_size": 50}, experiment="expB", label="Y")
    assert a.config_hash == b.config_hash
    process.run_one(a, res, data_loader="fakes:load_fake", clock=fakes.CLOCK)
    out = executors.run_experiment(None, [b], res, resume=True, progress=False)
    assert out[0]["action"] == "reused"
    la, lb = read_log(a.log_path(res)), read_log(b.log_path(res))
    assert lb.run_start["reused_from"] == str(a.log_path(res))
    assert lb.evals == la.evals and lb.run_stop == la.run_stop
    runs = summarize_experiment("expB", res)["runs"]
    assert list(runs["label"]) == ["Y"] and list(runs["experiment"]) == ["expB"]


def _slide_run(experiment="t", label="SLIDE") -> RunSpec:
    """A real SLIDE run on the fake data (50 labels): 10 sampled outputs, so the trainer's row order fits."""
    return RunSpec(experiment=experiment, label=label, system="slide", config="default",
                   params={"hidden": [8], "active": 10}, sweep={}, seed=0, n_threads=1, batch_size=50,
                   protocol="fair", data={"preset": "amazon", "scale": "tiny", "data_dir": None, "seed": 0},
                   budget={"steps": 3, "stop_at_target": False}, eval={"every_steps": 3, "subset_size": 50})


@pytest.mark.parametrize("old_order", ["sample", None])
def test_resume_refuses_a_finished_slide_log_trained_in_another_pass_order(tmp_path, old_order):
    """The config hash does not include the pass order the trainer resolves (run ids stay stable), so a log
    from before the row order has the same name as today's run: --resume must not skip it as done, nor
    reuse it for an identical run elsewhere; it stops before running anything and leaves the log as it was."""
    res = tmp_path / "results"
    run = _slide_run()
    assert process.run_one(run, res, data_loader="fakes:load_fake")["status"] == "budget_steps"
    final = run.log_path(res)
    assert read_log(final).run_start["describe"]["engine"]["out_pass"] == "row"
    out = executors.run_experiment(None, [run], res, resume=True, progress=False, data_loader="fakes:load_fake")
    assert out[0]["action"] == "skipped_finished"                     # today's log: done
    twin = _slide_run(experiment="other", label="S2")
    assert twin.config_hash == run.config_hash
    assert executors.find_reusable(twin, res) == final
    fakes.set_logged_pass_order(final, old_order)
    before = final.read_bytes()
    with pytest.raises(process.RunError, match="'sample' pass order.*'row' order.*Nothing was run"):
        executors.run_experiment(None, [run], res, resume=True, progress=False, data_loader="fakes:load_fake")
    assert final.read_bytes() == before
    assert executors.find_reusable(twin, res) is None
    # naming out_pass in the params puts it in the hash: that run never meets the old log
    named = RunSpec(**{**run.__dict__, "params": {**run.params, "out_pass": "sample"}})
    assert named.config_hash != run.config_hash


# ------------------------------------------------------------------------------- child process


def test_sigkill_leaves_readable_prefix_marked_incomplete(tmp_path):
    res = tmp_path / "results"
    run = make_run(budget={"train_seconds": 60.0}, ev={"every_seconds": 0.1, "subset_size": 50},
                   params={"step_time": 0.02, "fake_clock": False})
    proc = process.start(run, res, progress=False, data_loader="fakes:load_fake", extra_env=CHILD_ENV,
                        stdout=subprocess.DEVNULL)
    part = partial_path(run.log_path(res))
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if part.exists() and part.read_text().count('"type": "eval"') >= 3:
                break
            assert proc.poll() is None, "child ended early"
            time.sleep(0.05)
        else:
            pytest.fail("child wrote no evaluations in 60 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    log = read_log(part)
    assert log.run_start is not None and log.run_start["manifest"]["thread_env"]["OMP_NUM_THREADS"] == "1"
    assert len(log.evals) >= 3 and log.run_stop is None
    assert not run.log_path(res).exists()
    df = summarize_experiment("t", res)
    runs = df["runs"]
    assert len(runs) == 1 and runs["status"].iloc[0] == "incomplete" and not runs["complete"].iloc[0]
    assert len(df["curves"]) == len(log.evals)
    assert df["ttt"].empty                                       # incomplete runs do not count


def test_hung_run_is_killed_at_wall_limit_and_marked_incomplete(tmp_path, monkeypatch):
    res = tmp_path / "results"
    # 60 s train budget but a 3 s wall limit: the watchdog must kill the child, keep its partial log
    run = make_run(budget={"train_seconds": 60.0}, ev={"every_seconds": 0.1, "subset_size": 50},
                   params={"step_time": 0.02, "fake_clock": False})
    monkeypatch.setenv("SLIDEBENCH_RUN_TIMEOUT", "3")
    assert process.wall_limit(run) == 3.0
    t0 = time.monotonic()
    out = executors.run_experiment(None, [run], res, progress=False, data_loader="fakes:load_fake",
                                extra_env=CHILD_ENV)
    assert time.monotonic() - t0 < 30
    assert out[0]["action"] == "ran" and out[0]["status"] == "incomplete"
    assert not run.log_path(res).exists()
    assert summarize_experiment("t", res)["runs"]["status"].iloc[0] == "incomplete"
    monkeypatch.delenv("SLIDEBENCH_RUN_TIMEOUT")
    assert process.wall_limit(run) == 3 * 60.0 + 600.0


def test_child_process_run_records_threads_and_finishes(tmp_path):
    res = tmp_path / "results"
    run = make_run(budget={"steps": 5}, ev={"every_steps": 5, "subset_size": 50},
                   params={"step_time": 0.0, "fake_clock": False})
    process.launch(run, res, progress=False, data_loader="fakes:load_fake", extra_env=CHILD_ENV)
    log = read_log(run.log_path(res))
    assert log.complete and log.run_stop["status"] == "budget_steps"
    m = log.run_start["manifest"]
    assert m["thread_env"]["OMP_NUM_THREADS"] == "1" and m["thread_env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert isinstance(m["threadpools"], list)
    assert all(tp["num_threads"] == 1 for tp in m["threadpools"])
    assert m["cpu_model"] and m["cores_logical"] >= 1 and "numpy" in m["libraries"]
    assert "git_sha" in m and m["engine"] == "not used by this system"
    assert log.run_start["dataset"]["sha256"] == "fake0"


# -------------------------------------------------------------------------------- summaries


def test_olympic_mean():
    assert olympic_mean([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5)
    assert olympic_mean([1.0, 5.0]) == pytest.approx(3.0)
    assert olympic_mean([3.0, 1.0, 2.0]) == pytest.approx(2.0)
    assert math.isnan(olympic_mean([]))


def test_summary_schema_and_ttt(tmp_path):
    res = tmp_path / "results"
    for seed, rate in [(0, 0.01), (1, 0.012), (2, 0.008), (3, 0.02)]:
        r = make_run(budget={"train_seconds": 20.0, "target_p_at_1": 0.3}, seed=seed, params={"rate": rate},
                     experiment="s")
        # the rate is a param, so each seed has its own hash; group by label/threads/batch
        process.run_one(r, res, data_loader="fakes:load_fake", clock=fakes.CLOCK)
    out = summarize_experiment("s", res)
    from slidebench.reporting.summarize import CURVE_COLS, RUN_COLS
    assert list(out["curves"].columns[: len(CURVE_COLS)]) == CURVE_COLS
    assert list(out["runs"].columns[: len(RUN_COLS)]) == RUN_COLS
    for name in ("s_curves.csv", "s_runs.csv", "s_ttt.csv"):
        assert (res / "summary" / name).exists()
    runs = out["runs"]
    assert (runs["status"] == "reached_target").all()
    ttt = out["ttt"]
    assert len(ttt) == 1 and ttt["n_seeds"].iloc[0] == 4 and ttt["n_reached"].iloc[0] == 4
    t = sorted(runs["time_to_target_s"])
    assert ttt["ttt_olympic_mean_s"].iloc[0] == pytest.approx(np.mean(t[1:-1]))
    assert ttt["ttt_min_s"].iloc[0] == pytest.approx(t[0]) and ttt["ttt_max_s"].iloc[0] == pytest.approx(t[-1])


def _header(path: Path) -> list[str]:
    return path.read_text().splitlines()[0].split(",")


def test_summary_columns_are_the_committed_ones_plus_the_sizes_and_params(tmp_path):
    """The CSV columns summarize writes from the harness's own records are those of the committed reference
    run's summaries (results/summary/ablation_*.csv, a swept experiment): each data set's sizes and the
    run's params in the runs CSV, the data set in the ttt CSV."""
    import dataclasses
    res = tmp_path / "results"
    for K in (4, 8):
        r = make_run(budget={"train_seconds": 3.0, "target_p_at_1": 0.3}, params={"rate": 0.01 * K},
                     experiment="ablation")
        process.run_one(dataclasses.replace(r, label="SLIDE-K", sweep={"K": K, "hash": "dwta"}), res,
                       data_loader="fakes:load_fake", clock=fakes.CLOCK)
    summarize_experiment("ablation", res)
    committed = REPO / "results" / "summary"
    runs = _header(committed / "ablation_runs.csv")
    assert {"n_features", "n_labels", "n_train", "params", "param_K", "param_hash"} <= set(runs)
    assert _header(res / "summary" / "ablation_runs.csv") == runs
    assert _header(res / "summary" / "ablation_curves.csv") == _header(committed / "ablation_curves.csv")
    assert _header(res / "summary" / "ablation_ttt.csv") == _header(committed / "ablation_ttt.csv")
    assert _header(committed / "ablation_ttt.csv")[0] == "dataset"


def test_summarize_names_record_fields_through_runlog():
    """summarize reads the run-log fields through runlog.select: one definition, checked at import."""
    from slidebench.harness.runlog import EVAL_FIELDS, START_FIELDS, STOP_FIELDS, select
    from slidebench.reporting import summarize as sm
    assert set(sm.START_ID) <= set(START_FIELDS) and set(sm.EVAL_CURVE + sm.EVAL_EXTRA) <= set(EVAL_FIELDS)
    assert set(sm.STOP_FINAL) <= set(STOP_FIELDS)
    assert select(STOP_FIELDS, "steps", "status") == ("steps", "status")
    with pytest.raises(KeyError, match="no field.*'p_at_2'"):
        select(EVAL_FIELDS, "p_at_1", "p_at_2")


def test_truncated_last_line_is_tolerated_and_corruption_is_not(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"type": "run_start", "seed": 0}\n{"type": "eval", "step": 1}\n{"type": "ev')
    log = read_log(p)
    assert log.truncated and len(log.evals) == 1 and log.status == "incomplete"
    p.write_text('{"type": "run_start"}\nnot json\n{"type": "eval"}\n')
    with pytest.raises(ValueError, match="x.jsonl:2"):
        read_log(p)


def test_summary_keeps_the_manifest_so_the_report_has_it_without_raw_logs(tmp_path):
    import shutil
    from slidebench.reporting.report import render_report
    res = tmp_path / "results"
    run = make_run(budget={"steps": 3}, ev={"every_steps": 3, "subset_size": 50})
    process.run_one(run, res, data_loader="fakes:load_fake", clock=fakes.CLOCK)
    summarize_experiment("t", res)
    saved = json.loads((res / "summary" / "t_manifest.json").read_text())
    assert saved == read_log(run.log_path(res)).run_start["manifest"]
    shutil.rmtree(res / "raw")                     # a clone: raw logs are not committed
    text = render_report(res, ["t"])
    assert "kept by `summarize` in `summary/t_manifest.json`" in text
    assert saved["cpu_model"] in text


def test_micro_resume_remeasures_committed_csv_and_skips_only_what_ran_here(tmp_path):
    from slidebench.harness.spec import load_experiment
    exp = load_experiment(REPO / "experiments" / "fig11.toml")
    res = tmp_path / "results"
    (res / "summary").mkdir(parents=True)
    (res / "summary" / "fig11.csv").write_text("a committed reference csv\n")   # as in a fresh clone
    out = executors.run_micro_experiment(exp, res, scale="tiny", threads=1, resume=True, progress=False)
    assert out["action"] == "ran" and out["status"] == "ok"
    assert (res / "summary" / "fig11.csv").read_text() != "a committed reference csv\n"
    assert (res / "raw" / "fig11" / "micro-done.json").exists()
    again = executors.run_micro_experiment(exp, res, scale="tiny", threads=1, resume=True, progress=False)
    assert again["action"] == "skipped_finished"


def test_the_runner_executes_seed_rounds_in_that_order(tmp_path, capsys):
    """The real runner (child processes, the fake trainer): with [run] order "interleaved" the runs
    start seed round by seed round; the returned list stays in grid order."""
    from types import SimpleNamespace
    res = tmp_path / "results"
    grid = [make_run(budget={"steps": 2}, ev={"every_steps": 2, "subset_size": 50}, seed=s, label=lab,
                     params={"step_time": 0.0, "fake_clock": False})
            for lab in ("A", "B") for s in (0, 1)]               # grid order: A s0, A s1, B s0, B s1
    out = executors.run_experiment(SimpleNamespace(order="interleaved"), grid, res, progress=True,
                                   data_loader="fakes:load_fake", extra_env=CHILD_ENV)
    assert [o["run_id"] for o in out] == [r.run_id for r in grid]
    started = [line.split("] ", 1)[1].split(":", 1)[0] for line in capsys.readouterr().out.splitlines()
               if line.startswith("[") and "/4] " in line]
    assert [s.split("/")[1] + "/" + s.split("/")[2][:2] for s in started] == ["A/s0", "B/s0", "A/s1", "B/s1"]


def test_summarize_names_the_swept_value_of_a_run_from_before_the_sweep(tmp_path):
    """Found in long_sampled: its lr-3e-2 run was made before the file swept lr and reused by --resume,
    so its log has no sweep and the report's lr column said '-' for it. Its own params fill it in."""
    d = tmp_path / "results" / "raw" / "x" / "A"
    d.mkdir(parents=True)
    for lr, sweep, h in ((0.03, {}, "aaaa"), (0.01, {"lr": 0.01}, "bbbb")):
        params = {"lr": lr, "batch_size": 8}
        lines = [{"type": "run_start", "experiment": "x", "label": "A", "system": "fake", "config": "c", "seed": 0,
                  "n_threads": 1, "batch_size": 8, "protocol": "fair", "params": params, "sweep": sweep,
                  "run_id": f"x/A/s0-{h}", "dataset": {"name": "d"}},
                 {"type": "eval", "step": 1, "train_time_s": 1.0, "p_at_1": 0.1, "samples_seen": 8, "epoch": 0.1},
                 {"type": "run_stop", "status": "budget_time", "train_time_s": 1.0, "steps": 1}]
        (d / f"s0-{h}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = summarize_experiment("x", tmp_path / "results", write=False)
    lrs = dict(zip(out["runs"]["run_id"], out["runs"]["param_lr"]))
    assert lrs == {"x/A/s0-aaaa": 0.03, "x/A/s0-bbbb": 0.01}
    assert set(out["curves"]["param_lr"]) == {0.03, 0.01}
