"""Everything checked before anything trains: `run --dry-run`, `run` and `reproduce` call ``check_runs``.

For every run of a grid: the data files are present with a readable header (the real files' shapes,
or the synthetic preset's), thread counts fit this machine's cores (unless ``oversubscribe``), and
each system's parameters pass its own validation (``slidebench.trainers.validate_params``: the
engine's parse_config and memory preflight for SLIDE, ``slidebench.baselines.validate_params`` for
the TensorFlow baselines, never importing TensorFlow). Every error is a SpecError naming the
experiment file, the system label and the key.
"""
from __future__ import annotations

import os
from typing import Any

from .spec import Experiment, RunSpec, SpecError


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return int(os.cpu_count() or 1)


def data_shape(run: RunSpec) -> dict[str, int] | None:
    """{"n_features", "n_labels", "n_train", "n_test"} of a run's data set from the headers (or the
    synthetic preset's specification); None for a test data loader. Errors: FileNotFoundError,
    XMLRepoFormatError (a ValueError)."""
    d = run.data
    from ..data import check_files, find_real_files, get_spec
    if d.get("train"):
        h = check_files(d["train"], d["test"])
    elif d.get("data_dir"):
        h = check_files(*find_real_files(d["preset"], d["data_dir"]))
    elif d.get("preset"):
        s = get_spec(d["preset"], d["scale"] or "small")
        return {"n_features": s.n_features, "n_labels": s.n_labels, "n_train": s.n_train, "n_test": s.n_test}
    else:
        return None
    return {"n_features": h["train"][1], "n_labels": h["train"][2], "n_train": h["train"][0], "n_test": h["test"][0]}


def check_runs(exp: Experiment, runs: list[RunSpec], *, oversubscribe: bool = False,
               data_loader: str | None = None, cores: int | None = None) -> None:
    """Raise SpecError at the first problem; returns None when every run may start."""
    from ..trainers import validate_params
    where = str(exp.path)
    cores = cores or available_cores()
    shapes: dict[str, Any] = {}
    for run in runs:
        key = repr(sorted(run.data.items(), key=lambda kv: kv[0]))
        if key not in shapes:
            if data_loader:
                shapes[key] = None
            else:
                try:
                    shapes[key] = data_shape(run)
                except (OSError, ValueError) as e:
                    raise SpecError(f"{where}: [data]: {e}") from None
        shape = shapes[key]
        if run.n_threads > cores and not oversubscribe:
            raise SpecError(f"{where}: [[systems]] {run.label!r}: [run] threads = {run.n_threads} is more than the "
                            f"{cores} cores this process may use (a run would be oversubscribed and its timings "
                            "meaningless); lower it, or pass --oversubscribe to run anyway")
        if shape is not None:
            n_eval = shape["n_test"] if not run.data.get("validation") else \
                max(1, round(float(run.data["validation"]) * shape["n_train"]))
            size = run.eval.get("subset_size")
            if size is not None and size > n_eval and "subset_size" in (exp.raw.get("eval") or {}):
                raise SpecError(f"{where}: [eval] key 'subset_size' = {size} is larger than the {n_eval} points "
                                "evaluated on; lower it")
            tsize = run.eval.get("train_subset_size")
            n_fit = shape["n_train"] - (n_eval if run.data.get("validation") else 0)
            if tsize is not None and tsize > n_fit:
                raise SpecError(f"{where}: [eval] key 'train_subset_size' = {tsize} is larger than the {n_fit} "
                                "training points; lower it")
        nf = shape["n_features"] if shape else None
        nl = shape["n_labels"] if shape else None
        try:
            validate_params(run.system, run.trainer_params(), nf, nl, run.n_threads)
        except (ValueError, TypeError, KeyError, MemoryError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise SpecError(f"{where}: [[systems]] {run.label!r} params: {msg}") from None
