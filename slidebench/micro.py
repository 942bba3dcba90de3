"""Moved to ``slidebench.reporting.micro``; this alias keeps old imports working until their callers move.

``slidebench.micro`` *is* the new module (same object), so attribute access and monkeypatching agree.
"""
import sys as _sys

from .reporting import micro as _m

_sys.modules[__name__] = _m
