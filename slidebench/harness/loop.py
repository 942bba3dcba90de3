"""The clock loop of one run: evaluation plan and schedule, the stop rule, scoring, the run loop.

``execute(run, data, trainer, log)`` runs one training run in this process: it builds the run's batch
stream (the runner owns it: every trainer draws its batches from it, so the steps really done are
read from the stream, not trusted from the trainer), sets the trainer up (untimed), writes
``run_start``, then loops: ``train_steps`` bracketed by the clock (the ONLY timed call), untimed
evaluations at the schedule's points, stop on target / budget / non-finite loss / error, a final
evaluation on the full evaluation set, ``run_stop``. Process and executor management live in
``process.py`` and ``executors.py``; clock rules and protocols: docs/harness.md.
"""
from __future__ import annotations

import importlib
import math
import os
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np

from ..contract import batches_per_epoch
from .runlog import EVAL_FIELDS, START_FIELDS, STOP_FIELDS, RunLogWriter, record
from .spec import RunSpec

EVAL_K = 5
EVAL_BLOCK = 4096            # rows per predict_topk call (bounds memory of dense baselines)
PROGRESS_EVERY_S = 10.0      # plain progress lines at most this often (wall seconds)
MAX_CHUNK_GROWTH = 2         # a chunk is at most this many times the previous one


# ------------------------------------------------------------------------------ evaluation schedule


class EvalSchedule:
    """When the next intermediate evaluation is due, in train-seconds (``every_seconds``) or steps
    (``every_steps``).

    linear (no ``ratio``): at every multiple of ``every``.
    log-spaced (``ratio`` > 1 with ``first_seconds`` / ``first_steps``): at first, first*ratio,
    first*ratio^2, ... but never more than ``every`` apart, so time to target is resolved to within
    (ratio - 1) of itself early on and to ``every`` later. Points already passed (a chunk overshot
    them) are skipped, never made up.
    """

    def __init__(self, ev: dict[str, Any]):
        self.by_time = "every_seconds" in ev
        self.every = ev["every_seconds"] if self.by_time else ev["every_steps"]
        self.ratio = ev.get("ratio")
        first = ev.get("first_seconds" if self.by_time else "first_steps")
        self.next = first if (self.ratio is not None and first is not None) else self.every

    def _after(self, point):
        if self.ratio is None:
            return point + self.every
        nxt = min(point * self.ratio, point + self.every)
        return nxt if self.by_time else max(point + 1, int(math.ceil(nxt - 1e-9)))

    def due(self, position) -> bool:
        return position >= self.next

    def advance(self, position) -> None:
        """Move past ``position`` (the train time or step count just reached)."""
        if self.ratio is None:
            if position >= self.next:
                self.next = (math.floor(position / self.every + 1e-12) + 1) * self.every
                if not self.by_time:
                    self.next = int(self.next)
            return
        while self.next <= position:
            self.next = self._after(self.next)

    def points(self, upto: float, limit: int = 10_000) -> list:
        """The scheduled points up to ``upto`` (documentation and tests)."""
        out, s = [], EvalSchedule.__new__(EvalSchedule)
        s.__dict__.update(self.__dict__)
        while s.next <= upto and len(out) < limit:
            out.append(s.next)
            s.advance(s.next)
        return out


# ------------------------------------------------------------------------------------ stop rule


class StopRule:
    """The budget and target part of the stop decision (benchopt's ``should_stop`` shape): given the
    state after a chunk, the status to stop with or None; and how many steps a chunk may still take."""

    def __init__(self, budget: dict[str, Any], bpe: int):
        self.budget_steps = budget.get("steps")
        self.epoch_steps = math.ceil(budget["epochs"] * bpe - 1e-9) if "epochs" in budget else None
        caps = [x for x in (self.budget_steps, self.epoch_steps) if x is not None]
        self.max_steps = min(caps) if caps else None
        self.max_time = budget.get("train_seconds")
        self.target = budget.get("target_p_at_1")
        self.stop_at_target = budget.get("stop_at_target", True)

    def steps_left(self, steps: int) -> float:
        return math.inf if self.max_steps is None else self.max_steps - steps

    def reached(self, p_at_1) -> bool:
        return self.target is not None and p_at_1 is not None and p_at_1 >= self.target

    def after_chunk(self, steps: int, train_time: float, target_reached: bool) -> str | None:
        if target_reached and self.stop_at_target:
            return "reached_target"
        if self.budget_steps is not None and steps >= self.budget_steps:
            return "budget_steps"
        if self.epoch_steps is not None and steps >= self.epoch_steps:
            return "budget_epochs"
        if self.max_time is not None and train_time >= self.max_time:
            return "budget_time"
        return None


