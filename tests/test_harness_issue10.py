"""Issue 10: data by path, validation split, log-spaced evaluations, the eval hook, checks before any run,
divergence on the real engine, locks (two runners, busy runs, child dies with parent), the Dask executor."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import fakes
from slidebench.cli import main
from slidebench.harness import executors, process
from slidebench.harness.checks import check_runs
from slidebench.harness.loop import EvalSchedule, execute
from slidebench.harness.runlog import RunLogWriter, read_log
from slidebench.harness.spec import RunSpec, SpecError, expand, load_experiment, parse_experiment
from slidebench.trainers import register

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
register("fake", "fakes:FakeTrainer")
register("fake_hook", "test_harness_issue10:HookTrainer")
CHILD_ENV = {"PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])}


def fake_run(seed=0, params=None, budget=None, ev=None, data=None, system="fake", label="FAKE", experiment="t"):
    p = {"step_time": 0.0, "rate": 0.02}
    p.update(params or {})
    return RunSpec(experiment=experiment, label=label, system=system, config="default", params=p, sweep={},
                   seed=seed, n_threads=1, batch_size=100, protocol="fair",
                   data=data or {"preset": "amazon", "scale": "tiny", "data_dir": None, "seed": 0},
                   budget=budget or {"steps": 12, "stop_at_target": True},
                   eval=ev or {"every_steps": 4, "subset_size": 200})


def write_xml(path: Path, X, Y, header=None) -> Path:
    from slidebench.data import write_xmlrepo
    write_xmlrepo(path, X, Y)
    if header is not None:
        b = path.read_bytes()
        path.write_bytes(header + b)
    return path


# ------------------------------------------------------------------------------ divergence (real engine)


def test_nan_inside_a_chunk_is_diverged_on_the_real_engine(tmp_path):
    from slidebench.trainers.slide import SlideTrainer
    ds = fakes.make_dataset(n_train=2000, n_test=200)
    run = RunSpec(experiment="t", label="SLIDE", system="slide", config="default",
                  params={"lr": 1e30, "optimizer": "sgd", "hidden": [16], "sampler": "full", "init_std": 1.0},
                  sweep={}, seed=0, n_threads=1, batch_size=32, protocol="fair",
                  data={"preset": None, "scale": None, "data_dir": None, "seed": 0},
                  budget={"steps": 200, "stop_at_target": True}, eval={"every_steps": 100, "subset_size": 100})
    tr = SlideTrainer()
    with RunLogWriter(tmp_path / "l.jsonl") as log:
        stop = execute(run, ds, tr, log)
    assert stop["status"] == "diverged" and stop["error"] is None
    assert 1 <= stop["steps"] < 200
    assert stop["steps"] == tr.stream.steps           # the steps really done, counted from the runner's stream
    log = read_log(tmp_path / "l.jsonl")
    assert log.run_stop["final_p_at_1"] is None       # no final evaluation after divergence


# ------------------------------------------------------------------------------ eval schedule and hook


def test_log_spaced_schedule_is_capped_by_every():
    s = EvalSchedule({"every_seconds": 5.0, "ratio": 2.0, "first_seconds": 0.5})
    assert s.points(20) == [0.5, 1.0, 2.0, 4.0, 8.0, 13.0, 18.0]
    s = EvalSchedule({"every_steps": 10, "ratio": 1.5, "first_steps": 2})
    pts = s.points(40)
    assert pts[:4] == [2, 3, 5, 8] and all(b - a <= 10 for a, b in zip(pts, pts[1:]))
    assert EvalSchedule({"every_seconds": 5.0}).points(16) == [5.0, 10.0, 15.0]


def test_ratio_keys_are_validated(tmp_path):
    base = {"experiment": {"name": "x"}, "data": {"preset": "amazon"}, "budget": {"steps": 10},
            "run": {"seeds": [0]}, "systems": [{"label": "A", "system": "fake"}]}
    ok = parse_experiment({**base, "eval": {"every_seconds": 5, "ratio": 1.1, "first_seconds": 0.5}}, tmp_path / "x.toml")
    assert ok.eval["ratio"] == 1.1 and ok.eval["first_seconds"] == 0.5
    for ev, msg in [({"every_seconds": 5, "ratio": 1.1}, "needs 'first_seconds'"),
                    ({"every_seconds": 5, "ratio": 1.0, "first_seconds": 1}, "must be a number > 1"),
                    ({"every_seconds": 5, "first_seconds": 1}, "only goes with 'ratio'"),
                    ({"every_steps": 5, "ratio": 2, "first_seconds": 1}, "does not go with")]:
        with pytest.raises(SpecError, match=msg):
            parse_experiment({**base, "eval": ev}, tmp_path / "x.toml")


class HookTrainer(fakes.FakeTrainer):
    def eval_metrics(self, X):
        return {"rows": int(X.shape[0]), "steps": self.steps}


def test_eval_hook_is_stored_in_every_eval_record(tmp_path):
    run = fake_run(system="fake_hook", params={"fake_clock": True, "step_time": 0.1})
    with RunLogWriter(tmp_path / "l.jsonl") as log:
        execute(run, fakes.make_dataset(), HookTrainer(), log, clock=fakes.CLOCK)
    evals = read_log(tmp_path / "l.jsonl").evals
    assert len(evals) >= 3
    assert [e["trainer_metrics"]["steps"] for e in evals] == [e["step"] for e in evals]
    assert all(e["trainer_metrics"]["rows"] == e["n_eval"] for e in evals)


# ------------------------------------------------------------------------------ data by path, validation


def _files(tmp_path, n_train=300, n_test=120):
    ds = fakes.make_dataset(n_train=n_train, n_test=n_test)
    d = tmp_path / "mydata"
    d.mkdir()
    write_xml(d / "tr.txt", ds.X_train, ds.Y_train)
    write_xml(d / "te.txt", ds.X_test, ds.Y_test)
    return d


def test_data_by_path_relative_named_and_budget_not_paper(tmp_path):
    d = _files(tmp_path)
    f = tmp_path / "mine.toml"
    f.write_text(textwrap.dedent("""
        [experiment]
        name = "mine"
        [data]
        train = "mydata/tr.txt"
        test = "mydata/te.txt"
        name = "MySet"
        [budget]
        steps = 20
        target_p_at_1 = { MySet = 0.5 }
        [budget.paper]
        train_seconds = 3600
        [eval]
        every_steps = 5
        [run]
        seeds = [0]
        [[systems]]
        label = "SLIDE"
        system = "slide"
    """))
    exp = load_experiment(f)
    runs = expand(exp)
    assert runs[0].data["train"] == str((d / "tr.txt").resolve()) and runs[0].data["name"] == "MySet"
    assert exp.name == "mine" and runs[0].experiment == "mine"
    assert runs[0].budget == {"steps": 20, "target_p_at_1": 0.5, "stop_at_target": True}   # never [budget.paper]
    assert expand(exp, scale="paper")[0].budget["train_seconds"] == 3600                   # a scale the user names
    assert expand(exp, data_dir=tmp_path)[0].data == runs[0].data                          # --data-dir: presets only
    check_runs(exp, runs)
    ds = process.load_data(runs[0])
    assert ds.name == "MySet" and ds.X_train.shape[0] == 300


def test_validation_split_is_seeded_disjoint_named_and_hashed(tmp_path):
    from slidebench.data import split_validation
    ds = fakes.make_dataset(n_train=1000)
    v1, v2 = split_validation(ds, 0.1, 0), split_validation(ds, 0.1, 0)
    assert v1.name == ds.name + "/val" and v1.X_test.shape[0] == 100 and v1.X_train.shape[0] == 900
    assert (v1.X_test != v2.X_test).nnz == 0                                   # seeded
    row_id = ds.n_labels                                                       # fakes encode row ids
    tr_ids = set(np.asarray(v1.X_train[:, row_id].todense()).ravel())
    va_ids = set(np.asarray(v1.X_test[:, row_id].todense()).ravel())
    assert not tr_ids & va_ids and len(tr_ids | va_ids) == 1000
    base = {"experiment": {"name": "x"}, "data": {"preset": "amazon"}, "budget": {"steps": 10},
            "eval": {"every_steps": 5}, "run": {"seeds": [0]}, "systems": [{"label": "A", "system": "fake"}]}
    plain = expand(parse_experiment(base, tmp_path / "x.toml"))[0]
    val = expand(parse_experiment({**base, "data": {"preset": "amazon", "validation": 0.1}}, tmp_path / "x.toml"))[0]
    assert plain.config_hash != val.config_hash and "validation" not in plain.data
    with pytest.raises(SpecError, match="validation"):
        parse_experiment({**base, "data": {"preset": "amazon", "validation": 0.7}}, tmp_path / "x.toml")


def test_validation_run_never_evaluates_on_the_test_set(tmp_path):
    run = fake_run(data={"preset": "amazon", "scale": "tiny", "data_dir": None, "seed": 0, "validation": 0.2})
    stop = process.run_one(run, tmp_path, data_loader="fakes:load_fake")
    log = read_log(run.log_path(tmp_path))
    assert stop["status"] == "budget_steps"
    assert log.run_start["dataset"]["name"].endswith("/val") and log.run_start["dataset"]["n_test"] == 200
    assert stop["final_n_eval"] == 200                    # the held-out training rows, not the 500 test rows


def test_cache_is_keyed_by_content_and_reused_through_a_link(tmp_path, monkeypatch):
    from slidebench.data import xmlrepo as xr
    d = _files(tmp_path)
    xr.read_xmlrepo(d / "tr.txt")
    link = tmp_path / "elsewhere"
    link.mkdir()
    (link / "train.txt").symlink_to(d / "tr.txt")
    monkeypatch.setattr(xr, "_parse_stream", lambda *a, **k: pytest.fail("cache not reused"))
    X, _ = xr.read_xmlrepo(link / "train.txt")
    assert X.shape[0] == 300


def test_data_stats_of_any_files(tmp_path, capsys):
    d = _files(tmp_path)
    assert main(["data", "stats", str(d / "tr.txt"), str(d / "te.txt"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)[0]
    assert "mydata" in json.dumps(st)


def test_bom_gets_its_own_message(tmp_path, capsys):
    from slidebench.data import XMLRepoFormatError, read_header
    ds = fakes.make_dataset(n_train=20, n_test=10)
    p = write_xml(tmp_path / "bom.txt", ds.X_train, ds.Y_train, header=b"\xef\xbb\xbf")
    with pytest.raises(XMLRepoFormatError, match="byte-order mark"):
        read_header(p)
    t = tmp_path / "b.toml"
    t.write_bytes(b"\xef\xbb\xbf[experiment]\nname = 'b'\n")
    with pytest.raises(SpecError, match="byte-order mark"):
        load_experiment(t)


# ------------------------------------------------------------------------------ checks before any run


BAD = [('K = "six"', "'K'"), ("K = -2", "'K'"), ("nope = 1", "nope"), ('sampler = "zz"', "sampler"),
       ("lr = -1", "'lr'"), ("hidden = 0", "hidden")]


@pytest.mark.parametrize("param,key", BAD)
def test_bad_params_fail_the_dry_run_naming_file_label_key(tmp_path, capsys, param, key):
    f = tmp_path / "bad.toml"
    f.write_text(textwrap.dedent(f"""
        [experiment]
        name = "bad"
        [data]
        preset = "amazon"
        scale = "tiny"
        [budget]
        steps = 5
        [eval]
        every_steps = 5
        [run]
        seeds = [0]
        [[systems]]
        label = "MySLIDE"
        system = "slide"
        params = {{ {param} }}
    """))
    rc = main(["run", str(f), "--dry-run", "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and str(f) in err and "'MySLIDE'" in err and key in err
    assert "Traceback" not in err


def test_tf_params_checked_without_tensorflow(tmp_path):
    from slidebench.trainers import validate_params
    with pytest.raises(ValueError, match="'lr'"):
        validate_params("tf_full_softmax", {"batch_size": 128, "lr": -1}, 100, 50)
    with pytest.raises(MemoryError, match="needs about"):
        validate_params("tf_full_softmax", {"batch_size": 128, "hidden": [4096]}, 10**8, 10**7)
    code = ("import sys; from slidebench.trainers import validate_params as v; "
            "v('tf_sampled_softmax', {'batch_size': 128}, 100, 50); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_threads_above_cores_refused_unless_oversubscribe(tmp_path):
    base = {"experiment": {"name": "x"}, "data": {"preset": "amazon", "scale": "tiny"}, "budget": {"steps": 10},
            "eval": {"every_steps": 5}, "run": {"seeds": [0], "threads": [1024]},
            "systems": [{"label": "S", "system": "slide"}]}
    exp = parse_experiment(base, tmp_path / "x.toml")
    with pytest.raises(SpecError, match="threads = 1024.*--oversubscribe"):
        check_runs(exp, expand(exp), cores=2)
    check_runs(exp, expand(exp), cores=2, oversubscribe=True)


def test_subset_larger_than_the_test_set_is_an_error(tmp_path):
    base = {"experiment": {"name": "x"}, "data": {"preset": "amazon", "scale": "tiny"}, "budget": {"steps": 10},
            "eval": {"every_seconds": 5, "subset_size": 100000}, "run": {"seeds": [0]},
            "systems": [{"label": "S", "system": "slide"}]}
    exp = parse_experiment(base, tmp_path / "x.toml")
    with pytest.raises(SpecError, match="subset_size"):
        check_runs(exp, expand(exp))


def test_summarize_of_an_unknown_experiment_is_an_error(tmp_path, capsys):
    assert main(["summarize", "nope", "--results-dir", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


# ------------------------------------------------------------------------------ locks


def test_busy_run_is_not_touched(tmp_path):
    run = fake_run()
    final = run.log_path(tmp_path)
    final.parent.mkdir(parents=True)
    with process.run_lock(final):
        with pytest.raises(process.RunBusy):
            process.run_one(run, tmp_path, data_loader="fakes:load_fake")
    assert not final.exists()
    assert process.run_one(run, tmp_path, data_loader="fakes:load_fake")["status"] == "budget_steps"


RUNNER = """
import sys, json
sys.path[:0] = {paths!r}
from slidebench.trainers import register
register("fake", "fakes:FakeTrainer")
from slidebench.harness.executors import run_experiment
from slidebench.harness.spec import RunSpec
runs = [RunSpec.from_json(s) for s in json.loads(sys.argv[1])]
res = run_experiment(None, runs, sys.argv[2], resume="--resume" in sys.argv, progress=False,
                     data_loader="fakes:load_fake", extra_env={extra!r})
