"""Moved to ``slidebench.harness.manifest``; this name stays an alias of that module (same object)."""
import sys

from .harness import manifest as _m

sys.modules[__name__] = _m
