"""The runner: one process per run, and the child-side run loop that owns the clock.

Parent side (``run_experiment``): for each run of the grid, skip it (``--resume`` and a finished log),
reuse an identical finished run of another experiment, or start ``python -m slidebench _run-one`` with
the thread environment fixed before the interpreter starts.

Child side (``run_one`` -> ``execute``): load the data set, set up the trainer (untimed), write
``run_start``, then loop: ``train_steps`` bracketed by the clock (the ONLY timed call), untimed
evaluations at the protocol's points, stop on target / budget / NaN / error, a final evaluation on the
full test set, ``run_stop``. The log is written to ``<final>.partial`` and moved over the final path
only when the run ended with a non-error status.

Clock rules and protocols: docs/harness.md.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import manifest as mf
from .runlog import FINISHED, RunLogWriter, partial_path, read_log
from .spec import Experiment, RunSpec, run_log_path

EVAL_K = 5
EVAL_BLOCK = 4096            # rows per predict_topk call (bounds memory of dense baselines)
PROGRESS_EVERY_S = 10.0      # plain progress lines at most this often (wall seconds)
MAX_CHUNK_GROWTH = 2         # a chunk is at most this many times the previous one


class RunError(RuntimeError):
    """A run could not be started or its log contradicts its path."""


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


# ------------------------------------------------------------------------------------ evaluation


class EvalPlan:
    """Which test rows each evaluation uses, per protocol.

    fair : every evaluation on ``metrics.eval_subset(n_test, subset_size, data_seed)`` (a fixed seeded
           shuffle, the same for every system and run seed); at the end the full test set.
    paper: intermediate evaluations on the first ``prefix_size`` rows of the test file, at each epoch
           end the first ``epoch_prefix_size`` rows, at the end the full test set (the 2019 release).
    """

    def __init__(self, run: RunSpec, n_test: int):
        from . import metrics
        self.protocol = run.protocol
        self.n_test = int(n_test)
        if n_test < 1:
            raise ValueError("the test set is empty: nothing to evaluate on")
        if run.protocol == "fair":
            size = min(int(run.eval["subset_size"]), self.n_test)
            self.intermediate = np.asarray(metrics.eval_subset(self.n_test, size, int(run.data["seed"])),
                                           dtype=np.int64)
            self.intermediate_name = f"subset{size}"
            self.epoch_end = None
            self.epoch_end_name = None
        elif run.protocol == "paper":
            size = min(int(run.eval["prefix_size"]), self.n_test)
            self.intermediate = np.arange(size, dtype=np.int64)
            self.intermediate_name = f"prefix{size}"
            esize = min(int(run.eval["epoch_prefix_size"]), self.n_test)
            self.epoch_end = np.arange(esize, dtype=np.int64)
            self.epoch_end_name = f"prefix{esize}"
        else:
            raise ValueError(f"unknown protocol {run.protocol!r}")

    def describe(self) -> dict[str, Any]:
        d = {"protocol": self.protocol, "n_test": self.n_test, "intermediate": self.intermediate_name,
             "intermediate_first_rows": self.intermediate[:8].tolist(),
             "intermediate_sha256": _sha(self.intermediate)}
        if self.epoch_end is not None:
            d["epoch_end"] = self.epoch_end_name
        return d


def _sha(a: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def score(trainer, X, Y, rows: np.ndarray | None) -> dict[str, Any]:
    """P@1/3/5 and nDCG from ``trainer.predict_topk`` on the given test rows (None = all)."""
    from . import metrics
    if rows is not None:
        X, Y = X[rows], Y[rows]
    n = X.shape[0]
    parts = []
    for lo in range(0, n, EVAL_BLOCK):
        top = np.asarray(trainer.predict_topk(X[lo:lo + EVAL_BLOCK], EVAL_K))
        if top.ndim != 2 or top.shape != (min(EVAL_BLOCK, n - lo), EVAL_K):
            raise ValueError(f"predict_topk returned shape {top.shape}, expected ({min(EVAL_BLOCK, n - lo)}, {EVAL_K})")
        parts.append(top)
    topk = np.concatenate(parts) if parts else np.zeros((0, EVAL_K), np.int32)
    return dict(metrics.evaluate(topk, Y))


# ------------------------------------------------------------------------------------ progress


class Progress:
    """tqdm bar when stdout is a terminal, plain periodic lines otherwise."""

    def __init__(self, run: RunSpec, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.name = f"{run.experiment}/{run.label}/s{run.seed}"
        self.budget_s = run.budget.get("train_seconds")
        self._last = 0.0
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm
            total = self.budget_s if self.budget_s else None
            self._bar = tqdm(total=total, desc=self.name, unit="train-s", file=self.stream,
                             bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} train-s {postfix}")

    def update(self, train_time: float, steps: int, p_at_1: float | None, force: bool = False) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = min(train_time, self._bar.total) if self._bar.total else train_time
            self._bar.set_postfix_str(f"step {steps}" + (f" P@1 {p_at_1:.3f}" if p_at_1 is not None else ""))
            return
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            p = f" P@1={p_at_1:.4f}" if p_at_1 is not None else ""
            b = f"/{self.budget_s:g}" if self.budget_s else ""
            print(f"[{self.name}] train {train_time:.1f}{b}s step {steps}{p}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ----------------------------------------------------------------------------------- the loop


def execute(run: RunSpec, data, trainer, log: RunLogWriter, *, clock: Callable[[], float] = time.perf_counter,
            run_start_extra: dict | None = None, after_setup: Callable[[], dict] | None = None,
            progress: bool = False) -> dict[str, Any]:
    """Run one training run in this process and write its log; returns the run_stop record.

    ``clock`` is the only time source for init/train/eval/wall times (tests inject a fake one). Errors
    in setup, training or evaluation end the run with status ``error`` and the traceback in run_stop;
    they are not re-raised (the log is the result). A baseline's DeviceUnavailable in setup ends it
    with status ``skipped`` and the reason. ``after_setup()`` adds fields to run_start (the child's
    threadpool view, which only exists once the trainer has loaded its libraries).
    """
    extra = dict(run_start_extra or {})
    t0 = clock()
    setup_exc = None
    try:
        trainer.setup(data, run.trainer_params(), seed=run.seed, n_threads=run.n_threads)
    except Exception as e:  # noqa: BLE001
        setup_exc, tb = e, traceback.format_exc()
    init_time = clock() - t0
    if after_setup is not None:
        try:
            extra.update(after_setup())
        except Exception as e:  # noqa: BLE001
            extra["after_setup_error"] = f"{type(e).__name__}: {e}"
    if setup_exc is not None:
        skipped = _is_device_unavailable(setup_exc)
        _write_start(log, run, data, trainer, extra, init_time, describe=False)
        return log.write("run_stop", fsync=True, status="skipped" if skipped else "error",
                         reason=str(setup_exc) if skipped else None, error=None if skipped else tb,
                         train_time_s=0.0, steps=0, samples_seen=0, epoch=0.0, time_to_target_s=None)
    _write_start(log, run, data, trainer, extra, init_time, describe=True)
    prog = Progress(run, enabled=progress)
    try:
        return _loop(run, data, trainer, log, clock, prog)
    finally:
        prog.close()


def _is_device_unavailable(e: BaseException) -> bool:
    try:
        du = getattr(importlib.import_module("slidebench.baselines"), "DeviceUnavailable", None)
    except Exception:  # noqa: BLE001
        du = None
    return du is not None and isinstance(e, du)


def _write_start(log, run, data, trainer, extra, init_time, describe: bool) -> None:
    desc: Any = None
    if describe:
        try:
            desc = trainer.describe()
        except Exception as e:  # noqa: BLE001
            desc = {"error": f"describe() failed: {type(e).__name__}: {e}"}
    n_train = int(data.X_train.shape[0])
    ds = {"name": data.name, "preset": run.data.get("preset"), "scale": run.data.get("scale"),
          "data_dir": run.data.get("data_dir"), "data_seed": run.data.get("seed"),
          "n_train": n_train, "n_test": int(data.X_test.shape[0]), "n_features": data.n_features,
          "n_labels": data.n_labels, "sha256": data.sha256,
          "batches_per_epoch": -(-n_train // run.batch_size)}
    log.write("run_start", experiment=run.experiment, label=run.label, system=run.system, config=run.config,
              seed=run.seed, n_threads=run.n_threads, batch_size=run.batch_size, protocol=run.protocol,
              params=run.trainer_params(), sweep=run.sweep, config_hash=run.config_hash, run_id=run.run_id,
              identity=run.identity(), budget=run.budget, eval=run.eval, dataset=ds,
              init_time_s=init_time, describe=desc, pid=os.getpid(), **extra)


def _loop(run: RunSpec, data, trainer, log: RunLogWriter, clock, prog: Progress) -> dict[str, Any]:
    b, ev = run.budget, run.eval
    n_train = int(data.X_train.shape[0])
    bpe = -(-n_train // run.batch_size)                     # batches per epoch (last one short)
    max_steps = b.get("steps")
    if "epochs" in b:
        es = math.ceil(b["epochs"] * bpe - 1e-9)
        max_steps = es if max_steps is None else min(max_steps, es)
    max_time = b.get("train_seconds")
    target = b.get("target_p_at_1")
    stop_at_target = b.get("stop_at_target", True)
    every_s, every_n = ev.get("every_seconds"), ev.get("every_steps")
    paper = run.protocol == "paper"

    t_wall0 = clock()
    train_time = 0.0
    steps = 0
    samples = 0
    epoch = 0.0
    est = None                      # seconds per step, from the last chunk
    prev_chunk = 0
    next_eval_t = every_s if every_s else None
    next_eval_n = every_n if every_n else None
    loss_sum, loss_n = 0.0, 0
    counters: dict = {}
    ttt = None
    best = {"p_at_1": None, "p_at_3": None, "p_at_5": None}
    last_eval_step = -1
    status = None
    error = None
    plan = None
    evals = 0

    def do_eval(rows, subset_name: str, reason: str) -> dict:
        nonlocal ttt, last_eval_step, evals, loss_sum, loss_n
        t0 = clock()
        m = score(trainer, data.X_test, data.Y_test, rows)
        eval_time = clock() - t0
        train_loss = loss_sum / loss_n if loss_n else None
        loss_sum, loss_n = 0.0, 0
        rec = log.write("eval", step=steps, samples_seen=samples, epoch=epoch, train_time_s=train_time,
                        eval_time_s=eval_time, wall_time_s=clock() - t_wall0, train_loss=train_loss,
                        p_at_1=m.get("p_at_1"), p_at_3=m.get("p_at_3"), p_at_5=m.get("p_at_5"),
                        ndcg_at_1=m.get("ndcg_at_1"), ndcg_at_3=m.get("ndcg_at_3"), ndcg_at_5=m.get("ndcg_at_5"),
                        n_eval=m.get("n"), subset=subset_name, reason=reason, counters=counters)
        for k in best:
            v = m.get(k)
            if v is not None and (best[k] is None or v > best[k]):
                best[k] = v
        if target is not None and ttt is None and m.get("p_at_1") is not None and m["p_at_1"] >= target:
            ttt = train_time
        last_eval_step = steps
        evals += 1
        prog.update(train_time, steps, m.get("p_at_1"), force=True)
        return rec

    try:
        plan = EvalPlan(run, data.X_test.shape[0])
        do_eval(plan.intermediate, plan.intermediate_name, "start")
        if ttt is not None and stop_at_target:
            status = "reached_target"
        while status is None:
            # --- how many steps in this chunk: never past an eval point or a budget by more than one chunk
            limit = math.inf
            if max_steps is not None:
                limit = min(limit, max_steps - steps)
            if next_eval_n is not None:
                limit = min(limit, next_eval_n - steps)
            if paper:
                limit = min(limit, bpe - steps % bpe)          # stop at each epoch end
            t_goal = min(x for x in (next_eval_t, max_time, math.inf) if x is not None)
            if est is None:
                n = 1                                           # first chunk: measure the step time
            else:
                grow = max(1, prev_chunk * MAX_CHUNK_GROWTH)
                if est <= 0:
                    n = grow
                else:
                    n = min(grow, int(PROGRESS_EVERY_S / est) or 1)   # progress at least every 10 train-s
                    if math.isfinite(t_goal):
                        n = min(n, int((t_goal - train_time) / est))
                n = max(1, n)
            n = int(max(1, min(n, limit)))

            t0 = clock()
            stats = trainer.train_steps(n)
            dt = clock() - t0

            if stats.n_steps != n:
                raise RuntimeError(f"train_steps({n}) reported {stats.n_steps} steps")
            train_time += dt
            steps += n
            samples += int(stats.n_samples)
            epoch = float(stats.epoch)
            counters = dict(stats.counters or {})
            est = dt / n
            prev_chunk = n
            loss = float(stats.loss)
            if not math.isfinite(loss):
                status = "diverged"
                loss_sum, loss_n = loss_sum + loss * n, loss_n + n
                break
            loss_sum, loss_n = loss_sum + loss * n, loss_n + n
            prog.update(train_time, steps, best["p_at_1"])

            # --- evaluation points
            epoch_end = paper and steps % bpe == 0
            due = ((next_eval_t is not None and train_time >= next_eval_t)
                   or (next_eval_n is not None and steps >= next_eval_n))
            if epoch_end:
                do_eval(plan.epoch_end, plan.epoch_end_name, "epoch_end")
            elif due:
                do_eval(plan.intermediate, plan.intermediate_name, "cadence")
            if next_eval_t is not None and train_time >= next_eval_t:
                next_eval_t = (math.floor(train_time / every_s) + 1) * every_s
            if next_eval_n is not None and steps >= next_eval_n:
                next_eval_n = (steps // every_n + 1) * every_n
            if ttt is not None and stop_at_target:
                status = "reached_target"
                break

            # --- budgets
            if b.get("steps") is not None and steps >= b["steps"]:
                status = "budget_steps"
            elif max_steps is not None and steps >= max_steps:
                status = "budget_epochs"
            elif max_time is not None and train_time >= max_time:
                status = "budget_time"
        # a last intermediate evaluation at the stopping point, so every curve ends where training did
        if status != "diverged" and last_eval_step != steps:
            do_eval(plan.intermediate, plan.intermediate_name, "stop")
        final = {}
        if status != "diverged":
            t0 = clock()
            final = score(trainer, data.X_test, data.Y_test, None)
            final["eval_time_s"] = clock() - t0
    except Exception:  # noqa: BLE001
        status, error = "error", traceback.format_exc()
        final = {}

    counters_end: Any = None
    try:
        counters_end = trainer.describe().get("counters")
    except Exception as e:  # noqa: BLE001
        counters_end = {"error": f"describe() failed: {type(e).__name__}: {e}"}
    return log.write("run_stop", fsync=True, status=status, error=error, reason=None,
                     train_time_s=train_time, wall_time_s=clock() - t_wall0, steps=steps, samples_seen=samples,
                     epoch=epoch, n_evals=evals, target_p_at_1=target, time_to_target_s=ttt,
                     best_p_at_1=best["p_at_1"], best_p_at_3=best["p_at_3"], best_p_at_5=best["p_at_5"],
                     final_p_at_1=final.get("p_at_1"), final_p_at_3=final.get("p_at_3"),
                     final_p_at_5=final.get("p_at_5"), final_ndcg_at_5=final.get("ndcg_at_5"),
                     final_n_eval=final.get("n"), final_eval_time_s=final.get("eval_time_s"),
                     counters=counters_end)


# --------------------------------------------------------------------------------- child process


def load_data(run: RunSpec, *, progress: bool = False, data_loader: str | None = None):
    """The run's data set through slidebench.data.load_dataset (cached), or a test loader 'module:func'
    called as func(run.data) -> Dataset."""
    if data_loader:
        mod, _, fn = data_loader.partition(":")
        return getattr(importlib.import_module(mod), fn)(dict(run.data))
    from .data import load_dataset
    d = run.data
    return load_dataset(d["preset"], d["scale"] or "small", data_dir=d.get("data_dir"), seed=int(d["seed"]),
                        progress=progress)


def run_one(run: RunSpec, results_dir: str | Path, *, progress: bool = False, data_loader: str | None = None,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Child side of one run: data, trainer, loop, log; move the partial log over the final path when the
    run ended with a non-error status. Returns the run_stop record."""
    final = run.log_path(results_dir)
    part = partial_path(final)
    with RunLogWriter(part) as log:
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
            from .trainers import get_trainer
            trainer = get_trainer(run.system)()
        except Exception:  # noqa: BLE001
            log.write("run_start", experiment=run.experiment, label=run.label, system=run.system, seed=run.seed,
                      n_threads=run.n_threads, batch_size=run.batch_size, protocol=run.protocol,
                      config=run.config, params=run.trainer_params(), sweep=run.sweep,
                      config_hash=run.config_hash, run_id=run.run_id, identity=run.identity(), pid=os.getpid())
            stop = log.write("run_stop", fsync=True, status="error", error=traceback.format_exc(),
                             train_time_s=0.0, steps=0, time_to_target_s=None)
            return stop

        def after_setup() -> dict:
            man.update(mf.process_info())
            man["engine"] = mf.engine_info() if run.system == "slide" else "not used by this system"
            return {"manifest": man}

        stop = execute(run, data, trainer, log, clock=clock, run_start_extra=extra, after_setup=after_setup,
                       progress=progress)
    if stop.get("status") in FINISHED:
        os.replace(part, final)
    return stop


