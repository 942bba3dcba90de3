"""Moved to ``slidebench.harness.spec``; this name stays an alias of that module (same object)."""
import sys

from .harness import spec as _m

sys.modules[__name__] = _m
