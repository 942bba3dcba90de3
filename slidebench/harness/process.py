"""One process per run: the thread environment, starting the child, and the child's side of a run.

Parent side: ``start``/``launch`` run ``python -m slidebench _run-one`` with the thread environment fixed
before the interpreter starts (so before NumPy, OpenMP or TensorFlow load); on Linux the child asks
the kernel to terminate it when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so a killed runner
never leaves a run training on its own.

Child side (``run_one``): take the run's lock, create its partial log exclusively, load the data,
set the trainer up and hand it to ``loop.execute``; move the partial log over the final path only
when the run ended with a non-error status.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from . import manifest as mf
from .loop import execute
from .runlog import FINISHED, START_FIELDS, STOP_FIELDS, RunLogWriter, partial_path, record
from .spec import RunSpec

EXIT_BUSY = 3                 # _run-one: another process is writing this run (its lock is held)


class RunError(RuntimeError):
    """A run could not be started or its log contradicts its path."""


class RunBusy(RunError):
    """Another process holds this run's lock (a second runner, or a Dask worker of another runner)."""


# ------------------------------------------------------------------------------- thread control


def thread_env(n_threads: int) -> dict[str, str]:
    """The environment every run's process gets, fixed before the interpreter starts."""
    n = str(int(n_threads))
    return {
        "OMP_NUM_THREADS": n,
        "OMP_WAIT_POLICY": "PASSIVE",
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "BLIS_NUM_THREADS": n,
        "NUMEXPR_NUM_THREADS": n,
        "VECLIB_MAXIMUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def _die_with_parent(parent_pid: int, cpus: list[int] | None = None) -> Callable[[], None]:
    """preexec_fn for the child: SIGTERM when the parent dies (Linux prctl; a no-op elsewhere), and exit
    at once if the parent is already gone (the race between fork and prctl); pinned to ``cpus`` when
    given (the Dask executor's exclusive cores)."""
    def fn() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if sys.platform.startswith("linux"):
            try:
                import ctypes
                libc = ctypes.CDLL(None, use_errno=True)
                PR_SET_PDEATHSIG = 1
                libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            except Exception:  # noqa: BLE001  (no prctl: the wall limit still bounds the run)
                pass
        if os.getppid() != parent_pid:
            os._exit(1)
    return fn


# --------------------------------------------------------------------------------- child process


def load_data(run: RunSpec, *, progress: bool = False, data_loader: str | None = None):
    """The run's data set: slidebench.data (cached; a preset, real files under data_dir, or files by
    path), or a test loader 'module:func' called as func(run.data) -> Dataset; then the validation
    split when [data] validation is set."""
    d = run.data
    if data_loader:
        mod, _, fn = data_loader.partition(":")
        ds = getattr(importlib.import_module(mod), fn)(dict(d))
    else:
        from ..data import load_dataset, load_files
        if d.get("train"):
            ds = load_files(d["train"], d["test"], name=d.get("name"), progress=progress)
        else:
            ds = load_dataset(d["preset"], d["scale"] or "small", data_dir=d.get("data_dir"), seed=int(d["seed"]),
                              progress=progress)
    if d.get("validation"):
        from ..data import split_validation
        ds = split_validation(ds, float(d["validation"]), int(d.get("seed") or 0))
    return ds


def run_lock(final: Path):
    """The per-run lock (a file beside the log): held by the one process writing the run."""
    from filelock import FileLock
    return FileLock(str(final) + ".lock")


def run_one(run: RunSpec, results_dir: str | Path, *, progress: bool = False, data_loader: str | None = None,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Child side of one run: lock, data, trainer, loop, log; move the partial log over the final path
    when the run ended with a non-error status. Returns the run_stop record. Raises RunBusy (writing
    nothing) when another process holds the run's lock."""
    from filelock import Timeout
    final = run.log_path(results_dir)
    part = partial_path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = run_lock(final)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunBusy(f"{final}: another process is writing this run (lock {lock.lock_file} is held); "
                      "not touching it") from None
    try:
        if part.exists():            # left by a killed run: we hold the lock, nobody is writing it
            part.unlink()
        with RunLogWriter(part, mode="x") as log:
            return _run_logged(run, final, part, log, progress=progress, data_loader=data_loader, clock=clock)
    finally:
        lock.release()


def _run_logged(run, final, part, log, *, progress, data_loader, clock) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    try:
        env_n = os.environ.get("OMP_NUM_THREADS")
        if env_n is not None and env_n != str(run.n_threads):
            raise RunError(f"OMP_NUM_THREADS={env_n} in this process but the run asks for {run.n_threads} "
                           "threads: start runs through the runner (python -m slidebench run)")
        man = mf.collect()
        t0 = time.perf_counter()
        data = load_data(run, progress=progress, data_loader=data_loader)
        extra["data_load_time_s"] = time.perf_counter() - t0
        from ..trainers import get_trainer
        trainer = get_trainer(run.system)()
    except Exception:  # noqa: BLE001
        log.write("run_start", **record(
            START_FIELDS, experiment=run.experiment, label=run.label, system=run.system, seed=run.seed,
            n_threads=run.n_threads, batch_size=run.batch_size, protocol=run.protocol, config=run.config,
            params=run.trainer_params(), sweep=run.sweep, config_hash=run.config_hash, run_id=run.run_id,
            identity=run.identity(), pid=os.getpid()))
        stop = log.write("run_stop", fsync=True, **record(STOP_FIELDS, status="error", error=traceback.format_exc(),
                                                          train_time_s=0.0, steps=0, n_evals=0))
        return stop

    def after_setup() -> dict:
        man.update(mf.process_info())
        man["engine"] = mf.engine_info() if run.system == "slide" else "not used by this system"
        return {"manifest": man}

    stop = execute(run, data, trainer, log, clock=clock, run_start_extra=extra, after_setup=after_setup,
                   progress=progress)
    log.close()
    if stop.get("status") in FINISHED:
        os.replace(part, final)
    return stop


# -------------------------------------------------------------------------------- parent process


def child_command(run: RunSpec, results_dir: str | Path, *, python: str = sys.executable, progress: bool = True,
                  data_loader: str | None = None) -> list[str]:
    from ..trainers import REGISTRY
    cmd = [python, "-m", "slidebench", "_run-one", "--results-dir", str(results_dir), "--run-json", run.to_json(),
           "--register", f"{run.system}={REGISTRY[run.system]}"]
    if data_loader:
        cmd += ["--data-loader", data_loader]
    if not progress:
        cmd.append("--quiet")
    return cmd


def start(run: RunSpec, results_dir: str | Path, *, python: str = sys.executable, progress: bool = True,
          data_loader: str | None = None, extra_env: dict | None = None, cwd: str | Path | None = None,
          stdout=None, cpus: list[int] | None = None) -> subprocess.Popen:
    """Start the child process for one run (``python -m slidebench _run-one``) with the thread
    environment fixed before the interpreter starts; the child dies with this process and, with
    ``cpus``, runs only on those cores."""
    env = dict(os.environ)
    env.update(extra_env or {})
    env.update(thread_env(run.n_threads))
    cmd = child_command(run, results_dir, python=python, progress=progress, data_loader=data_loader)
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout, preexec_fn=_die_with_parent(os.getpid(), cpus))


def launch(run: RunSpec, results_dir: str | Path, *, timeout: float | None = None, **kw) -> int:
    """Start the child process for one run and wait for it; returns its exit code."""
    proc = start(run, results_dir, **kw)
    try:
        return proc.wait(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def wall_limit(run: RunSpec) -> float | None:
    """Wall-clock seconds after which a run's child is killed, so one hung run cannot block a whole
    reproduce: 3x the train budget plus 10 minutes for setup, evaluations and the final full-test
    evaluation. SLIDEBENCH_RUN_TIMEOUT (seconds, 0 = none) overrides it; runs bounded only by
    epochs or steps have no limit unless that variable is set."""
    env = os.environ.get("SLIDEBENCH_RUN_TIMEOUT", "").strip()
    if env:
        v = float(env)
        return v if v > 0 else None
    ts = run.budget.get("train_seconds")
    return 3.0 * float(ts) + 600.0 if ts else None


# --------------------------------------------------------------------------------------- micro


def micro_child(path: str | Path, results_dir: str | Path, *, scale: str | None, data_dir: str | None,
                n_threads: int, progress: bool) -> Path:
    from .spec import load_experiment
    exp = load_experiment(path)
    spec = json.loads(json.dumps(exp.raw))
    spec.setdefault("data", {})
    if scale:
        spec["data"]["scale"] = scale
    if data_dir:
        spec["data"]["data_dir"] = str(Path(data_dir).resolve())
    out_csv = Path(results_dir) / "summary" / f"{exp.name}.csv"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    from ..reporting import micro
    micro.run_micro(spec, scale=scale or exp.scale, n_threads=n_threads, out_csv=out_csv, progress=progress)
    if not out_csv.exists():
        raise RunError(f"slidebench.reporting.micro.run_micro did not write {out_csv}")
    return out_csv
