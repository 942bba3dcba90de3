"""Moved to ``slidebench.reporting.plots``; this alias keeps old imports working until their callers move.

``slidebench.plots`` *is* the new module (same object), so attribute access and monkeypatching agree.
"""
import sys as _sys

from .reporting import plots as _m

_sys.modules[__name__] = _m