# ------------------------------------------------------------------------------------ evaluation


class EvalPlan:
    """Which test rows each evaluation uses, per protocol.

    fair : every evaluation on ``metrics.eval_subset(n_test, subset_size, data_seed)`` (a fixed seeded
           shuffle, the same for every system and run seed); at the end the full test set.
    paper: intermediate evaluations on the first ``prefix_size`` rows of the test file, at each epoch
           end the first ``epoch_prefix_size`` rows, at the end the full test set (the 2019 release).
    train: with ``[eval] train_subset_size`` = N, every evaluation also scores a fixed seeded sample of N
           training rows (``metrics.eval_subset(n_train, N, data_seed)``, the same rows for every system),
           untimed, logged as ``train_eval``: the gap between it and the test curve shows overfitting.
    """

    def __init__(self, run: RunSpec, n_test: int, n_train: int | None = None):
        from .. import metrics
        self.protocol = run.protocol
        self.n_test = int(n_test)
        if n_test < 1:
            raise ValueError("the test set is empty: nothing to evaluate on")
        self.train_rows = None
        tsize = run.eval.get("train_subset_size")
        if tsize is not None:
            if not n_train:
                raise ValueError("[eval] train_subset_size needs the training set's size")
            self.train_rows = np.asarray(metrics.eval_subset(int(n_train), min(int(tsize), int(n_train)),
                                                             int(run.data["seed"])), dtype=np.int64)
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
        if self.train_rows is not None:
            d["train"] = f"train{len(self.train_rows)}"
            d["train_sha256"] = _sha(self.train_rows)
        return d


def _sha(a: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def score(trainer, X, Y, rows: np.ndarray | None) -> dict[str, Any]:
    """P@1/3/5 and nDCG from ``trainer.predict_topk`` on the given test rows (None = all)."""
    from .. import metrics
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
    stream = None
    try:
        stream = data.batches(run.batch_size, run.seed, shuffle=run.shuffle)
        trainer.setup(data, run.trainer_params(), seed=run.seed, n_threads=run.n_threads, batches=stream)
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
        return log.write("run_stop", fsync=True, **record(STOP_FIELDS, status="skipped" if skipped else "error",
                         reason=str(setup_exc) if skipped else None, error=None if skipped else tb,
                         train_time_s=0.0, steps=0, samples_seen=0, epoch=0.0, n_evals=0))
    _write_start(log, run, data, trainer, extra, init_time, describe=True)
    prog = Progress(run, enabled=progress)
    try:
        return _loop(run, data, trainer, stream, log, clock, prog)
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
          "train_path": run.data.get("train"), "test_path": run.data.get("test"),
          "validation": run.data.get("validation"),
          "n_train": n_train, "n_test": int(data.X_test.shape[0]), "n_features": data.n_features,
          "n_labels": data.n_labels, "sha256": data.sha256,
          "batches_per_epoch": batches_per_epoch(n_train, run.batch_size)}
    log.write("run_start", **record(
        START_FIELDS, experiment=run.experiment, label=run.label, system=run.system, config=run.config,
        seed=run.seed, n_threads=run.n_threads, batch_size=run.batch_size, protocol=run.protocol,
        params=run.trainer_params(), sweep=run.sweep, config_hash=run.config_hash, run_id=run.run_id,
        identity=run.identity(), budget=run.budget, eval=run.eval, dataset=ds, init_time_s=init_time,
        describe=desc, pid=os.getpid(), **extra))




