"""The one place the reporting package imports harness modules.

Reporting reads raw logs in ``summarize`` only (the report and the figures read
summaries).
"""
from __future__ import annotations

from ..harness import manifest  # noqa: F401  (host_info for micro CSV rows; a manifest for the report)
from ..harness.runlog import PARTIAL_SUFFIX, find_logs, read_log  # noqa: F401

__all__ = ["manifest", "PARTIAL_SUFFIX", "find_logs", "read_log"]