print(json.dumps([r["status"] for r in res]))
"""


def test_two_runners_on_one_results_dir_never_corrupt_a_log(tmp_path):
    runs = [fake_run(seed=s, params={"step_time": 0.02}) for s in range(3)]
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(paths=[str(TESTS), str(REPO)], extra=CHILD_ENV))
    arg = json.dumps([r.to_json() for r in runs])
    res = tmp_path / "res"
    procs = [subprocess.Popen([sys.executable, str(script), arg, str(res)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **CHILD_ENV}) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert any("in use by another slidebench runner" in err for _, err in outs)      # the second one waited
    for r in runs:
        log = read_log(r.log_path(res))                                          # parses, complete
        assert log.status == "budget_steps" and not log.truncated
    again = subprocess.run([sys.executable, str(script), arg, str(res), "--resume"], capture_output=True, text=True,
                           env={**os.environ, **CHILD_ENV}, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout) == ["budget_steps"] * 3


PARENT = """
import sys, time
sys.path[:0] = {paths!r}
from slidebench.trainers import register
register("fake", "fakes:FakeTrainer")
from slidebench.harness.process import start
from slidebench.harness.spec import RunSpec
p = start(RunSpec.from_json(sys.argv[1]), sys.argv[2], progress=False, data_loader="fakes:load_fake",
          extra_env={extra!r})