# -------------------------------------------------------------------------------- parent process


def check_existing(final: Path, run: RunSpec) -> Any:
    """Read an existing final log; refuse one whose run_start hash disagrees with its name."""
    if not final.exists():
        return None
    log = read_log(final)
    if log.run_start is None:
        return log
    h = log.run_start.get("config_hash")
    if h != run.config_hash:
        raise RunError(f"{final}: its run_start config_hash {h!r} disagrees with its file name "
                       f"({run.config_hash}); refusing to touch it")
    return log


def find_reusable(run: RunSpec, results_dir: str | Path) -> Path | None:
    """A finished final log of the same configuration (hash and identity) under another experiment."""
    raw = Path(results_dir) / "raw"
    own = run.log_path(results_dir).resolve()
    ident = json.loads(json.dumps(run.identity()))
    for p in sorted(raw.glob(f"*/*/s{run.seed}-{run.config_hash}.jsonl")):
        if p.resolve() == own:
            continue
        try:
            log = read_log(p)
        except (OSError, ValueError):
            continue
        if log.finished and log.run_start and log.run_start.get("identity") == ident \
                and log.run_start.get("reused_from") is None:
            return p
    return None


def reuse(src: Path, run: RunSpec, results_dir: str | Path) -> Path:
    """Copy a finished log to this run's path, adding ``reused_from`` to its run_start (nothing else)."""
    final = run.log_path(results_dir)
    part = partial_path(final)
    part.parent.mkdir(parents=True, exist_ok=True)
    lines = src.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        rec = json.loads(line)
        if rec.get("type") == "run_start":
            rec["reused_from"] = str(src)
            line = json.dumps(rec)
        out.append(line)
    with open(part, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, final)
    return final


