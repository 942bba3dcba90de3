"""Moved to ``slidebench.reporting.report``; this alias keeps old imports working until their callers move.

``slidebench.report`` *is* the new module (same object), so attribute access and monkeypatching agree.
"""
import sys as _sys

from .reporting import report as _m

_sys.modules[__name__] = _m