def _loop(run: RunSpec, data, trainer, stream, log: RunLogWriter, clock, prog: Progress) -> dict[str, Any]:
    bpe = stream.batches_per_epoch
    rule = StopRule(run.budget, bpe)
    sched = EvalSchedule(run.eval)
    paper = run.protocol == "paper"

    t_wall0 = clock()
    train_time = 0.0
    steps = 0
    est = None                      # seconds per step, from the last chunk
    prev_chunk = 0
    loss_sum, loss_n = 0.0, 0
    counters: dict = {}
    ttt = None
    best = {"p_at_1": None, "p_at_3": None, "p_at_5": None}
    last_eval_step = -1
    status = None
    error = None
    evals = 0
    eval_hook = getattr(trainer, "eval_metrics", None)

    def do_eval(rows, subset_name: str, reason: str) -> dict:
        nonlocal ttt, last_eval_step, evals, loss_sum, loss_n
        t0 = clock()
        m = score(trainer, data.X_test, data.Y_test, rows)
        eval_time = clock() - t0
        extra = {}
        if callable(eval_hook):              # untimed: neither train nor eval time
            try:
                Xe = data.X_test if rows is None else data.X_test[rows]
                extra["trainer_metrics"] = dict(eval_hook(Xe) or {})
            except Exception as e:  # noqa: BLE001
                extra["trainer_metrics"] = {"error": f"{type(e).__name__}: {e}"}
        if plan is not None and plan.train_rows is not None:   # untimed, like the hook
            t1 = clock()
            mt = score(trainer, data.X_train, data.Y_train, plan.train_rows)
            extra["train_eval"] = {"p_at_1": mt.get("p_at_1"), "p_at_5": mt.get("p_at_5"), "n": mt.get("n"),
                                   "time_s": clock() - t1}
        train_loss = loss_sum / loss_n if loss_n else None
        loss_sum, loss_n = 0.0, 0
        rec = log.write("eval", **record(
            EVAL_FIELDS, step=steps, samples_seen=stream.samples_seen, epoch=stream.epoch_progress,
            train_time_s=train_time, eval_time_s=eval_time, wall_time_s=clock() - t_wall0, train_loss=train_loss,
            p_at_1=m.get("p_at_1"), p_at_3=m.get("p_at_3"), p_at_5=m.get("p_at_5"), ndcg_at_1=m.get("ndcg_at_1"),
            ndcg_at_3=m.get("ndcg_at_3"), ndcg_at_5=m.get("ndcg_at_5"), n_eval=m.get("n"), subset=subset_name,
            reason=reason, counters=counters, **extra))
        for k in best:
            v = m.get(k)
            if v is not None and (best[k] is None or v > best[k]):
                best[k] = v
        if ttt is None and rule.reached(m.get("p_at_1")):
            ttt = train_time
        last_eval_step = steps
        evals += 1
        prog.update(train_time, steps, m.get("p_at_1"), force=True)
        return rec

    plan = None
    try:
        plan = EvalPlan(run, data.X_test.shape[0], data.X_train.shape[0])
        do_eval(plan.intermediate, plan.intermediate_name, "start")
        status = rule.after_chunk(steps, train_time, ttt is not None) if ttt is not None else None
        while status is None:
            # --- how many steps in this chunk: never past an eval point or a budget by more than one chunk
            limit = rule.steps_left(steps)
            if not sched.by_time:
                limit = min(limit, sched.next - steps)
            if paper:
                limit = min(limit, bpe - steps % bpe)          # stop at each epoch end
            t_goal = min(x for x in (sched.next if sched.by_time else None, rule.max_time, math.inf)
                         if x is not None)
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

            before = stream.steps
            t0 = clock()
            stats = trainer.train_steps(n)
            dt = clock() - t0
            done = stream.steps - before                        # the stream, not the trainer, counts
            train_time += dt
            steps += done
            counters = dict(stats.counters or {})
            loss = float(stats.loss)
            if not math.isfinite(loss):                         # checked before the step count: a NaN
                status = "diverged"                             # inside a chunk ends the run there
                loss_sum, loss_n = loss_sum + loss * max(done, 1), loss_n + max(done, 1)
                break
            if done != n:
                raise RuntimeError(f"train_steps({n}) drew {done} batches from the run's batch stream "
                                   f"(reported {stats.n_steps} steps)")
            est = dt / n
            prev_chunk = n
            loss_sum, loss_n = loss_sum + loss * n, loss_n + n
            prog.update(train_time, steps, best["p_at_1"])

            # --- evaluation points
            position = train_time if sched.by_time else steps
            epoch_end = paper and steps % bpe == 0
            if epoch_end:
                do_eval(plan.epoch_end, plan.epoch_end_name, "epoch_end")
            elif sched.due(position):
                do_eval(plan.intermediate, plan.intermediate_name, "cadence")
            sched.advance(position)
            status = rule.after_chunk(steps, train_time, ttt is not None)
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
    return log.write("run_stop", fsync=True, **record(
        STOP_FIELDS, status=status, error=error, reason=None, train_time_s=train_time,
        wall_time_s=clock() - t_wall0, steps=steps, samples_seen=stream.samples_seen, epoch=stream.epoch_progress,
        n_evals=evals, target_p_at_1=rule.target, time_to_target_s=ttt, best_p_at_1=best["p_at_1"],
        best_p_at_3=best["p_at_3"], best_p_at_5=best["p_at_5"], final_p_at_1=final.get("p_at_1"),
        final_p_at_3=final.get("p_at_3"), final_p_at_5=final.get("p_at_5"), final_ndcg_at_5=final.get("ndcg_at_5"),
        final_n_eval=final.get("n"), final_eval_time_s=final.get("eval_time_s"), counters=counters_end))
