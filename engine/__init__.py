"""slidebench.engine: the SLIDE engine in Cython/OpenMP.

Knows nothing of the harness. Public API is re-exported here (see engine/network.py and the
compiled modules); ``openmp_enabled()``, ``max_threads()`` and ``build_info()`` let every run
record how the engine was built and how many threads it uses.
"""
from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _check_fresh() -> None:
    """An editable install does not rebuild on import: refuse a stale build loudly.

    A .pyx/.pxd/.h edited after the compiled module was built means the .so no longer matches the
    source. Set SLIDEBENCH_ALLOW_STALE=1 to import anyway (a warning is printed).
    """
    sos = list(_HERE.glob("_*.so")) + list(_HERE.glob("_*.pyd"))
    if not sos:
        raise ImportError(
            f"slidebench.engine is not built (no compiled modules in {_HERE}). "
            "Run `make build` (or `pip install -e . --no-build-isolation`)."
        )
    built = min(p.stat().st_mtime for p in sos)
    sources = [p for ext in ("*.pyx", "*.pxd", "*.pxi", "*.h") for p in _HERE.glob(ext)]
    stale = [p.name for p in sources if p.stat().st_mtime > built + 1e-3]
    if stale:
        msg = (f"slidebench.engine build is stale: {', '.join(sorted(stale))} changed after the last build. "
               "Run `make build` to recompile the engine.")
        if os.environ.get("SLIDEBENCH_ALLOW_STALE", "") not in ("", "0"):
            import warnings
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        else:
            raise ImportError(msg)


if (_HERE / "_omp.pyx").exists():  # source checkout (editable): check the build matches the source
    _check_fresh()

from ._omp import openmp_enabled, max_threads, set_num_threads  # noqa: E402


def build_info() -> dict:
    """How this engine was compiled (recorded in every run log)."""
    from . import _buildinfo as b
    return {"openmp": bool(openmp_enabled()), "native": b.NATIVE, "arch_flags": b.ARCH_FLAGS,
            "compile_args": list(b.COMPILE_ARGS), "compiler": b.COMPILER, "omp_max_threads": max_threads()}


__all__ = ["openmp_enabled", "max_threads", "set_num_threads", "build_info"]
