"""Registry of systems: name -> Trainer class, imported lazily (TensorFlow only when a baseline runs)."""
from __future__ import annotations

import importlib

from ..contract import Trainer

# system name -> "module:Class"; modules are imported only when the system is asked for.
REGISTRY: dict[str, str] = {
    "slide": "slidebench.trainers.slide:SlideTrainer",
    "tf_full_softmax": "slidebench.baselines.full_softmax:FullSoftmaxTrainer",
    "tf_sampled_softmax": "slidebench.baselines.sampled_softmax:SampledSoftmaxTrainer",
    # the dense full softmax in PyTorch: TF full softmax's stand-in on GPU machines without TensorFlow
    "torch_full_softmax": "slidebench.baselines.torch_full_softmax:TorchFullSoftmaxTrainer",
}


def register(system: str, target: str) -> None:
    """Add a system (used by tests for fake trainers): target is "module:Class"."""
    REGISTRY[system] = target


def get_trainer(system: str) -> type[Trainer]:
    if system not in REGISTRY:
        raise KeyError(f"unknown system {system!r}; known systems: {', '.join(sorted(REGISTRY))}")
    mod, _, cls = REGISTRY[system].partition(":")
    return getattr(importlib.import_module(mod), cls)


#: Systems whose parameters slidebench.baselines.validate_params checks (without TensorFlow).
BASELINE_SYSTEMS = ("tf_full_softmax", "tf_sampled_softmax")


def validate_params(system: str, params: dict, n_features: int | None, n_labels: int | None,
                    n_threads: int = 1):
    """Check a run's params before any run starts, without importing TensorFlow: the baselines through
    ``slidebench.baselines.validate_params``, any other system through its class's ``validate_params``
    classmethod when it has one (returns None when the system offers no check)."""
    if system in BASELINE_SYSTEMS:
        from ..baselines import validate_params as v
        return v(system, params, n_features, n_labels, n_threads)
    cls = get_trainer(system)
    check = getattr(cls, "validate_params", None)
    if check is None:
        return None
    return check(params, n_features, n_labels, n_threads)


def stale_log(system: str, params: dict, run_start: dict) -> str | None:
    """Why a finished run log with this run's identity (config hash) was not trained the way this code
    trains the run, through the system's class's ``stale_log`` classmethod when it has one; None when it
    was (or the system cannot tell). For choices a trainer resolves itself and that the hash does not
    cover (so that run ids stay stable across versions), such as SLIDE's pass order."""
    if system in BASELINE_SYSTEMS or system not in REGISTRY:
        return None
    check = getattr(get_trainer(system), "stale_log", None)
    return None if check is None else check(params, run_start)
