"""Moved to ``slidebench.reporting.summarize``; this alias keeps old imports working until their callers move.

``slidebench.summarize`` *is* the new module (same object), so attribute access and monkeypatching agree.
"""
import sys as _sys

from .reporting import summarize as _m

_sys.modules[__name__] = _m