def start(run: RunSpec, results_dir: str | Path, *, python: str = sys.executable, progress: bool = True,
          data_loader: str | None = None, extra_env: dict | None = None, cwd: str | Path | None = None,
          stdout=None) -> subprocess.Popen:
    """Start the child process for one run (``python -m slidebench _run-one``) with the thread
    environment fixed before the interpreter starts; returns the Popen."""
    from .trainers import REGISTRY
    env = dict(os.environ)
    env.update(extra_env or {})
    env.update(thread_env(run.n_threads))
    cmd = [python, "-m", "slidebench", "_run-one", "--results-dir", str(results_dir), "--run-json", run.to_json(),
           "--register", f"{run.system}={REGISTRY[run.system]}"]
    if data_loader:
        cmd += ["--data-loader", data_loader]
    if not progress:
        cmd.append("--quiet")
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout)


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


def run_experiment(exp: Experiment, runs: list[RunSpec], results_dir: str | Path = "results", *,
                   resume: bool = False, reuse_runs: bool | None = None, progress: bool = True,
                   data_loader: str | None = None, extra_env: dict | None = None) -> list[dict[str, Any]]:
    """Run every run of ``runs`` (from spec.expand), one child process each. Returns one dict per run:
    {"run_id", "path" (final log path), "log" (the log actually written: the .partial one when the run
    errored or was killed), "action" ("ran"|"skipped_finished"|"reused"), "status", "elapsed_s"}.
    ``reuse_runs`` defaults to ``resume``."""
    if reuse_runs is None:
        reuse_runs = resume
    out = []
    t_start = time.monotonic()
    for i, run in enumerate(runs):
        final = run.log_path(results_dir)
        existing = check_existing(final, run)
        t0 = time.monotonic()
        if resume and existing is not None and existing.finished:
            res = {"action": "skipped_finished", "status": existing.status}
        else:
            src = find_reusable(run, results_dir) if reuse_runs else None
            if src is not None:
                reuse(src, run, results_dir)
                res = {"action": "reused", "status": read_log(final).status, "reused_from": str(src)}
            else:
                limit = wall_limit(run)
                try:
                    launch(run, results_dir, timeout=limit, progress=progress, data_loader=data_loader,
                           extra_env=extra_env)
                except subprocess.TimeoutExpired:
                    print(f"[slidebench] {run.run_id}: killed after {limit:.0f} s of wall clock "
                          "(SLIDEBENCH_RUN_TIMEOUT overrides); its partial log is kept and summarized "
                          "as incomplete", flush=True)
                part = partial_path(final)
                if final.exists() and (not part.exists() or final.stat().st_mtime >= part.stat().st_mtime):
                    log = read_log(final)
                else:
                    log = read_log(part) if part.exists() else None
                res = {"action": "ran", "status": log.status if log else "no log written",
                       "log": str(log.path) if log else None}
        res.update(run_id=run.run_id, path=str(final), elapsed_s=time.monotonic() - t0)
        res.setdefault("log", str(final))
        out.append(res)
        if progress:
            done = i + 1
            el = time.monotonic() - t_start
            ran = [r for r in out if r["action"] == "ran"]
            eta = ""
            if ran:
                per = sum(r["elapsed_s"] for r in ran) / len(ran)
                eta = f", ETA this experiment ~{per * (len(runs) - done) / 60:.1f} min (upper bound)"
            print(f"[{done}/{len(runs)}] {run.run_id}: {res['action']} status={res['status']} "
                  f"({res['elapsed_s']:.1f}s, {el / 60:.1f} min so far{eta})", flush=True)
    return out


