# cython: language_level=3
"""The one OpenMP shim: everything else in the engine asks here about threads."""

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