print(p.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_child_dies_with_its_parent(tmp_path):
    run = fake_run(params={"step_time": 0.5}, budget={"steps": 1000, "stop_at_target": True})
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(paths=[str(TESTS), str(REPO)], extra=CHILD_ENV))
    parent = subprocess.Popen([sys.executable, str(script), run.to_json(), str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, **CHILD_ENV})
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its parent")


# ------------------------------------------------------------------------------ Dask executor


def test_dask_local_cluster_gives_the_same_runs_as_sequential(tmp_path):
    pytest.importorskip("distributed")
    slide = RunSpec(experiment="t", label="SLIDE", system="slide", config="default",
                    params={"hidden": [16], "sampler": "vanilla", "K": 2, "L": 4, "range_pow": 6, "lr": 1e-2},
                    sweep={}, seed=0, n_threads=1, batch_size=50, protocol="fair",
                    data={"preset": "amazon", "scale": "tiny", "data_dir": None, "seed": 0},
                    budget={"steps": 30, "stop_at_target": True}, eval={"every_steps": 10, "subset_size": 200})
    runs = [fake_run(seed=s) for s in range(2)] + [slide]
    seq = executors.run_experiment(None, runs, tmp_path / "seq", progress=False, data_loader="fakes:load_fake",
                                   extra_env=CHILD_ENV)
    dsk = executors.run_experiment(None, runs, tmp_path / "dask", progress=False, data_loader="fakes:load_fake",
                                   extra_env=CHILD_ENV, executor="dask", workers=2)     # 2 worker processes
    assert [r["run_id"] for r in dsk] == [r["run_id"] for r in seq]
    assert {r["worker_host"] for r in dsk} and all(r["action"] == "ran" for r in dsk)
    assert all(r["cpus"] is not None and len(r["cpus"]) == 1 for r in dsk)          # each run pinned to its core
    assert read_log(slide.log_path(tmp_path / "dask")).run_start["manifest"]["cores_available"] == 1
    for r in runs:
        a, b = read_log(r.log_path(tmp_path / "seq")), read_log(r.log_path(tmp_path / "dask"))
        assert a.status == b.status and a.status.startswith(("budget", "reached"))
        assert (a.run_stop["steps"], a.run_stop["final_p_at_1"]) == (b.run_stop["steps"], b.run_stop["final_p_at_1"])
        assert [e["p_at_1"] for e in a.evals] == [e["p_at_1"] for e in b.evals]


