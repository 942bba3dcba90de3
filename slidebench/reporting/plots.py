"""The paper's figures, drawn from the tidy summaries in results/summary/ (never from raw logs).

``make_figures(results_dir, experiments)`` reads, per experiment,

* training experiments: ``<exp>_curves.csv`` (one row per evaluation), ``<exp>_runs.csv`` (one row
  per run) and ``<exp>_ttt.csv`` (time to target per group), written by ``slidebench summarize``;
* micro experiments (fig4, fig11, tab3): ``<exp>.csv`` written by ``slidebench.micro.run_micro``;

and writes ``results/figures/<exp>[_<part>].png`` and ``.pdf``. Every figure carries a footer with
the machine (CPU model, cores), threads, protocol, scale and seeds taken from the same CSVs, so a
figure cannot be separated from the conditions it was measured under. Seed spread is drawn as a
band: each run's curve is interpolated on a common grid (log-spaced in time, linear in steps), the
line is the median over seeds and the band spans min..max over the seeds that cover that grid point
(a run that stopped early, e.g. on reaching the target, is not extrapolated).

Missing summaries are skipped with a message (``make_figures`` returns only what it wrote); the
report says which experiments are missing.
"""
from __future__ import annotations
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

from .catalogue import (KNOWN_EXPERIMENTS, MICRO_EXPERIMENTS, PROTOCOL_FAIR_SOURCE, SPEEDUP_EXPERIMENTS,  # noqa: F401
                        TAB3_PAPER, TITLES)
from .drawing import curve_groups, seed_band  # noqa: F401
from .figures_micro import fig_insertion, fig_samplers, fig_threshold
from .figures_train import (fig_ablation, fig_batch, fig_curves, fig_overfit, fig_protocol, fig_speedup,
                            fig_threads)
from .formatting import footer_text, hard_threshold_prob  # noqa: F401
from .style import apply_rc
from .summaries import Summary, available_experiments, load_summary  # noqa: F401

__all__ = ["make_figures", "load_summary", "footer_text", "seed_band", "KNOWN_EXPERIMENTS",
           "MICRO_EXPERIMENTS", "Summary", "available_experiments", "hard_threshold_prob"]

def _curves_and_speedup(s: Summary, out: Path) -> list[Path]:
    paths = fig_curves(s, out, TITLES.get(s.name, s.name))
    if s.name in SPEEDUP_EXPERIMENTS:
        paths += fig_speedup(s, out)
    return paths


FIGURES: dict[str, Callable[[Summary, Path], list[Path]]] = {
    "fig5": _curves_and_speedup,
    "fig7": _curves_and_speedup,
    "fig8": fig_batch,
    "fig9": fig_threads,
    "fig4": fig_samplers,
    "fig11": fig_threshold,
    "tab3": fig_insertion,
    "ablation": fig_ablation,
    "protocol": fig_protocol,
    "overfit": fig_overfit,
    "long": fig_overfit,          # test and training-point P@1 per system (one lr each)
    "long_delicious": fig_overfit,
    "long_sampled": fig_overfit,
    "long_slide": fig_overfit,
    "gpu": _curves_and_speedup,
    "gpu_lr": lambda s, out: fig_curves(s, out, TITLES.get(s.name, s.name)),   # a curve per system and lr
}


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[plots] {msg}", file=sys.stderr, flush=True)


def make_figures(results_dir: str | Path = "results", experiments: Sequence[str] | None = None, *,
                 progress: bool = True) -> list[Path]:
    """Draw every figure whose summaries exist; return the written paths (PNG and PDF).

    ``experiments`` limits the set (names as in experiments/*.toml); by default every known
    experiment plus any other summary found. Missing summaries are skipped with a message.
    An experiment whose summary is malformed raises ValueError naming the file.
    """
    import matplotlib
    matplotlib.use("Agg", force=True)
    apply_rc()
    results_dir = Path(results_dir)
    out_dir = results_dir / "figures"
    names = list(experiments) if experiments else available_experiments(results_dir)
    written: list[Path] = []
    for name in names:
        s = load_summary(results_dir, name)
        if not s.present:
            _say(f"{name}: no summary under {results_dir / 'summary'}; skipped", progress)
            continue
        fn = FIGURES.get(name)
        if fn is None:
            fn = (lambda s_, o_: fig_curves(s_, o_, f"{s_.name}: P@1 against train time and iterations")) \
                if s.curves is not None else None
        if fn is None:
            _say(f"{name}: no figure defined for this summary; skipped", progress)
            continue
        paths = fn(s, out_dir)
        _say(f"{name}: wrote {', '.join(p.name for p in paths) or 'nothing (no rows)'}", progress)
        written += paths
    return written
