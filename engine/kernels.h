/* Hot float32 kernels of the SLIDE network (engine/_core.pyx).
 *
 * Portable by default: each kernel is compiled three times (AVX-512, AVX2+FMA, baseline x86-64) with
 * GCC's target_clones and the best clone is picked once at load time (ifunc). A build with
 * SLIDEBENCH_NATIVE=1 (-march=native) compiles a single native version instead.
 *
 * Determinism: every reduction uses SB_LANES independent accumulators over fixed index positions
 * (never over addresses), combined in a fixed tree, so the result depends only on the inputs and the
 * clone in use, not on alignment or on which thread runs it.
 */
#ifndef SLIDEBENCH_KERNELS_H
#define SLIDEBENCH_KERNELS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX512F__) && \
    !defined(SB_NO_CLONES)
#define SB_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define SB_CLONES_NAME "target_clones(x86-64-v4, x86-64-v3, default)"
#else
#define SB_CLONES
#define SB_CLONES_NAME "single (compiler -m flags)"
#endif

#define SB_LANES 16

/* 64-byte vector types cross no function boundary here (everything using them is inlined), so the
 * ABI note GCC prints for them does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

static const char* sb_kernels_dispatch(void) { return SB_CLONES_NAME; }

/* 16 float lanes as one GCC vector (AVX-512: one register; AVX2: two; SSE2: four). Lane-wise
 * arithmetic on these is exactly the per-lane scalar arithmetic, so the summation order is fixed. */
typedef float sb_v16 __attribute__((vector_size(64), aligned(4)));

