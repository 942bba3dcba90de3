"""Executors: how the runs of a grid get their processes, and the lock that keeps results whole.

``run_experiment(exp, runs, results_dir, executor="local"|"dask", ...)`` is the one entry point. For
each run it skips it (``--resume`` and a finished log), reuses an identical finished run of another
experiment, or has the executor run it in its own process (``process.launch``):

* ``local`` (default): one run after another on this host.
* ``dask``: every run a task on a ``dask.distributed`` cluster (``workers=N`` starts a local
  cluster, ``scheduler=ADDRESS`` joins one, e.g. started by dask-jobqueue on Slurm). The task starts
  the same child process with the same thread environment; each task asks for ``cores = n_threads``
  of its worker's ``cores`` resource, so runs on one worker never share cores. Logs land in the
  same results layout (the results folder must be shared between the workers and this host).

Whatever the executor, this process holds ``<results>/raw/.lock`` (filelock) for the whole grid
(``reproduce``: for all its experiments, summaries, figures and report; the lock is reentrant within
a process): a second runner on the same results folder waits for it (saying so), and each run's child
holds a per-run lock while it writes, so no two processes ever write one log.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

from .process import EXIT_BUSY, RunError, _die_with_parent, launch, thread_env, wall_limit
from .runlog import partial_path, read_log
from .spec import DEFAULT_ORDER, Experiment, RunSpec, execution_order

EXECUTORS = ("local", "dask")


# ------------------------------------------------------------------------------------------ lock


#: The results-folder locks this process holds, by lock path (weak: a lock nobody holds any more drops out).
_HELD: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()


def results_lock(results_dir: str | Path, *, wait: bool = True, say: Callable[[str], None] | None = None):
    """Acquire the results folder's lock: wait for another runner (saying so once), or raise RunError
    when ``wait`` is false. Returns the held lock; release it once per call (in a ``finally``).

    Reentrant within this process: while a caller holds it (``reproduce`` holds it for all its
    experiments), taking it again for the same folder returns the same lock at once, counted, and the
    folder is free for other runners only when every hold is released."""
    from filelock import FileLock, Timeout
    raw = Path(results_dir) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    path = str((raw / ".lock").resolve())
    held = _HELD.get(path)
    if held is not None and held.is_locked:
        held.acquire(timeout=0)               # this process holds it: one more hold, never a wait
        return held
    lock = FileLock(path, thread_local=False)  # one count per process, whichever thread releases it
    try:
        lock.acquire(timeout=0)
    except Timeout:
        msg = (f"results folder {results_dir} is in use by another slidebench runner (lock {raw / '.lock'})")
        if not wait:
            raise RunError(msg + "; not waiting (--no-wait)") from None
        (say or (lambda s: print(s, file=sys.stderr, flush=True)))(msg + "; waiting for it to finish ...")
        lock.acquire()
    _HELD[path] = lock
    return lock


# ---------------------------------------------------------------------------------- resume/reuse


def check_existing(final: Path, run: RunSpec) -> Any:
    """Read an existing final log; refuse one whose run_start hash disagrees with its name."""
    if not final.exists():
        return None
    try:
        log = read_log(final)
    except ValueError as e:            # a corrupted log (e.g. written by two processes before the locks):
        aside = final.with_name(final.name + f".corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(final, aside)       # keep it for inspection, out of the way of the rerun
        print(f"[slidebench] {e}; moved it to {aside.name} and running this run again", file=sys.stderr, flush=True)
        return None
    if log.run_start is None:
        return log
    h = log.run_start.get("config_hash")
    if h != run.config_hash:
        raise RunError(f"{final}: its run_start config_hash {h!r} disagrees with its file name "
                       f"({run.config_hash}); refusing to touch it")
    return log


def stale_reason(run: RunSpec, log: Any) -> str | None:
    """Why a log with this run's hash was not trained the way this code trains the run (the trainer's
    ``stale_log``; slidebench.trainers.stale_log), or None."""
    from ..trainers import stale_log
    if log is None or not log.run_start:
        return None
    return stale_log(run.system, run.trainer_params(), log.run_start)


def check_stale(runs: list[RunSpec], results_dir: str | Path) -> None:
    """Before anything runs under --resume: refuse a results folder whose finished logs carry these runs'
    hashes but were trained otherwise than this code trains them (they would be skipped as done)."""
    bad = []
    for run in runs:
        final = run.log_path(results_dir)
        if not final.exists():
            continue
        try:
            log = read_log(final)
        except ValueError:
            continue                          # check_existing moves a corrupted log aside later
        why = stale_reason(run, log) if log.finished else None
        if why:
            bad.append((final, why))
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise RunError(f"--resume would keep {len(bad)} finished run log(s) that this version trains differently "
                       f"({bad[0][0]}: {bad[0][1]}): {', '.join(str(p) for p, _ in bad[:3])}{more}. Nothing was run "
                       "and nothing was changed: delete those logs (or the results folder's raw/ and summary/) "
                       "or write to another --results-dir")


def find_reusable(run: RunSpec, results_dir: str | Path) -> Path | None:
    """A finished final log of the same configuration (hash and identity) under another experiment, trained
    the way this code trains the run (``stale_reason``)."""
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
                and log.run_start.get("reused_from") is None and stale_reason(run, log) is None:
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


def _outcome(run: RunSpec, results_dir, rc: int | None, timed_out: float | None = None) -> dict[str, Any]:
    """What a finished child left: the final log if it is newer than any partial one, else the partial."""
    final = run.log_path(results_dir)
    if rc == EXIT_BUSY:
        return {"action": "busy", "status": "busy", "log": None}
    part = partial_path(final)
    if final.exists() and (not part.exists() or final.stat().st_mtime >= part.stat().st_mtime):
        log = read_log(final)
    else:
        log = read_log(part) if part.exists() else None
    return {"action": "ran", "status": log.status if log else "no log written", "log": str(log.path) if log else None}


def _run_local(run: RunSpec, results_dir, *, progress: bool, data_loader, extra_env,
               cpus: list[int] | None = None) -> dict[str, Any]:
    limit = wall_limit(run)
    rc = None
    try:
        rc = launch(run, results_dir, timeout=limit, progress=progress, data_loader=data_loader, extra_env=extra_env,
                    cpus=cpus)
    except subprocess.TimeoutExpired:
        print(f"[slidebench] {run.run_id}: killed after {limit:.0f} s of wall clock "
              "(SLIDEBENCH_RUN_TIMEOUT overrides); its partial log is kept and summarized "
              "as incomplete", flush=True)
    return _outcome(run, results_dir, rc)


def _dask_task(run_json: str, results_dir: str, progress: bool, data_loader, extra_env,
               systems: dict[str, str] | None = None, cores_per_worker: int | None = None) -> dict[str, Any]:
    """Runs on a Dask worker: the same child process as the local executor. ``systems`` carries the
    submitting process's registry entries (systems registered at run time exist only there)."""
    from ..trainers import register
    for name, target in (systems or {}).items():
        register(name, target)
    run = RunSpec.from_json(run_json)
    t0 = time.monotonic()
    cpus = _take_cores(run.n_threads, cores_per_worker)
    try:
        out = _run_local(run, results_dir, progress=progress, data_loader=data_loader, extra_env=extra_env, cpus=cpus)
    finally:
        _give_back(cpus)
    import socket
    out.update(worker_host=socket.gethostname(), worker_elapsed_s=time.monotonic() - t0, cpus=cpus)
    return out