def test_a_corrupted_final_log_is_moved_aside_and_rerun(tmp_path, capsys):
    run = fake_run()
    final = run.log_path(tmp_path)
    final.parent.mkdir(parents=True)
    final.write_text('{"type": "run_start"}{"type": "eval"}\n{"type": "run_stop", "status": "budget_steps"}\n')
    res = executors.run_experiment(None, [run], tmp_path, resume=True, progress=False, data_loader="fakes:load_fake",
                                   extra_env=CHILD_ENV)
    assert res[0]["status"] == "budget_steps" and read_log(final).status == "budget_steps"
    assert len(list(final.parent.glob("*.corrupt-*"))) == 1 and "moved it to" in capsys.readouterr().err


@contextmanager
def lock_held_by_another_process(results_dir: Path):
    """The results folder's lock, held by another process (another runner) until the block ends."""
    lock = Path(results_dir) / "raw" / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    code = ("import sys; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        yield
    finally:
        p.stdin.close()
        p.wait(timeout=30)


def another_process_can_lock(results_dir: Path) -> bool:
    code = ("import sys; from filelock import FileLock, Timeout\n"
            "try: FileLock(sys.argv[1]).acquire(timeout=0)\nexcept Timeout: sys.exit(3)")
    rc = subprocess.run([sys.executable, "-c", code, str(Path(results_dir) / "raw" / ".lock")]).returncode
    assert rc in (0, 3)
    return rc == 0


def test_no_wait_refuses_a_results_dir_in_use(tmp_path):
    with lock_held_by_another_process(tmp_path):
        with pytest.raises(process.RunError, match="in use by another slidebench runner.*--no-wait"):
            executors.run_experiment(None, [fake_run()], tmp_path, progress=False, data_loader="fakes:load_fake",
                                     extra_env=CHILD_ENV, wait=False)
    assert not fake_run().log_path(tmp_path).exists()


def test_results_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    outer = executors.results_lock(os.path.relpath(tmp_path))  # another spelling of the same folder
    try:
        inner = executors.results_lock(tmp_path, wait=False)      # no wait, no error: this process holds it
        assert inner is outer
        inner.release()
        assert not another_process_can_lock(tmp_path)            # the outer hold still keeps others out
    finally:
        outer.release()
    assert another_process_can_lock(tmp_path)


REPRO = """
[experiment]
name = "{name}"
[data]
preset = "amazon"
scale = "tiny"
[budget]
steps = 4
[eval]
every_steps = 4
[run]
seeds = [0]
threads = [1]
[[systems]]
label = "SLIDE"
system = "slide"
"""


def test_reproduce_holds_the_results_lock_from_first_experiment_to_report(tmp_path, monkeypatch):
    """One hold for the whole reproduce: at every experiment, between experiments (their summaries), and
    for figures and report, no other runner can take the results folder; it is free again afterwards."""
    import slidebench.data
    from slidebench.reporting import plots, report, summarize
    exps, res = tmp_path / "experiments", tmp_path / "results"
    exps.mkdir()
    for name in ("a", "b"):
        (exps / f"{name}.toml").write_text(REPRO.replace("{name}", name))
    seen = []

    def probe(what):
        def f(*args, **kw):
            seen.append((what, another_process_can_lock(res)))
            return []
        return f

    monkeypatch.setattr(executors, "_run_grid", probe("grid"))    # the real run_experiment takes the lock again
    monkeypatch.setattr(summarize, "summarize", probe("summarize"))
    monkeypatch.setattr(plots, "make_figures", probe("figures"))
    monkeypatch.setattr(report, "write_report", probe("report"))
    monkeypatch.setattr(slidebench.data, "load_dataset", lambda *a, **k: type("D", (), {"name": "amazon-tiny"}))
    rc = main(["reproduce", "--scale", "tiny", "--experiments-dir", str(exps), "--results-dir", str(res),
               "--no-wait"])
    assert rc == 0
    assert [w for w, _ in seen] == ["grid", "summarize", "grid", "summarize", "summarize", "figures", "report"]
    assert not any(free for _, free in seen), seen
    assert another_process_can_lock(res)


def test_reproduce_no_wait_refuses_a_results_dir_in_use_before_any_data_or_run(tmp_path, monkeypatch, capsys):
    import slidebench.data
    exps, res = tmp_path / "experiments", tmp_path / "results"
    exps.mkdir()
    (exps / "a.toml").write_text(REPRO.replace("{name}", "a"))
    monkeypatch.setattr(slidebench.data, "load_dataset", lambda *a, **k: pytest.fail("data prepared"))
    with lock_held_by_another_process(res):
        rc = main(["reproduce", "--scale", "tiny", "--experiments-dir", str(exps), "--results-dir", str(res),
                   "--no-wait"])
    assert rc == 2 and "in use by another slidebench runner" in capsys.readouterr().err
    assert not (res / "raw" / "a").exists()


def test_reproduce_refuses_a_stale_log_before_any_experiment_runs(tmp_path, monkeypatch, capsys):
    """A finished SLIDE log under today's run id but trained in the sample order (an older slidebench): the
    whole reproduce stops before its first experiment, with the file named, and the log stays as it was."""
    import slidebench.data
    exps, res = tmp_path / "experiments", tmp_path / "results"
    exps.mkdir()
    (exps / "a.toml").write_text(REPRO.replace("{name}", "a"))
    (exps / "b.toml").write_text(REPRO.replace("{name}", "b") + "params = { hidden = [8], active = 10 }\n")
    run = expand(load_experiment(exps / "b.toml"))[0]
    assert process.run_one(run, res, data_loader="fakes:load_fake")["status"] == "budget_steps"
    final = run.log_path(res)
    assert read_log(final).run_start["describe"]["engine"]["out_pass"] == "row"
    fakes.set_logged_pass_order(final, "sample")
    before = final.read_bytes()
    monkeypatch.setattr(executors, "_run_grid", lambda *a, **k: pytest.fail("an experiment ran"))
    monkeypatch.setattr(slidebench.data, "load_dataset", lambda *a, **k: pytest.fail("data prepared"))
    rc = main(["reproduce", "--experiments-dir", str(exps), "--results-dir", str(res)])
    err = capsys.readouterr().err
    assert rc == 2 and "trained in the 'sample' pass order" in err and str(final) in err
    assert final.read_bytes() == before and not (res / "raw" / "a").exists()


def test_dask_joins_a_scheduler_and_refuses_runs_no_worker_can_hold(tmp_path):
    pytest.importorskip("distributed")
    from distributed import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, resources={"cores": 1},
                      dashboard_address=None) as cluster:
        res = executors.run_experiment(None, [fake_run()], tmp_path, progress=False, data_loader="fakes:load_fake",
                                       extra_env=CHILD_ENV, executor="dask", scheduler=cluster.scheduler_address)
        assert res[0]["status"] == "budget_steps" and read_log(fake_run().log_path(tmp_path)).complete
        two = RunSpec.from_json(json.dumps({**json.loads(fake_run(seed=1).to_json()), "n_threads": 2}))
        with pytest.raises(process.RunError, match="no Dask worker offers 2 cores"):
            executors.run_experiment(None, [two], tmp_path, progress=False, data_loader="fakes:load_fake",
                                     extra_env=CHILD_ENV, executor="dask", scheduler=cluster.scheduler_address)