__attribute__((always_inline)) static inline sb_v16 sb_load16(const float* p) {
    sb_v16 v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

typedef int sb_i16 __attribute__((vector_size(64)));

/* fixed tree over the 16 lanes: x[k] + x[k+8], then k + 4, k + 2, k + 1 (in-register shuffles) */
__attribute__((always_inline)) static inline float sb_fold16(sb_v16 a) {
    const sb_i16 m8 = {8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15};
    const sb_i16 m4 = {4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7};
    const sb_i16 m2 = {2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3};
    a = a + __builtin_shuffle(a, m8);
    a = a + __builtin_shuffle(a, m4);
    a = a + __builtin_shuffle(a, m2);
    return a[0] + a[1];
}

/* sum_i a[i] * b[i]: the one summation order used everywhere (training and predict) */
__attribute__((always_inline)) static inline float sb_dot_body(const float* restrict a,
                                                                const float* restrict b, int n) {
    sb_v16 acc = {0};
    int i = 0;
    for (; i + SB_LANES <= n; i += SB_LANES) acc += sb_load16(a + i) * sb_load16(b + i);
    float s = sb_fold16(acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

SB_CLONES static float sb_dot(const float* restrict a, const float* restrict b, int n) {
    return sb_dot_body(a, b, n);
}

/* hint the cache to fetch n floats from p (a weight row about to be used) */
static inline void sb_prefetch_row(const float* p, int n) {
    for (int i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 3);
}

/* same, for a row about to be written */
static inline void sb_prefetch_row_w(const float* p, int n) {
    for (int i = 0; i < n; i += 16) __builtin_prefetch(p + i, 1, 3);
}

/* row i of a row list: X + r_i * rs with r_i = idx[i], or i when idx is NULL (all rows in order) */
static inline const float* sb_row_at(const float* X, long rs, const int* idx, int i) {
    return X + (long)(idx ? idx[i] : i) * rs;
}

/* out[i] = bias[r_i] + sb_dot(X + r_i * rs, x, n) for i < m, r_i = idx[i] (i when idx is NULL), each
 * bitwise as sb_dot gives it (the same body, inlined); pf > 0 prefetches row i + pf while on row i.
 * One call for a sample's active rows instead of a dispatched call per row. */
SB_CLONES static void sb_dot_rows(const float* restrict X, long rs, const int* restrict idx,
                                  const float* restrict bias, const float* restrict x, int m, int n,
                                  float* restrict out, int pf) {
    for (int i = 0; i < m; i++) {
        if (pf > 0 && i + pf < m) sb_prefetch_row(sb_row_at(X, rs, idx, i + pf), n);
        const long r = idx ? idx[i] : i;
        out[i] = bias[r] + sb_dot_body(X + r * rs, x, n);
    }
}

/* out[s] = bias + dot(w, H[s * ldh : s * ldh + n]) for s < nb: one weight row against a block of
 * inputs (the row is read from memory once per block; four independent dots share each load).
 * Bitwise equal to bias + sb_dot(w, H + s * ldh, n) in the same clone. */
SB_CLONES static void sb_dot_multi(const float* restrict w, float bias, const float* restrict H, long ldh,
                                   int nb, int n, float* restrict out) {
    int s = 0;
    for (; s + 4 <= nb; s += 4) {
        const float* h0 = H + (long)s * ldh;
        const float* h1 = h0 + ldh;
        const float* h2 = h1 + ldh;
        const float* h3 = h2 + ldh;
        sb_v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        int i = 0;
        for (; i + SB_LANES <= n; i += SB_LANES) {
            sb_v16 x = sb_load16(w + i);
            a0 += x * sb_load16(h0 + i);
            a1 += x * sb_load16(h1 + i);
            a2 += x * sb_load16(h2 + i);
            a3 += x * sb_load16(h3 + i);
        }
        float r0 = sb_fold16(a0), r1 = sb_fold16(a1), r2 = sb_fold16(a2), r3 = sb_fold16(a3);
        for (; i < n; i++) {
            r0 += w[i] * h0[i]; r1 += w[i] * h1[i]; r2 += w[i] * h2[i]; r3 += w[i] * h3[i];
        }
        out[s] = bias + r0; out[s + 1] = bias + r1; out[s + 2] = bias + r2; out[s + 3] = bias + r3;
    }
    for (; s < nb; s++) out[s] = bias + sb_dot_body(w, H + (long)s * ldh, n);
}

/* sum_k W[idx[k]] * val[k]  (a row against a sparse vector) */
SB_CLONES static float sb_dot_gather(const float* restrict w, const int* restrict idx,
                                     const float* restrict val, int n) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) acc[k] += w[idx[i + k]] * val[i + k];
    float s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (; i < n; i++) s += w[idx[i]] * val[i];
    return s;
}

/* y[i] += a * x[i] */
SB_CLONES static void sb_axpy(float a, const float* restrict x, float* restrict y, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* out[i] = bias + sb_dot(w, H + sidx[i] * ldh, n) for i < m: one weight row against the inputs of the m
 * samples that have it active (the row-ordered output pass, net_rowpass.pxd). Each value bitwise as
 * sb_dot_rows gives it for that (row, sample) pair: the same body, inlined, the row as first operand. */
SB_CLONES static void sb_dot_row_samples(const float* restrict w, float bias, const float* restrict H, long ldh,
                                         const int* restrict sidx, int m, int n, float* restrict out) {
    for (int i = 0; i < m; i++) out[i] = bias + sb_dot_body(w, H + (long)sidx[i] * ldh, n);
}

/* Y[sidx[i] * ldy + k] += a[i] * x[k] for i = 0..m-1 and k < n: one row x added, scaled, into the m
 * rows of Y it belongs to (the row-ordered backward: a weight row into the hidden deltas of the samples
 * that have it active). x is held in registers 64 floats at a time; each Y element gets its
 * multiply-adds in entry order. */
SB_CLONES static void sb_axpy_row_scatter(const float* restrict x, const int* restrict sidx,
                                          const float* restrict a, int m, float* restrict Y, long ldy, int n) {
    int k0 = 0;
    for (; k0 + 4 * SB_LANES <= n; k0 += 4 * SB_LANES) {
        const sb_v16 x0 = sb_load16(x + k0), x1 = sb_load16(x + k0 + SB_LANES);
        const sb_v16 x2 = sb_load16(x + k0 + 2 * SB_LANES), x3 = sb_load16(x + k0 + 3 * SB_LANES);
        for (int i = 0; i < m; i++) {
            float* y = Y + (long)sidx[i] * ldy + k0;
            const float ai = a[i];
            sb_v16 y0 = sb_load16(y) + ai * x0, y1 = sb_load16(y + SB_LANES) + ai * x1;
            sb_v16 y2 = sb_load16(y + 2 * SB_LANES) + ai * x2, y3 = sb_load16(y + 3 * SB_LANES) + ai * x3;
            __builtin_memcpy(y, &y0, sizeof(y0));
            __builtin_memcpy(y + SB_LANES, &y1, sizeof(y1));
            __builtin_memcpy(y + 2 * SB_LANES, &y2, sizeof(y2));
            __builtin_memcpy(y + 3 * SB_LANES, &y3, sizeof(y3));
        }
    }
    if (k0 < n)
        for (int i = 0; i < m; i++) sb_axpy(a[i], x + k0, Y + (long)sidx[i] * ldy + k0, n - k0);
}

/* y[k] += a[i] * X[r_i * rs + k] for i = 0..m-1 and k < n, with r_i = idx[i] (i when idx is NULL): m
 * calls of sb_axpy in one. Each y[k] gets the same operations in the same order as those calls (one
 * multiply-add per row, rows ascending), so the result is bitwise the same; what changes is that y is
 * held in registers across the rows, 64 floats at a time, and stored once. Called per row, y went
 * through memory every row, and each row's load of y waited on the previous row's store of it: a
 * dependency chain through store-to-load forwarding, 128,000 rows long per step in the backward pass
 * of 128 samples x 1,000 active neurons. pf > 0: while on the first 64 columns, prefetch row i + pf
 * (for rows not already in cache, e.g. layer 0's weight rows in the forward pass). */
SB_CLONES static void sb_axpy_rows(const float* restrict X, long rs, const int* restrict idx,
                                   const float* restrict a, int m, float* restrict y, int n, int pf) {
    int k0 = 0;
    for (; k0 + 4 * SB_LANES <= n; k0 += 4 * SB_LANES) {
        sb_v16 y0 = sb_load16(y + k0), y1 = sb_load16(y + k0 + SB_LANES);
        sb_v16 y2 = sb_load16(y + k0 + 2 * SB_LANES), y3 = sb_load16(y + k0 + 3 * SB_LANES);
        for (int i = 0; i < m; i++) {
            if (pf > 0 && k0 == 0 && i + pf < m) sb_prefetch_row(sb_row_at(X, rs, idx, i + pf), n);
            const float* x = sb_row_at(X, rs, idx, i) + k0;
            const float ai = a[i];
            y0 += ai * sb_load16(x);
            y1 += ai * sb_load16(x + SB_LANES);
            y2 += ai * sb_load16(x + 2 * SB_LANES);
            y3 += ai * sb_load16(x + 3 * SB_LANES);
        }
        __builtin_memcpy(y + k0, &y0, sizeof(y0));
        __builtin_memcpy(y + k0 + SB_LANES, &y1, sizeof(y1));
        __builtin_memcpy(y + k0 + 2 * SB_LANES, &y2, sizeof(y2));
        __builtin_memcpy(y + k0 + 3 * SB_LANES, &y3, sizeof(y3));
    }
    if (k0 < n)          /* the columns past the last full block of 64: row by row, as sb_axpy does them */
        for (int i = 0; i < m; i++) sb_axpy(a[i], sb_row_at(X, rs, idx, i) + k0, y + k0, n - k0);
}

/* y[idx[k]] += a * x[k] */
static inline void sb_axpy_scatter(float a, const float* restrict x, const int* restrict idx,
                                   float* restrict y, int n) {
    for (int i = 0; i < n; i++) y[idx[i]] += a * x[i];
}

/* Adam on one row: g is the gradient; w, m, v updated in place.
 * m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2 ; w -= lr_t * m / (sqrt(v) + eps_t)
 * with lr_t = lr * sqrt(1-b2^t) / (1-b1^t) and eps_t = eps * sqrt(1-b2^t): algebraically
 * w -= lr * mhat / (sqrt(vhat) + eps), mhat = m/(1-b1^t), vhat = v/(1-b2^t). */
SB_CLONES static void sb_adam_row(float* restrict w, float* restrict m, float* restrict v,
                                  const float* restrict g, int n, float b1, float b2,
                                  float lr_t, float eps_t) {
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (int i = 0; i < n; i++) {
        float gi = g[i];
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= lr_t * mi / (sqrtf(vi) + eps_t);
    }
}

/* Adam on one row whose gradient is a single scaled vector g = a * x (a row touched by one sample):
 * the gradient is formed in registers instead of a zeroed buffer plus an axpy pass. Same arithmetic
 * as sb_axpy into a zeroed g followed by sb_adam_row, up to the sign of zero gradients. */
SB_CLONES static void sb_adam_row_scaled(float* restrict w, float* restrict m, float* restrict v,
                                         float a, const float* restrict x, int n, float b1, float b2,
                                         float lr_t, float eps_t) {
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (int i = 0; i < n; i++) {
        float gi = a * x[i];
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= lr_t * mi / (sqrtf(vi) + eps_t);
    }
}

/* SGD on one row with g = a * x */
SB_CLONES static void sb_sgd_row_scaled(float* restrict w, float a, const float* restrict x, int n, float lr) {
    for (int i = 0; i < n; i++) w[i] -= lr * (a * x[i]);
}

/* plain SGD: w -= lr * g */
SB_CLONES static void sb_sgd_row(float* restrict w, const float* restrict g, int n, float lr) {
    for (int i = 0; i < n; i++) w[i] -= lr * g[i];
}

/* STREAM triad a[i] = b[i] + s * c[i] over [lo, hi) */
SB_CLONES static void sb_triad(float* restrict a, const float* restrict b, const float* restrict c,
                               float s, long lo, long hi) {
    for (long i = lo; i < hi; i++) a[i] = b[i] + s * c[i];
}

/* splitmix64: the per-sample RNG (seeded from (engine seed, global sample index)) */
static inline uint64_t sb_splitmix(uint64_t* s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Hand-off between the threads of one parallel block (net_passes.pxd: update_phase): a flag one
 * thread raises when a layer's counting sort is done (release) and the others wait on (acquire:
 * the sort's writes are then visible), and a shared counter that hands out rows. The wait spins
 * for a few microseconds, then yields the core. libgomp's barrier under
 * OMP_WAIT_POLICY=PASSIVE sleeps on a futex at once. Each sleep or fork cost ~0.1 ms on the
 * 2-core VM, about as long as the work between them. */
#ifndef SB_SPINS
#define SB_SPINS 4000
#endif

#include <sched.h>

static inline void sb_flag_set(int* f) { __atomic_store_n(f, 1, __ATOMIC_RELEASE); }

/* One round of a wait loop: a pause for the first SB_SPINS rounds, then give the core away. */
static inline void sb_spin(long spins) {
    if (spins < SB_SPINS) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        sched_yield();
    }
}

static inline void sb_flag_wait(int* f) {
    for (long spins = 0; !__atomic_load_n(f, __ATOMIC_ACQUIRE); spins++) sb_spin(spins);
}

static inline int sb_fetch_add(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

/* A one-use barrier for nt threads: each arrives once on its own counter *c (zero before the block)
 * and waits, spinning then yielding as sb_flag_wait does, until all nt have; arrivals release and the
 * wait acquires, so every write made before the barrier is visible after it. */
static inline void sb_barrier(int* c, int nt) {
    __atomic_fetch_add(c, 1, __ATOMIC_ACQ_REL);
    for (long spins = 0; __atomic_load_n(c, __ATOMIC_ACQUIRE) < nt; spins++) sb_spin(spins);
}

/* seconds on the monotonic clock (phase timings inside a parallel block) */
#include <time.h>
static inline double sb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* uniform integer in [0, n) (Lemire's multiply-shift; bias < n / 2^32, irrelevant here) */
static inline int sb_randint(uint64_t* s, int n) {
    return (int)(((sb_splitmix(s) >> 32) * (uint64_t)n) >> 32);
}

#endif