# Exclusive cores on a worker: each worker process hands its tasks disjoint cores from its pool (a
# local cluster's worker i owns cores [i*c, (i+1)*c) of this host; a worker started elsewhere owns the
# cores its process may run on, e.g. its Slurm allocation), and the run's process is pinned to them.
_POOL_LOCK = threading.Lock()
_FREE: list[int] | None = None


def _worker_pool(cores_per_worker: int | None) -> list[int]:
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores_per_worker:
        return allowed
    try:
        from distributed import get_worker
        i = int(get_worker().name)
    except (ImportError, ValueError, TypeError):
        return allowed
    return allowed[i * cores_per_worker:(i + 1) * cores_per_worker] or allowed


def _take_cores(n: int, cores_per_worker: int | None) -> list[int] | None:
    """n cores of this worker's pool, or None (no pinning) when the pool cannot provide them."""
    global _FREE
    with _POOL_LOCK:
        if _FREE is None:
            _FREE = _worker_pool(cores_per_worker)
        if len(_FREE) < n:
            return None
        got, _FREE[:] = _FREE[:n], _FREE[n:]
        return got


def _give_back(cpus: list[int] | None) -> None:
    if cpus:
        with _POOL_LOCK:
            _FREE.extend(cpus)
            _FREE.sort()


