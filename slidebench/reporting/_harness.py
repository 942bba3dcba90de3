"""The one place the reporting package imports harness modules.

Reporting reads raw logs in ``summarize`` only (the report and the figures read
summaries).
"""
from __future__ import annotations

from ..harness import manifest  # noqa: F401  (host_info for micro CSV rows; a manifest for the report)
from ..harness.runlog import (EVAL_FIELDS, PARTIAL_SUFFIX, START_FIELDS, STOP_FIELDS, find_logs,  # noqa: F401
                              read_log, select)

__all__ = ["manifest", "EVAL_FIELDS", "PARTIAL_SUFFIX", "START_FIELDS", "STOP_FIELDS", "find_logs", "read_log",
           "select"]
