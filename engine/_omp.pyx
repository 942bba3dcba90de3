# cython: language_level=3
"""The one OpenMP shim: everything else in the engine asks here about threads, and the machine
probes benchmarks print beside their figures (parallel capacity, STREAM-style triad)."""
from cython.parallel cimport prange
from libc.stdint cimport uint64_t

import time

import numpy as np

cdef extern from "kernels.h":
    void sb_triad(float* a, const float* b, const float* c, float s, long lo, long hi) noexcept nogil


cdef extern from *:
    """
    #if SLIDEBENCH_OPENMP
    #include <omp.h>
    static int sb_omp_enabled(void) { return 1; }
    static int sb_omp_max_threads(void) { return omp_get_max_threads(); }
    static void sb_omp_set_num_threads(int n) { omp_set_num_threads(n); }
    #else
    static int sb_omp_enabled(void) { return 0; }
    static int sb_omp_max_threads(void) { return 1; }
    static void sb_omp_set_num_threads(int n) { (void)n; }
    #endif
    """
    int sb_omp_enabled() nogil
    int sb_omp_max_threads() nogil
    void sb_omp_set_num_threads(int n) nogil


def openmp_enabled() -> bool:
    """True when the engine was compiled with OpenMP."""
    return bool(sb_omp_enabled())


def max_threads() -> int:
    """Threads an OpenMP parallel region would use by default (OMP_NUM_THREADS or the core count)."""
    return sb_omp_max_threads()


def set_num_threads(int n):
    """Set the default OpenMP team size for this process."""
    if n < 1:
        raise ValueError(f"n_threads must be >= 1, got {n}")
    sb_omp_set_num_threads(n)


def parallel_capacity(int n_threads=2, long iters=100000000) -> float:
    """Speedup of `n_threads` threads over one on a pure-compute loop (no memory traffic): about
    n_threads on an idle machine, less when other processes hold the cores. Benchmarks print it so
    a reader can tell whether a thread-scaling figure was limited by the engine or by the machine."""
    cdef int t, nt = max(1, n_threads)
    cdef long i
    cdef double x
    cdef double[::1] sink = np.zeros(64 * nt, np.float64)
    t0 = time.perf_counter()
    with nogil:
        for i in range(iters):
            sink[0] = sink[0] * 0.999999 + 1e-9
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    with nogil:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            x = 0.0
            for i in range(iters):
                x = x * 0.999999 + 1e-9
            sink[64 * t] = x
    many = time.perf_counter() - t0
    return nt * one / many


def triad_bandwidth(long n=1 << 24, int n_threads=1, int repeats=5) -> float:
    """STREAM-style triad a = b + s*c on float32 arrays of n elements; best of `repeats`, bytes/s
    counted as 3 * 4 * n (two reads, one write; write-allocate traffic not counted, as STREAM)."""
    cdef float[::1] a = np.zeros(n, np.float32)
    cdef float[::1] bb = np.ones(n, np.float32)
    cdef float[::1] c = np.full(n, 2.0, np.float32)
    cdef int r, t, nt = max(1, n_threads)
    cdef long chunk = (n + nt - 1) // nt, lo, hi
    best = 0.0
    for r in range(repeats):
        t0 = time.perf_counter()
        with nogil:
            for t in prange(nt, num_threads=nt, schedule="static"):
                lo = t * chunk
                hi = min(n, lo + chunk)
                sb_triad(&a[0], &bb[0], &c[0], 3.0, lo, hi)
        dt = time.perf_counter() - t0
        best = max(best, 12.0 * n / dt)
    return best