def dask_client(*, workers: int | None = None, scheduler: str | None = None, cores_per_worker: int | None = None):
    """A distributed.Client: a local cluster of ``workers`` worker processes, each with
    ``cores_per_worker`` (default: this host's cores // workers) of the ``cores`` resource (and as many
    task threads, each of which only waits on its run's process), or the cluster at ``scheduler``."""
    from distributed import Client, LocalCluster
    if scheduler:
        return Client(scheduler)
    n = int(workers or 1)
    cores = cores_per_worker or max(1, (os.cpu_count() or 1) // n)
    cluster = LocalCluster(n_workers=n, threads_per_worker=cores, processes=True, resources={"cores": cores},
                           dashboard_address=None)
    return Client(cluster)


def _check_cluster(client, runs: list[RunSpec]) -> None:
    info = client.scheduler_info()
    ws = info.get("workers", {})
    if not ws:
        raise RunError("the Dask cluster has no workers")
    most = max(float((w.get("resources") or {}).get("cores", 0)) for w in ws.values())
    need = max(r.n_threads for r in runs)
    if most < need:
        raise RunError(f"no Dask worker offers {need} cores (largest 'cores' resource: {most:g}); start workers "
                       f"with --resources cores=N (N = the cores each worker may use) or run fewer threads")


def run_experiment(exp: Experiment, runs: list[RunSpec], results_dir: str | Path = "results", *,
                   resume: bool = False, reuse_runs: bool | None = None, progress: bool = True,
                   data_loader: str | None = None, extra_env: dict | None = None, executor: str = "local",
                   workers: int | None = None, scheduler: str | None = None, client=None,
                   wait: bool = True) -> list[dict[str, Any]]:
    """Run every run of ``runs`` (from spec.expand), one child process each, on the chosen executor.
    Runs execute in the experiment's [run] order (spec.execution_order: rounds over the seeds unless
    "grouped"). Returns one dict per run, in grid order: {"run_id", "path" (final log path), "log" (the log actually
    written: the .partial one when the run errored or was killed), "action" ("ran"|"skipped_finished"|
    "reused"|"busy"), "status", "elapsed_s"}. ``reuse_runs`` defaults to ``resume``."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if reuse_runs is None:
        reuse_runs = resume
    lock = results_lock(results_dir, wait=wait)
    try:
        return _run_grid(exp, runs, results_dir, resume=resume, reuse_runs=reuse_runs, progress=progress,
                         data_loader=data_loader, extra_env=extra_env, executor=executor, workers=workers,
                         scheduler=scheduler, client=client)
    finally:
        lock.release()


def _run_grid(exp, runs, results_dir, *, resume, reuse_runs, progress, data_loader, extra_env, executor,
              workers, scheduler, client) -> list[dict[str, Any]]:
    out: list[dict[str, Any] | None] = [None] * len(runs)
    t_start = time.monotonic()
    todo: list[int] = []
    if resume:
        check_stale(runs, results_dir)

    def report(i: int, res: dict) -> None:
        run = runs[i]
        res.update(run_id=run.run_id, path=str(run.log_path(results_dir)))
        res.setdefault("log", str(run.log_path(results_dir)))
        out[i] = res
        if res["action"] == "busy":
            print(f"[slidebench] {run.run_id}: another process is writing this run's log; skipped it "
                  "(rerun with --resume once that process is done)", file=sys.stderr, flush=True)
        if progress:
            done = sum(r is not None for r in out)
            el = time.monotonic() - t_start
            ran = [r for r in out if r is not None and r["action"] == "ran"]
            eta = ""
            if ran:
                per = sum(r["elapsed_s"] for r in ran) / len(ran)
                eta = f", ETA this experiment ~{per * (len(runs) - done) / 60:.1f} min (upper bound)"
            print(f"[{done}/{len(runs)}] {run.run_id}: {res['action']} status={res['status']} "
                  f"({res['elapsed_s']:.1f}s, {el / 60:.1f} min so far{eta})", flush=True)

    for i in execution_order(runs, getattr(exp, "order", DEFAULT_ORDER)):   # rounds over the seeds by default
        run = runs[i]
        final = run.log_path(results_dir)
        existing = check_existing(final, run)
        t0 = time.monotonic()
        if resume and existing is not None and existing.finished:
            report(i, {"action": "skipped_finished", "status": existing.status, "elapsed_s": 0.0})
            continue
        src = find_reusable(run, results_dir) if reuse_runs else None
        if src is not None:
            reuse(src, run, results_dir)
            report(i, {"action": "reused", "status": read_log(final).status, "reused_from": str(src),
                       "elapsed_s": time.monotonic() - t0})
            continue
        if executor == "local":
            res = _run_local(run, results_dir, progress=progress, data_loader=data_loader, extra_env=extra_env)
            res["elapsed_s"] = time.monotonic() - t0
            report(i, res)
        else:
            todo.append(i)
    if todo:
        _run_dask(runs, todo, results_dir, report, progress=progress, data_loader=data_loader,
                  extra_env=extra_env, workers=workers, scheduler=scheduler, client=client)
    return [r for r in out if r is not None]


def _run_dask(runs, todo, results_dir, report, *, progress, data_loader, extra_env, workers, scheduler,
              client) -> None:
    from distributed import as_completed

    from ..trainers import REGISTRY
    own = client is None
    per_worker = None                     # a local cluster we start: worker i owns its slice of the cores
    if own:
        if not scheduler:
            per_worker = max(1, (os.cpu_count() or 1) // int(workers or 1))
        client = dask_client(workers=workers, scheduler=scheduler, cores_per_worker=per_worker)
    try:
        _check_cluster(client, [runs[i] for i in todo])
        rd = str(Path(results_dir).resolve())
        futs = {}
        t0 = time.monotonic()
        for i in todo:
            f = client.submit(_dask_task, runs[i].to_json(), rd, False, data_loader, extra_env,
                              {runs[i].system: REGISTRY[runs[i].system]}, per_worker,
                              resources={"cores": runs[i].n_threads}, key=f"slidebench-{runs[i].run_id}-{i}",
                              pure=False)
            futs[f] = i
        for f in as_completed(futs):
            i = futs[f]
            try:
                res = f.result()
            except Exception as e:  # noqa: BLE001  (the worker died or the task raised)
                res = {"action": "ran", "status": "no log written", "log": None,
                       "error": f"{type(e).__name__}: {e}"}
                res.update({k: v for k, v in _outcome(runs[i], results_dir, None).items() if v is not None})
            res["elapsed_s"] = res.get("worker_elapsed_s", time.monotonic() - t0)
            report(i, res)
    finally:
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


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
    p = subprocess.run(cmd, env=env, preexec_fn=_die_with_parent(os.getpid()))
    st = "ok" if p.returncode == 0 and out_csv.exists() else f"error (exit {p.returncode})"
    if st == "ok":
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"experiment": exp.name, "csv": str(out_csv), "threads": n,
                                      "scale": scale, "data_dir": data_dir}) + "\n")
    return {"action": "ran", "path": str(out_csv), "status": st, "elapsed_s": time.monotonic() - t0}


