"""Command line: ``python -m slidebench`` / ``slidebench``. Every subcommand has ``--help``.

Heavy modules (data, engine, baselines, plots) are imported inside the subcommand that needs them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .harness.tables import SCALES

EXPERIMENTS_DIR = Path("experiments")


def _add_results(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default="results", help="results folder (default: results)")


def _add_exec(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local: one run after another on this host (default); dask: a dask.distributed cluster")
    p.add_argument("--workers", type=int, metavar="N", help="dask: start a local cluster of N worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask: join the cluster at ADDRESS (tcp://host:8786)")
    p.add_argument("--oversubscribe", action="store_true", help="allow thread counts above this machine's cores")
    p.add_argument("--no-wait", action="store_true", help="exit (2) instead of waiting when another runner holds "
                   "the results folder")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="slidebench", description="SLIDE reproducibility benchmark suite: data, "
                                 "runs under one clock, summaries, figures, report.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    # data
    d = sub.add_parser("data", help="generate, import or describe data sets")
    dsub = d.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    g = dsub.add_parser("generate", help="generate (and cache) a synthetic look-alike data set")
    g.add_argument("--preset", required=True, choices=["delicious", "amazon"])
    g.add_argument("--scale", default="small", choices=SCALES)
    g.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    g.add_argument("--out", help="write XMLRepository-format OUT/<preset>/{train,test}.txt (usable as --data-dir OUT) "
                   "instead of caching")
    g.add_argument("--cache-dir", help="cache folder (default: the data module's)")
    im = dsub.add_parser("import", help="parse XMLRepository text files and cache them (.npz beside them)")
    im.add_argument("paths", nargs="+", metavar="PATH")
    st = dsub.add_parser("stats", help="print data set statistics (of presets, or of any TRAIN [TEST] files)")
    st.add_argument("files", nargs="*", metavar="FILE", help="XMLRepository TRAIN [TEST] files: their statistics")
    st.add_argument("--name", help="the data set's name for FILE arguments (default: the train file's folder)")
    st.add_argument("--preset", choices=["delicious", "amazon"], action="append",
                    help="preset (repeatable; default both)")
    st.add_argument("--scale", default="small", choices=SCALES)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--data-dir", help="read the real files from this folder instead of the synthetic set")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")

    # run
    r = sub.add_parser("run", help="run an experiment file (one process per run)")
    r.add_argument("experiment", metavar="EXPERIMENT.toml")
    r.add_argument("--system", nargs="+", metavar="LABEL", help="only these system labels")
    r.add_argument("--seed", nargs="+", type=int, metavar="N", help="run these seeds instead of the file's")
    r.add_argument("--scale", choices=SCALES, help="override [data] scale")
    r.add_argument("--threads", type=int, metavar="N", help="run with N threads instead of the file's list")
    r.add_argument("--data-dir", help="real XMLRepository files replace the synthetic set")
    r.add_argument("--resume", action="store_true", help="skip finished runs; reuse identical finished runs "
                   "of other experiments")
    r.add_argument("--dry-run", action="store_true", help="list the grid (run ids, log paths) and exit")
    r.add_argument("--quiet", action="store_true", help="no per-run progress output")
    _add_exec(r)
    _add_results(r)

    # hidden child entry points
    one = sub.add_parser("_run-one")
    one.add_argument("--run-json", required=True)
    one.add_argument("--register", action="append", default=[], help="SYSTEM=module:Class")
    one.add_argument("--data-loader")
    one.add_argument("--quiet", action="store_true")
    _add_results(one)
    mc = sub.add_parser("_run-micro")
    mc.add_argument("experiment")
    mc.add_argument("--threads", type=int, required=True)
    mc.add_argument("--scale")
    mc.add_argument("--data-dir")
    mc.add_argument("--quiet", action="store_true")
    _add_results(mc)

    s = sub.add_parser("summarize", help="write tidy CSVs (results/summary/<exp>_{curves,runs,ttt}.csv)")
    s.add_argument("experiments", nargs="*", metavar="EXP", help="experiment names (default: all with logs)")
    _add_results(s)

    p = sub.add_parser("plot", help="draw figures from the summaries (slidebench.reporting.plots.make_figures)")
    p.add_argument("experiments", nargs="*", metavar="EXP")
    _add_results(p)

    rep = sub.add_parser("report", help="write results/REPORT.md (slidebench.reporting.report.write_report)")
    _add_results(rep)

    sub.add_parser("env", help="print the environment manifest as JSON")

    rp = sub.add_parser("reproduce", help="generate data, run every experiments/*.toml except smoke and tune "
                        "(with --resume), summarize, plot, report")
    rp.add_argument("--scale", choices=SCALES,
                    help="override every file's [data] scale (default: each file keeps its own)")
    rp.add_argument("--data-dir", help="real XMLRepository files replace the synthetic sets")
    rp.add_argument("--seeds", nargs="+", type=int, metavar="N", help="seeds to run instead of each file's")
    rp.add_argument("--threads", type=int, metavar="N", help="thread count instead of each file's list")
    rp.add_argument("--experiments-dir", default=str(EXPERIMENTS_DIR))
    rp.add_argument("--only", nargs="+", metavar="EXP", help="only these experiment names")
    _add_exec(rp)
    _add_results(rp)
    return ap


# ------------------------------------------------------------------------------------- commands


def cmd_data(a) -> int:
    if a.data_cmd == "generate":
        if a.out:
            # stream the synthetic set to text files (XMLRepository format; usable later as --data-dir)
            from .data import write_files
            paths = write_files(a.preset, a.scale, Path(a.out) / a.preset, seed=a.seed, progress=True)
            for k, p in paths.items():
                print(f"wrote {k}: {p}")
            return 0
        from .data import dataset_stats, format_stats, load_dataset
        kw = {"cache_dir": a.cache_dir} if a.cache_dir else {}
        ds = load_dataset(a.preset, a.scale, seed=a.seed, progress=True, **kw)
        print(format_stats(dataset_stats(ds)))
        return 0
    if a.data_cmd == "import":
        from .data import read_xmlrepo
        for p in a.paths:
            t0 = time.perf_counter()
            X, Y = read_xmlrepo(p, cache=True)
            print(f"{p}: {X.shape[0]} points, {X.shape[1]} features, {Y.shape[1]} labels, "
                  f"{X.nnz} feature nonzeros, {Y.nnz} labels ({time.perf_counter() - t0:.1f}s; cached)")
        return 0
    if a.data_cmd == "stats":
        from .data import dataset_stats, format_stats, load_dataset
        if a.files:
            if len(a.files) > 2:
                raise ValueError("data stats takes at most two files: TRAIN [TEST]")
            from .data import load_files
            ds = load_files(a.files[0], a.files[1] if len(a.files) > 1 else None, name=a.name, progress=True)
            stats = [dataset_stats(ds)]
            print(json.dumps(stats, indent=2, default=str) if a.json else format_stats(stats))
            return 0
        presets = a.preset or ["delicious", "amazon"]
        stats = [dataset_stats(load_dataset(pr, a.scale, data_dir=a.data_dir, seed=a.seed, progress=True))
                 for pr in presets]
        print(json.dumps(stats, indent=2, default=str) if a.json else format_stats(stats))
        return 0
    raise AssertionError(a.data_cmd)


def _print_grid(runs, results_dir) -> None:
    from .harness.runlog import read_log
    for r in runs:
        p = r.log_path(results_dir)
        state = "new"
        if p.exists():
            try:
                state = "finished" if read_log(p).finished else "exists (not finished)"
            except (OSError, ValueError) as e:
                state = f"unreadable ({e})"
        sw = " ".join(f"{k}={v}" for k, v in r.sweep.items())
        dname = r.data.get("name") or r.data["preset"]
        where = r.data.get("train") or r.data["scale"] or r.data["data_dir"]
        val = f" validation={r.data['validation']}" if r.data.get("validation") else ""
        print(f"{r.run_id}  system={r.system} config={r.config} threads={r.n_threads} batch={r.batch_size} "
              f"data={dname}/{where}{val} {sw}  [{state}]  {p}")


def _check_exec(a) -> None:
    if a.executor == "local" and (a.workers or a.scheduler):
        raise ValueError("--workers and --scheduler go with --executor dask")
    if a.executor == "dask" and bool(a.workers) == bool(a.scheduler):
        raise ValueError("--executor dask needs exactly one of --workers N (a local cluster) and --scheduler ADDRESS")
    if a.workers is not None and a.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {a.workers}")


def cmd_run(a) -> int:
    from .harness.executors import run_experiment, run_micro_experiment
    from .harness.spec import expand, load_experiment
    exp = load_experiment(a.experiment)
    if exp.kind == "micro":
        if a.dry_run:
            print(f"{exp.name}: micro experiment -> {Path(a.results_dir) / 'summary' / (exp.name + '.csv')}")
            return 0
        res = run_micro_experiment(exp, a.results_dir, scale=a.scale, data_dir=a.data_dir, threads=a.threads,
                                   resume=a.resume, progress=not a.quiet)
        print(f"{exp.name}: {res['action']} {res['status']} {res['path']}")
        return 0 if res["status"] in ("ok", "exists") else 1
    from .harness.checks import check_runs
    runs = expand(exp, scale=a.scale, data_dir=a.data_dir, seeds=a.seed, threads=a.threads, labels=a.system)
    _check_exec(a)
    check_runs(exp, runs, oversubscribe=a.oversubscribe or a.executor == "dask" and bool(a.scheduler))
    if a.dry_run:
        _print_grid(runs, a.results_dir)
        print(f"{len(runs)} runs, checked (data headers, threads, every system's params)")
        return 0
    res = run_experiment(exp, runs, a.results_dir, resume=a.resume, progress=not a.quiet, executor=a.executor,
                         workers=a.workers, scheduler=a.scheduler, wait=not a.no_wait)
    bad = [r for r in res if r["status"] in ("error", "incomplete", "no log written")]
    for r in bad:
        print(f"FAILED {r['run_id']}: {r['status']} (log: {r['log']})", file=sys.stderr)
    return 1 if bad else 0


def cmd_run_one(a) -> int:
    from .harness.process import run_one
    from .harness.spec import RunSpec
    from .trainers import register
    for item in a.register:
        name, _, target = item.partition("=")
        if not name or ":" not in target:
            raise ValueError(f"--register expects SYSTEM=module:Class, got {item!r}")
        register(name, target)
    from .harness.process import EXIT_BUSY, RunBusy
    run = RunSpec.from_json(a.run_json)
    try:
        stop = run_one(run, a.results_dir, progress=not a.quiet, data_loader=a.data_loader)
    except RunBusy as e:
        print(f"slidebench: {e}", file=sys.stderr)
        return EXIT_BUSY
    st = stop.get("status")
    if not a.quiet:
        print(f"[{run.run_id}] {st}: train {stop.get('train_time_s') or 0:.2f}s, {stop.get('steps')} steps, "
              f"final P@1 {stop.get('final_p_at_1')}", flush=True)
    if st == "error" and stop.get("error"):
        print(stop["error"], file=sys.stderr)
    return 0 if st != "error" else 1


def cmd_run_micro(a) -> int:
    from .harness.process import micro_child
    out = micro_child(a.experiment, a.results_dir, scale=a.scale, data_dir=a.data_dir, n_threads=a.threads,
                      progress=not a.quiet)
    print(f"wrote {out}")
    return 0


def cmd_summarize(a) -> int:
    from .reporting.summarize import summarize
    raw = Path(a.results_dir) / "raw"
    unknown = [e for e in a.experiments if not (raw / e).is_dir()]
    if unknown:
        known = sorted(p.name for p in raw.iterdir() if p.is_dir()) if raw.is_dir() else []
        raise ValueError(f"no run logs for experiment(s) {', '.join(map(repr, unknown))} under {raw} "
                         f"(experiments with logs: {', '.join(known) or 'none'})")
    paths = summarize(a.experiments or None, a.results_dir)
    if not paths:
        print(f"no run logs under {Path(a.results_dir) / 'raw'}")
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_plot(a) -> int:
    from .reporting.plots import make_figures
    for p in make_figures(results_dir=a.results_dir, experiments=a.experiments or None):
        print(f"wrote {p}")
    return 0


def cmd_report(a) -> int:
    from .reporting.report import write_report
    print(f"wrote {write_report(results_dir=a.results_dir)}")
    return 0


def cmd_env(a) -> int:
    from .harness import manifest
    m = manifest.collect()
    m["engine"] = manifest.engine_info()
    print(json.dumps(m, indent=2, default=str))
    return 0


# Experiment files that `reproduce` runs only when named with --only, and why.
NOT_IN_REPRODUCE = {
    "smoke": "a one-minute end-to-end check (`python -m slidebench reproduce --only smoke`), not a figure",
    "long": "the budget check at 3x the headline's budget, amazon (~12 min on 2 cores; `make long`)",
    "long_delicious": "the budget check at 3x the headline's budget, delicious (~8 min on 2 cores; `make long`)",
    "long_sampled": "the budget check of TF sampled softmax at 9x the headline's budget, three lrs (~22 min; "
                    "`make long`)",
    "long_slide": "the budget check of SLIDE at 9x the headline's budget, three lrs (~22 min; `make long`)",
    "gpu": "SLIDE against a dense softmax on a GPU: needs PyTorch with CUDA (`make gpu`, ~14 min on a 16-core "
           "machine with one H200)",
    "gpu_lr": "the GPU machine's learning-rate check (`make gpu`)",
    "tune": "the tuning behind fig5/fig7's learning rates (~100 min on 2 cores; `make tune` reruns it, "
            "its chosen values are already in fig5.toml and fig7.toml)",
}


def cmd_reproduce(a) -> int:
    from .harness.spec import expand, load_experiment
    t_start = time.monotonic()
    files = sorted(Path(a.experiments_dir).glob("*.toml"))
    if a.only:            # an explicit --only may name a file that reproduce leaves out by default
        files = [p for p in files if p.stem in a.only]
        missing = set(a.only) - {p.stem for p in files}
        if missing:
            raise ValueError(f"--only: no experiment file for {', '.join(sorted(missing))} in {a.experiments_dir}")
    else:
        for p in files:
            if p.stem in NOT_IN_REPRODUCE:
                print(f"reproduce: leaving out {p.name}: {NOT_IN_REPRODUCE[p.stem]}", flush=True)
        files = [p for p in files if p.stem not in NOT_IN_REPRODUCE]
    if not files:
        raise ValueError(f"no experiment files in {a.experiments_dir}")
    exps = [load_experiment(p) for p in files]           # validate every file before spending any time
    _check_exec(a)
    from .harness.checks import check_runs
    plan = []
    for e in exps:
        runs = expand(e, scale=a.scale, data_dir=a.data_dir, seeds=a.seeds, threads=a.threads) \
            if e.kind == "train" else []
        if runs:          # data headers (or the preset's shapes), threads, every system's params
            check_runs(e, runs, oversubscribe=a.oversubscribe)
        plan.append((e, runs))
    n_runs = sum(len(r) for _, r in plan)
    budget_s = sum(r.budget.get("train_seconds", 0) for _, rs in plan for r in rs)
    print(f"reproduce: {len(exps)} experiments, {n_runs} training runs (+ "
          f"{sum(e.kind == 'micro' for e in exps)} micro); training budget {budget_s / 60:.1f} min "
          f"plus evaluation and start-up (estimate refined as runs finish)", flush=True)
    # one hold of the results folder for the whole reproduce (each experiment's run_experiment takes it
    # again, reentrantly), so no other runner slips in between experiments or before the summaries
    from .harness.executors import check_stale, results_lock
    lock = results_lock(a.results_dir, wait=not a.no_wait)
    try:
        # every experiment's finished logs, before any of them trains (run_experiment checks its own again)
        check_stale([r for _, rs in plan for r in rs], a.results_dir)
        return _reproduce_locked(a, plan, n_runs, t_start)
    finally:
        lock.release()


def _reproduce_locked(a, plan, n_runs: int, t_start: float) -> int:
    """``reproduce`` once its plan is checked, holding the results folder: data, runs, summaries, figures,
    report."""
    from .harness.executors import run_experiment, run_micro_experiment
    from .reporting.summarize import summarize
    # data first (cached; every run then loads the cache)
    # each (preset, scale, data seed) the plan uses: files keep their own scale unless --scale overrides it
    presets = sorted({(r.data["preset"], r.data.get("scale") or "small", r.data["seed"])
                      for _, rs in plan for r in rs if r.data.get("preset")})
    if presets:
        from .data import load_dataset
        for pr, scale, s in presets:
            t0 = time.monotonic()
            ds = load_dataset(pr, scale, data_dir=a.data_dir, seed=s, progress=True)
            print(f"data {ds.name}: ready ({time.monotonic() - t0:.1f}s)", flush=True)
    files = sorted({(r.data["train"], r.data["test"], r.data["name"]) for _, rs in plan for r in rs
                    if r.data.get("train")})
    if files:
        from .data import load_files
        for tr, te, name in files:                        # parse once; every run then loads the cache
            t0 = time.monotonic()
            load_files(tr, te, name=name, progress=True)
            print(f"data {name}: ready ({time.monotonic() - t0:.1f}s)", flush=True)

    done_runs = 0
    ran_time, ran_n = 0.0, 0
    failed = []
    for e, runs in plan:
        if e.kind == "micro":
            res = run_micro_experiment(e, a.results_dir, scale=a.scale, data_dir=a.data_dir, threads=a.threads,
                                       resume=True)
            print(f"{e.name}: micro {res['action']} {res['status']}", flush=True)
            if res["status"] not in ("ok", "exists"):
                failed.append(e.name)
            continue
        res = run_experiment(e, runs, a.results_dir, resume=True, progress=True, executor=a.executor,
                             workers=a.workers, scheduler=a.scheduler, wait=not a.no_wait)
        for r in res:
            done_runs += 1
            if r["action"] == "ran":
                ran_time += r["elapsed_s"]
                ran_n += 1
            if r["status"] in ("error", "incomplete", "no log written"):
                failed.append(r["run_id"])
        left = n_runs - done_runs
        eta = f"~{(ran_time / ran_n) * left / 60:.0f} min" if ran_n else "unknown"
        print(f"reproduce: {e.name} done; {done_runs}/{n_runs} runs, {(time.monotonic() - t_start) / 60:.1f} min "
              f"elapsed, ETA {eta}", flush=True)
        summarize([e.name], a.results_dir)
    summarize(None, a.results_dir)
    from .reporting.plots import make_figures
    figs = make_figures(results_dir=a.results_dir)
    from .reporting.report import write_report
    rep = write_report(results_dir=a.results_dir)
    print(f"reproduce: {len(figs)} figures, report {rep}, {(time.monotonic() - t_start) / 60:.1f} min", flush=True)
    if failed:
        print(f"reproduce: {len(failed)} runs failed: {', '.join(failed[:20])}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"data": cmd_data, "run": cmd_run, "_run-one": cmd_run_one, "_run-micro": cmd_run_micro,
            "summarize": cmd_summarize, "plot": cmd_plot, "report": cmd_report, "env": cmd_env,
            "reproduce": cmd_reproduce}


def main(argv: list[str] | None = None) -> int:
    from .harness.process import RunError
    a = build_parser().parse_args(argv)
    try:
        return COMMANDS[a.cmd](a)
    except (ValueError, KeyError, FileNotFoundError, MemoryError, RunError) as e:   # SpecError is a ValueError
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"slidebench {a.cmd}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
