"""What the summaries hold, loaded: one ``Summary`` per experiment, the reference and roofline tables.

The report and the figures read results/summary/ through this module only (never results/raw). Missing
files are None; a file that exists but cannot be read or lacks its columns is a ValueError naming it.
A ``<exp>_speedup.csv`` written by ``summarize`` is read as is; where it is absent (summaries from an
older ``summarize``), the speedup is computed from ``<exp>_curves.csv``, which is a summary too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import json

import pandas as pd

from .catalogue import KNOWN_EXPERIMENTS, LEGACY_PARAMS, PROTOCOL_FAIR_SOURCE, REFERENCE_IN
from .formatting import _strframe

__all__ = ["Summary", "load_summary", "run_params", "available_experiments", "load_reference", "load_roofline",
           "REFERENCE_COLS", "ROOFLINE_COLS"]

REFERENCE_COLS = ["dataset", "n_features", "n_labels", "n_train", "p_at_1", "p_at_3", "p_at_5",
                  "train_seconds", "library", "version", "params"]
ROOFLINE_COLS = ["n_labels", "threads", "tf_gflops", "sgemm_gflops", "fraction", "openblas_coretype"]
SUMMARY_SUFFIXES = ("_curves", "_runs", "_ttt", "_speedup", "_levels", "_manifest")
# summary files that are not experiments
NOT_EXPERIMENTS = frozenset({"reference", "roofline"})


@dataclass
class Summary:
    """Everything the summaries hold for one experiment (None where the file does not exist)."""

    name: str
    curves: pd.DataFrame | None = None
    runs: pd.DataFrame | None = None
    ttt: pd.DataFrame | None = None
    micro: pd.DataFrame | None = None
    speedup: pd.DataFrame | None = None      # SLIDE over each baseline per accuracy level
    levels: pd.DataFrame | None = None       # time to each accuracy level per run
    reference: pd.DataFrame | None = None    # the non-neural reference (figures that show it)

    @property
    def present(self) -> bool:
        return any(d is not None and len(d) > 0 for d in (self.curves, self.runs, self.micro))

    @property
    def is_micro(self) -> bool:
        return self.micro is not None


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as e:  # a corrupt summary is reported, not fatal for the other figures
        raise ValueError(f"cannot read summary {path}: {e}") from e
    return df


def load_summary(results_dir: str | Path, name: str) -> Summary:
    """Read the summary CSVs of experiment ``name`` under ``results_dir``/summary."""
    sdir = Path(results_dir) / "summary"
    s = Summary(name)
    s.curves = _read_csv(sdir / f"{name}_curves.csv")
    s.runs = _read_csv(sdir / f"{name}_runs.csv")
    s.ttt = _read_csv(sdir / f"{name}_ttt.csv")
    s.micro = _read_csv(sdir / f"{name}.csv")
    if name == "protocol":
        _add_fair_counterpart(s, Path(results_dir))
    if s.curves is not None and s.runs is not None and "device" in s.runs.columns \
            and "device" not in s.curves.columns and "run_id" in s.curves.columns:
        dev = s.runs.drop_duplicates("run_id").set_index("run_id")["device"]
        s.curves = s.curves.assign(device=s.curves["run_id"].map(dev))
    if s.curves is not None and s.runs is not None and "params" in s.runs.columns \
            and "params" not in s.curves.columns and "run_id" in s.curves.columns:
        par = s.runs.drop_duplicates("run_id").set_index("run_id")["params"]
        s.curves = s.curves.assign(params=s.curves["run_id"].map(par))
    if name in REFERENCE_IN:
        s.reference = load_reference(results_dir)
    s.speedup = _read_csv(sdir / f"{name}_speedup.csv")
    s.levels = _read_csv(sdir / f"{name}_levels.csv")
    if s.speedup is None and s.curves is not None and len(s.curves) and name != "protocol":
        from .speedup import level_times, speedup_table
        s.levels = level_times(s.curves)
        s.speedup = speedup_table(s.levels)
    return s


def run_params(row) -> dict:
    """A run's params from a runs/curves row: its ``params`` JSON column, else the catalogue's record
    of the committed ablation (summaries written before the runs CSV carried params), else {}."""
    raw = row.get("params") if hasattr(row, "get") else None
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return dict(LEGACY_PARAMS.get(str(row.get("label")), {}))


def run_lr(row) -> float | None:
    """A run's learning rate from a runs/curves row: a swept ``param_lr`` column, else ``run_params``."""
    v = row.get("param_lr") if hasattr(row, "get") else None
    if v is not None and pd.notna(v):
        return float(v)
    lr = run_params(row).get("lr")
    return float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None


def _checked(path: Path, need: list[str]) -> pd.DataFrame | None:
    df = _read_csv(path)
    if df is None:
        return None
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}")
    return df


def load_reference(results_dir: str | Path) -> pd.DataFrame | None:
    """results/summary/reference.csv (the non-neural reference per data set), or None."""
    return _checked(Path(results_dir) / "summary" / "reference.csv", REFERENCE_COLS)


def load_roofline(results_dir: str | Path) -> pd.DataFrame | None:
    """results/summary/roofline.csv (the dense baseline's FLOP rate against SGEMM), or None."""
    return _checked(Path(results_dir) / "summary" / "roofline.csv", ROOFLINE_COLS)


# protocol.toml holds one protocol per file (the schema's [experiment] protocol); its runs use the
# same labels and configurations as fig8 (batch 128, scale small), so the fair side of the comparison is
# fig8's matching runs.
def _add_fair_counterpart(s: Summary, results_dir: Path) -> None:
    """Append the matching runs of the other protocol from PROTOCOL_FAIR_SOURCE (same label, dataset,
    seed, threads, batch size) when the protocol experiment itself has only one protocol."""
    if s.runs is None or len(s.runs) == 0 or "protocol" not in s.runs.columns:
        return
    if s.runs["protocol"].nunique() > 1:
        return
    src = load_summary(results_dir, PROTOCOL_FAIR_SOURCE)
    if src.runs is None or src.curves is None or len(src.runs) == 0:
        return
    keys = [c for c in ("label", "dataset", "seed", "n_threads", "batch_size") if c in s.runs.columns
            and c in src.runs.columns]
    want = set(map(tuple, _strframe(s.runs[keys]).itertuples(index=False, name=None)))
    have = _strframe(src.runs[keys]).apply(tuple, axis=1)
    other = src.runs[have.isin(want) & (src.runs["protocol"] != s.runs["protocol"].iloc[0])]
    if len(other) == 0:
        return
    other = other.assign(experiment=s.name, source_experiment=PROTOCOL_FAIR_SOURCE)
    cur = src.curves[src.curves["run_id"].isin(set(other["run_id"]))].assign(
        experiment=s.name, source_experiment=PROTOCOL_FAIR_SOURCE)
    s.runs = pd.concat([s.runs, other], ignore_index=True)
    s.curves = pd.concat([s.curves, cur], ignore_index=True) if s.curves is not None else cur


def available_experiments(results_dir: str | Path) -> list[str]:
    """Known experiments first (in figure order), then any other summaries found (e.g. smoke)."""
    sdir = Path(results_dir) / "summary"
    found: set[str] = set()
    if sdir.is_dir():
        for p in sdir.glob("*.csv"):
            stem = p.stem
            for suf in SUMMARY_SUFFIXES:
                if stem.endswith(suf):
                    stem = stem[: -len(suf)]
                    break
            found.add(stem)
    extra = sorted(found - set(KNOWN_EXPERIMENTS) - NOT_EXPERIMENTS)
    return list(KNOWN_EXPERIMENTS) + extra


