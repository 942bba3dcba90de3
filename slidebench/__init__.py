"""slidebench: a reproducibility benchmark suite for SLIDE (Chen et al., MLSys 2020).

One import root. ``slidebench.engine`` (top-level folder engine/) is the Cython/OpenMP SLIDE
engine, ``slidebench.baselines`` (baselines/) the TensorFlow baselines, imported lazily; the rest
of this package is the shared harness: data, metrics, experiment specs, the runner that owns the
clock, run logs, summaries, plots and the report.
"""
__version__ = "0.1.0"
