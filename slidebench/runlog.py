"""Moved to ``slidebench.harness.runlog``; this name stays an alias of that module (same object)."""
import sys

from .harness import runlog as _m

sys.modules[__name__] = _m
