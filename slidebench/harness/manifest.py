"""Environment manifest recorded in every run_start and printed by ``slidebench env``.

Library versions come from importlib.metadata (TensorFlow is never imported just to learn its
version). The process-level part (threadpoolctl, OpenMP of the engine) is collected in the child.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_PROC_BIND", "OMP_PLACES", "MKL_NUM_THREADS",
              "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_CPP_MIN_LOG_LEVEL",
              "TF_ENABLE_ONEDNN_OPTS", "CUDA_VISIBLE_DEVICES")
LIBRARIES = ("numpy", "scipy", "pandas", "cython", "threadpoolctl", "psutil", "matplotlib",
             "tensorflow", "tensorflow-cpu", "keras", "slidebench")
REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_info(repo: Path = REPO) -> dict[str, Any]:
    def _git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    sha = _git("rev-parse", "HEAD")
    if sha is None:
        return {"git_sha": None, "git_dirty": None, "git_note": f"{repo} is not a git checkout or git is missing"}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": bool(status) if status is not None else None}


def host_info() -> dict[str, Any]:
    import psutil
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_available": affinity,
        "memory_bytes": int(psutil.virtual_memory().total),
        "memory_available_bytes": int(psutil.virtual_memory().available),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
    }


def thread_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in THREAD_ENV}


def collect() -> dict[str, Any]:
    """The process-independent manifest: host, libraries, git, thread environment."""
    return {**host_info(), "libraries": library_versions(), **git_info(), "thread_env": thread_env()}


def process_info() -> dict[str, Any]:
    """What this process really uses (called in the run's child process, after the trainer's setup):
    threadpoolctl's view of the loaded BLAS/OpenMP pools."""
    from threadpoolctl import threadpool_info
    return {"threadpools": [{k: v for k, v in d.items() if k in ("user_api", "internal_api", "prefix",
                                                                   "num_threads", "version", "filepath")}
                            for d in threadpool_info()]}


def engine_info() -> dict[str, Any]:
    """slidebench.engine.build_info(), or the reason it is unavailable (recorded, never hidden)."""
    try:
        from slidebench.engine import build_info
        return build_info()
    except Exception as e:  # noqa: BLE001 - recorded in the log
        return {"openmp": None, "error": f"{type(e).__name__}: {e}"}
