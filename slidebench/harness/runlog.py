"""JSON-lines run logs: one record per line, flushed as written, fsync'd at run_stop.

A run writes to ``<final>.partial`` (``s<seed>-<hash8>.jsonl.partial``) and the runner moves it over
the final path (os.replace, atomic) only when the run ended with a non-error status; an errored or
killed run leaves its partial file (readable prefix) and never touches an existing good final file.

Records (``"type"``): ``run_start``, ``eval``, ``run_stop``. Non-finite floats are written as null
so every line is strict JSON.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The fields of each record type, defined once: the loop writes them through ``record`` (which refuses
#: a field not listed here and writes every listed field, None when absent), summarize reads them
#: through ``select`` (which refuses a field not listed here).
START_FIELDS: tuple[str, ...] = (
    "experiment", "label", "system", "config", "seed", "n_threads", "batch_size", "protocol", "params", "sweep",
    "config_hash", "run_id", "identity", "budget", "eval", "dataset", "init_time_s", "data_load_time_s",
    "describe", "pid", "manifest", "reused_from", "after_setup_error")
EVAL_FIELDS: tuple[str, ...] = (
    "step", "samples_seen", "epoch", "train_time_s", "eval_time_s", "wall_time_s", "train_loss",
    "p_at_1", "p_at_3", "p_at_5", "ndcg_at_1", "ndcg_at_3", "ndcg_at_5", "n_eval", "subset", "reason",
    "counters", "trainer_metrics", "train_eval")
STOP_FIELDS: tuple[str, ...] = (
    "status", "error", "reason", "train_time_s", "wall_time_s", "steps", "samples_seen", "epoch", "n_evals",
    "target_p_at_1", "time_to_target_s", "best_p_at_1", "best_p_at_3", "best_p_at_5", "final_p_at_1",
    "final_p_at_3", "final_p_at_5", "final_ndcg_at_5", "final_n_eval", "final_eval_time_s", "counters")
#: Optional fields: written only when present.
OPTIONAL_FIELDS = frozenset({"trainer_metrics", "train_eval", "reused_from", "after_setup_error", "manifest",
                             "data_load_time_s", "describe"})


def record(fields: tuple[str, ...], **values: Any) -> dict[str, Any]:
    """The fields of one record in their defined order; unknown names are a programming error."""
    bad = sorted(set(values) - set(fields))
    if bad:
        raise KeyError(f"run-log record has undefined field(s) {bad}; the record fields live in runlog.py")
    return {k: values.get(k) for k in fields if k in values or k not in OPTIONAL_FIELDS}


def select(fields: tuple[str, ...], *names: str) -> tuple[str, ...]:
    """``names``, a reader's choice among one record type's fields, checked against their definition above.

    Readers (``reporting/summarize``) name the fields they read through this, so renaming or dropping a
    field here fails at their import instead of silently emptying a column; an undefined name is a
    programming error, as in ``record``."""
    bad = [n for n in names if n not in fields]
    if bad:
        raise KeyError(f"run-log record has no field(s) {bad}; the record fields live in runlog.py")
    return names


FINISHED = ("reached_target", "budget_time", "budget_epochs", "budget_steps", "diverged", "skipped")
STATUSES = FINISHED + ("error",)
PARTIAL_SUFFIX = ".partial"


def partial_path(final: str | Path) -> Path:
    final = Path(final)
    return final.with_name(final.name + PARTIAL_SUFFIX)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None, Paths to str."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return repr(obj)


class RunLogWriter:
    """Append-only writer. ``write(type, **fields)`` writes one line and flushes it."""

    def __init__(self, path: str | Path, *, mode: str = "w"):
        """``mode="x"``: exclusive creation (FileExistsError when another writer holds the path)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, mode, encoding="utf-8")

    def write(self, rtype: str, fsync: bool = False, **fields: Any) -> dict:
        rec = {"type": rtype, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
        line = json.dumps(_clean(rec), allow_nan=False, sort_keys=False)
        self._f.write(line + "\n")
        self._f.flush()
        if fsync:
            os.fsync(self._f.fileno())
        return rec

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> "RunLogWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class RunLog:
    path: Path
    run_start: dict | None = None
    evals: list[dict] = field(default_factory=list)
    run_stop: dict | None = None
    truncated: bool = False          # the last line was cut (killed mid-write)
    partial_file: bool = False       # read from a .partial file

    @property
    def status(self) -> str:
        if self.run_stop is None:
            return "incomplete"
        return str(self.run_stop.get("status"))

    @property
    def complete(self) -> bool:
        return self.run_stop is not None and self.run_stop.get("status") in FINISHED

    @property
    def finished(self) -> bool:
        """Counts for --resume: a final (not partial) log with a finished status."""
        return self.complete and not self.partial_file


def read_log(path: str | Path) -> RunLog:
    """Read a run log, tolerating a truncated last line (a run killed mid-write).

    A malformed line that is not the last one is an error (ValueError naming file and line): that is
    corruption, not a kill.
    """
    path = Path(path)
    log = RunLog(path=path, partial_file=path.name.endswith(PARTIAL_SUFFIX))
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    # a complete file ends with "\n", so the last element is "" ; anything else is a cut line
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:
                log.truncated = True
                break
            raise ValueError(f"{path}:{i + 1}: malformed run-log line ({e})") from None
        if i == last:
            # parsed, but the newline was never written: the writer was killed after it; keep it
            log.truncated = True
        t = rec.get("type")
        if t == "run_start":
            log.run_start = rec
        elif t == "eval":
            log.evals.append(rec)
        elif t == "run_stop":
            log.run_stop = rec
        else:
            raise ValueError(f"{path}:{i + 1}: unknown record type {t!r}")
    return log


def find_logs(results_dir: str | Path, experiment: str) -> list[Path]:
    """All final and partial logs of an experiment, sorted."""
    base = Path(results_dir) / "raw" / experiment
    if not base.is_dir():
        return []
    return sorted(list(base.glob("*/*.jsonl")) + list(base.glob("*/*.jsonl" + PARTIAL_SUFFIX)))
