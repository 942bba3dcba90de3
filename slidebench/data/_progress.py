"""Progress output for long data work: tqdm on a terminal, plain periodic lines otherwise.

Nothing is printed unless the caller asks (``progress=True``); nothing is printed on import.
"""
from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "parse train.txt", enabled) as p: p.update(n)``.

    On a terminal (stderr is a tty) this is a tqdm bar; otherwise one plain line at most every
    ``every_s`` seconds plus a final line, so logs of unattended runs stay readable.
    """

    def __init__(self, total: float, desc: str, enabled: bool = True, unit: str = "it",
                 every_s: float = 5.0, stream=None):
        self.total = float(total)
        self.desc = desc
        self.enabled = bool(enabled)
        self.unit = unit
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self.n = 0.0
        self._t0 = time.perf_counter()
        self._last = self._t0
        self._bar = None
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=self.stream, leave=True)

    def update(self, n: float) -> None:
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            self._line()

    def _line(self, final: bool = False) -> None:
        el = time.perf_counter() - self._t0
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total > 0 else ""
        tail = " done" if final else ""
        print(f"[slidebench] {self.desc}: {self.n:,.0f}/{self.total:,.0f} {self.unit}{pct} "
              f"in {el:.1f}s{tail}", file=self.stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            self._line(final=True)
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        elif self._bar is not None:
            self._bar.close()
            self._bar = None


def note(msg: str, enabled: bool = True) -> None:
    """One progress line (only when enabled)."""
    if enabled:
        print(f"[slidebench] {msg}", file=sys.stderr, flush=True)