def test_reproduce_leaves_out_smoke_and_tune_unless_named(tmp_path, monkeypatch, capsys):
    """The default reproduce must fit its time budget: the tuning experiment (~100 min) is `make tune`'s,
    so reproduce runs it only when --only names it, and says so when it leaves it out."""
    import slidebench.data
    from slidebench.reporting import plots, report, summarize
    exps, res = tmp_path / "experiments", tmp_path / "results"
    exps.mkdir()
    for name in ("a", "smoke", "tune", "long", "long_delicious", "long_sampled", "long_slide"):
        (exps / f"{name}.toml").write_text(REPRO.replace("{name}", name))
    ran = []
    monkeypatch.setattr(executors, "_run_grid", lambda exp, *a, **k: ran.append(exp.name) or [])
    for mod, fn in ((summarize, "summarize"), (plots, "make_figures"), (report, "write_report")):
        monkeypatch.setattr(mod, fn, lambda *a, **k: [])
    monkeypatch.setattr(slidebench.data, "load_dataset", lambda *a, **k: type("D", (), {"name": "amazon-tiny"}))
    args = ["reproduce", "--scale", "tiny", "--experiments-dir", str(exps), "--results-dir", str(res)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ran == ["a"]
    assert "leaving out tune.toml" in out and "leaving out smoke.toml" in out and "leaving out long.toml" in out
    assert "leaving out long_delicious.toml" in out and "leaving out long_sampled.toml" in out
    assert "leaving out long_slide.toml" in out
    ran.clear()
    assert main(args + ["--only", "tune"]) == 0
    assert ran == ["tune"]


def test_reproduce_never_runs_an_experiment_that_needs_pytorch():
    """The committed experiments that `make reproduce` runs (every experiments/*.toml but those it leaves
    out) must not need PyTorch: gpu.toml and gpu_lr.toml are `make gpu`'s. Without gpu in
    NOT_IN_REPRODUCE a 2-core reproduce would train 15 extra SLIDE runs and skip 15 dense ones."""
    from pathlib import Path

    from slidebench.cli import NOT_IN_REPRODUCE
    from slidebench.harness.spec import load_experiment
    root = Path(__file__).resolve().parent.parent / "experiments"
    needs_torch = {p.stem for p in root.glob("*.toml")
                   if any(s.system == "torch_full_softmax" for s in load_experiment(p).systems)}
    assert needs_torch >= {"gpu", "gpu_lr"}
    assert needs_torch <= set(NOT_IN_REPRODUCE)
