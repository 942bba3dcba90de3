"""Moved to ``slidebench.reporting.style``; this alias keeps old imports working until their callers move.

``slidebench.style`` *is* the new module (same object), so attribute access and monkeypatching agree.
"""
import sys as _sys

from .reporting import style as _m

_sys.modules[__name__] = _m
