"""slidebench.engine: the SLIDE engine in Cython/OpenMP.

Knows nothing of the harness. Public API is re-exported here (see engine/network.py and the
compiled modules); ``openmp_enabled()``, ``max_threads()`` and ``build_info()`` let every run
record how the engine was built and how many threads it uses.
"""
from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent


_DEP_RE = None


def _deps(src: Path, seen: set[Path]) -> set[Path]:
    """The engine-local files a .pyx/.pxd depends on: cimported .pxd and extern .h, recursively."""
    global _DEP_RE
    import re
    if _DEP_RE is None:
        _DEP_RE = re.compile(r"^\s*(?:from\s+(\w+)\s+cimport|cimport\s+(\w+)|cdef\s+extern\s+from\s+[\"']([\w.]+)[\"'])",
                             re.M)
    if src in seen or not src.exists():
        return seen
    seen.add(src)
    for m in _DEP_RE.finditer(src.read_text(errors="replace")):
        name = m.group(1) or m.group(2)
        dep = _HERE / (f"{name}.pxd" if name else m.group(3))
        _deps(dep, seen)
    return seen


def _check_fresh() -> None:
    """An editable install does not rebuild on import: refuse a stale build loudly.

    A compiled module is stale when its .pyx, or a .pxd/.h it (transitively) cimports or includes
    from engine/, changed after the module was built (cythonize rebuilds only modules whose
    dependencies changed, so every module is checked against its own dependencies).
    Set SLIDEBENCH_ALLOW_STALE=1 to import anyway (a warning is printed).
    """
    sos = list(_HERE.glob("_*.so")) + list(_HERE.glob("_*.pyd"))
    if not sos:
        raise ImportError(
            f"slidebench.engine is not built (no compiled modules in {_HERE}). "
            "Run `make build` (or `pip install -e . --no-build-isolation`)."
        )
    built = {p.name.split(".")[0]: p.stat().st_mtime for p in sos}
    stale = set()
    for pyx in _HERE.glob("_*.pyx"):
        mod = pyx.stem
        if mod not in built:
            stale.add(f"{pyx.name} (never built)")
            continue
        for dep in _deps(pyx, set()):
            if dep.stat().st_mtime > built[mod] + 1e-3:
                stale.add(dep.name)
    if stale:
        msg = (f"slidebench.engine build is stale: {', '.join(sorted(stale))} changed after the last build. "
               "Run `make build` to recompile the engine.")
        if os.environ.get("SLIDEBENCH_ALLOW_STALE", "") not in ("", "0"):
            import warnings
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        else:
            raise ImportError(msg)


# Only in a source checkout (editable install: engine/ beside setup.py). An installed wheel also ships
# the .pyx files, with fresh timestamps, and must not be judged stale.
if (_HERE.parent / "setup.py").exists() and (_HERE / "_omp.pyx").exists():
    _check_fresh()

from ._omp import openmp_enabled, max_threads, set_num_threads  # noqa: E402
from .network import Network, estimate_memory, parse_config  # noqa: E402
from ._core import kernels_dispatch  # noqa: E402
from ._omp import triad_bandwidth, parallel_capacity  # noqa: E402

from ._lsh import LSHIndex  # noqa: E402  (the LSH part: engine/_lsh.pyx)


def build_info() -> dict:
    """How this engine was compiled (recorded in every run log)."""
    from . import _buildinfo as b
    return {"openmp": bool(openmp_enabled()), "native": b.NATIVE, "arch_flags": b.ARCH_FLAGS,
            "compile_args": list(b.COMPILE_ARGS), "compiler": b.COMPILER, "omp_max_threads": max_threads(),
            "kernels": kernels_dispatch()}


__all__ = ["openmp_enabled", "max_threads", "set_num_threads", "build_info", "Network", "estimate_memory",
           "parse_config", "triad_bandwidth", "parallel_capacity", "kernels_dispatch", "LSHIndex"]
