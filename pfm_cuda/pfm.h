/* pfm.h - shared declarations of the FM/PFM CUDA program (pfm_cuda/).
 *
 * Layout: io.cu (input parsing and validation, host linear algebra, output; no CUDA calls),
 * kernels.cu (every __global__ kernel and its launch wrapper), main.cu (options, devices, the
 * phases). Invariants: all arithmetic is float64; nothing touches the CUDA runtime until the
 * input and the options have been validated (so bad input is reported on a machine without a
 * GPU); every CUDA call and every launch is checked with CUDA_CHECK / CUDA_CHECK_LAUNCH.
 */
#ifndef PFM_H
#define PFM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cuda_runtime.h>

/* Largest number of features. It bounds per-thread register arrays and the shared-memory
 * footprint of the kernels (an F x F matrix in shared memory: 64*65*8 B = 33 KB, under the
 * 48 KB a block gets without opting in to more). */
#define PFM_MAX_F 64
/* Threads per block of the r-factor kernels and of the exact-mode reduction kernel. */
#define PFM_BLOCK 256

/* Exit codes: 2 = bad usage or bad input (reported before any CUDA call), 1 = CUDA or
 * numerical failure at run time. */
#define PFM_EXIT_INPUT 2
#define PFM_EXIT_RUNTIME 1

/* A point of R^F passed to kernels by value (512 bytes of kernel parameters), so the exact
 * mode needs no host-to-device copy per fixed-point step: one launch, one copy back. */
typedef struct {
  double x[PFM_MAX_F];
} pfm_vec;

/* Prints "pfm: CUDA error at FILE:LINE: CALL: NAME: STRING" and exits with PFM_EXIT_RUNTIME. */
void pfm_cuda_fail(cudaError_t err, const char *call, const char *file, int line);

#define CUDA_CHECK(call)                                          \
  do {                                                            \
    cudaError_t pfm_err_ = (call);                                \
    if (pfm_err_ != cudaSuccess)                                  \
      pfm_cuda_fail(pfm_err_, #call, __FILE__, __LINE__);         \
  } while (0)

/* After a <<<>>> launch: configuration errors are reported by cudaGetLastError at once;
 * faults during execution surface at the next synchronizing call, also checked. */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

/* ---- io.cu ------------------------------------------------------------------------------ */

typedef struct {
  size_t n; /* points */
  int F;    /* features, 1..PFM_MAX_F */
  double *x; /* n*F, row-major, malloc'd */
} pfm_data;

/* Loads PFMD binary (detected by magic) or comma/whitespace text. On failure returns -1 with
 * a message naming the file and the problem in err (ragged row, non-number, NaN/inf, F over
 * PFM_MAX_F, gzip input, truncated binary, ...). n < 2 is left to the caller. */
int pfm_load(const char *path, pfm_data *out, char *err, size_t errlen);

/* In-place LU factorisation with partial pivoting of the F x F matrix A (row stride lda).
 * Returns log|det A| = sum log|U_kk|; *singular = 1 if a pivot is exactly zero. piv gets the
 * row permutation (piv[k] = row swapped with k). */
double pfm_host_lu(double *A, int F, int lda, int *piv, int *singular);
/* Inverse of A from its LU factors (as left by pfm_host_lu) into inv (F x F, stride F). */
void pfm_host_lu_inverse(const double *LU, int F, int lda, const int *piv, double *inv);

double pfm_now(void); /* monotonic seconds */

void pfm_json_string(FILE *f, const char *s); /* a JSON string literal, escaped */

/* ---- kernels.cu: launch wrappers (each checks its launch) ------------------------------- */

/* log|C_i| for points i in [i0, i0+count) of X (n x F on the device): one block per point. */
void pfm_launch_cov_logdet(const double *d_X, size_t n, int F, size_t i0, size_t count,
                           double *d_logdet);

/* E = F(F+1)/2 upper-triangle sums of (x_c - mean)(x_c - mean)^T over c in [c0, c0+count),
 * row-major over a <= b, reduced on the device into d_out[E] by one launch of `blocks` blocks
 * (pfm_outer_blocks says how many); d_part holds blocks*E doubles, d_counter is one zeroed
 * unsigned int that the kernel leaves zeroed again. */
int pfm_outer_blocks(size_t count, int sms);
void pfm_launch_outer_sum(const double *d_X, int F, size_t c0, size_t count, const pfm_vec *mean,
                          int blocks, double *d_part, unsigned int *d_counter, double *d_out);

/* log|C_i| = logdet_S + log1p(u_i^T S^-1 u_i), u_i = x_i - mean, for i in [i0, i0+count). */
void pfm_launch_lemma_logdet(const double *d_X, int F, size_t i0, size_t count,
                             const pfm_vec *mean, const double *d_Sinv, double logdet_S,
                             double *d_logdet);

/* Exact mode: sums over the share [c0, c0+count) of mu^2 x (F values) and mu^2 (1 value) for
 * one prototype v, reduced on the device into d_out[F+1] by a single launch. */
int pfm_partial_blocks(size_t count, int sms);
void pfm_launch_proto_partial(const double *d_X, int F, size_t c0, size_t count,
                              const pfm_vec *v, double r2, int blocks, double *d_part,
                              unsigned int *d_counter, double *d_out);

/* Batched mode: iterates kstarts prototypes (initial values d_V0, kstarts x F) to convergence,
 * all at once, over all n points. Writes d_V (kstarts x F), d_iters, d_conv. */
void pfm_launch_proto_batched(const double *d_X, size_t n, int F, const double *d_V0,
                              size_t kstarts, double r2, double tol, int max_iter, int sms,
                              double *d_V, int *d_iters, int *d_conv);

#endif /* PFM_H */