def run_micro_experiment(exp: Experiment, results_dir: str | Path = "results", *, scale: str | None = None,
                         data_dir: str | None = None, threads: int | None = None, resume: bool = False,
                         progress: bool = True) -> dict[str, Any]:
    """Run a kind="micro" experiment in one child process (threads fixed before the interpreter starts)."""
    from .spec import resolve_threads
    out_csv = Path(results_dir) / "summary" / f"{exp.name}.csv"
    # "finished here" is a marker under results/raw (never committed), not the CSV: a fresh clone
    # carries the reference run's committed CSVs, and its reproduce must measure this machine
    marker = Path(results_dir) / "raw" / exp.name / "micro-done.json"
    if resume and out_csv.exists() and marker.exists():
        return {"action": "skipped_finished", "path": str(out_csv), "status": "exists"}
    n = threads if threads is not None else max(resolve_threads(t) for t in exp.threads)
    env = dict(os.environ)
    env.update(thread_env(n))
    cmd = [sys.executable, "-m", "slidebench", "_run-micro", str(exp.path), "--results-dir", str(results_dir),
           "--threads", str(n)]
    if scale:
        cmd += ["--scale", scale]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    if not progress:
        cmd.append("--quiet")
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env)
    st = "ok" if p.returncode == 0 and out_csv.exists() else f"error (exit {p.returncode})"
    if st == "ok":
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"experiment": exp.name, "csv": str(out_csv), "threads": n,
                                      "scale": scale, "data_dir": data_dir}) + "\n")
    return {"action": "ran", "path": str(out_csv), "status": st, "elapsed_s": time.monotonic() - t0}


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
    from . import micro
    micro.run_micro(spec, scale=scale or exp.scale, n_threads=n_threads, out_csv=out_csv, progress=progress)
    if not out_csv.exists():
        raise RunError(f"slidebench.micro.run_micro did not write {out_csv}")
    return out_csv
