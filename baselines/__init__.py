"""TensorFlow baselines (tf_full_softmax, tf_sampled_softmax).

TensorFlow is imported only when a baseline runs (inside ``Trainer.setup``); importing this package,
``slidebench.baselines.full_softmax`` or ``slidebench.baselines.sampled_softmax`` never imports it.

Public names:
  * ``DeviceUnavailable``: raised by ``setup`` when ``device = "gpu"`` is asked and no GPU is visible
    (the harness logs the run as skipped; a baseline is never silently moved to the CPU).
  * ``FULL_CONFIGS`` / ``SAMPLED_CONFIGS``: the named configurations (``paper``, ``tuned``) with every
    parameter explicit (see docs/baselines.md).
"""
from __future__ import annotations


class DeviceUnavailable(RuntimeError):
    """The run asked for a device this process cannot use (e.g. ``device = "gpu"`` with no GPU visible)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def validate_params(system, params, n_features=None, n_labels=None, n_threads=1):
    """TF-free check of a baseline's params (baselines/validate.py); returns the resolved params."""
    from .validate import validate_params as _v
    return _v(system, params, n_features, n_labels, n_threads)


def __getattr__(name: str):  # lazy: the config tables live beside the trainers, which do not import TF
    if name == "FULL_CONFIGS":
        from .full_softmax import CONFIGS
        return CONFIGS
    if name == "SAMPLED_CONFIGS":
        from .sampled_softmax import CONFIGS
        return CONFIGS
    raise AttributeError(name)


__all__ = ["DeviceUnavailable", "validate_params", "FULL_CONFIGS", "SAMPLED_CONFIGS"]
