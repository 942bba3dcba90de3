"""Registry of systems: name -> Trainer class, imported lazily (TensorFlow only when a baseline runs)."""
from __future__ import annotations

import importlib

from ..contract import Trainer

# system name -> "module:Class"; modules are imported only when the system is asked for.
REGISTRY: dict[str, str] = {
    "slide": "slidebench.trainers.slide:SlideTrainer",
    "tf_full_softmax": "slidebench.baselines.full_softmax:FullSoftmaxTrainer",
    "tf_sampled_softmax": "slidebench.baselines.sampled_softmax:SampledSoftmaxTrainer",
}


def register(system: str, target: str) -> None:
    """Add a system (used by tests for fake trainers): target is "module:Class"."""
    REGISTRY[system] = target


def get_trainer(system: str) -> type[Trainer]:
    if system not in REGISTRY:
        raise KeyError(f"unknown system {system!r}; known systems: {', '.join(sorted(REGISTRY))}")
    mod, _, cls = REGISTRY[system].partition(":")
    return getattr(importlib.import_module(mod), cls)
