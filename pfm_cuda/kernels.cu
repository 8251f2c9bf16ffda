/* kernels.cu - the CUDA kernels of FM/PFM and their launch wrappers (float64 throughout).
 *
 * r factor, explicit:  cov_logdet_kernel      one block per point: C_i summed over all c,
 *                                             then LU with partial pivoting in shared memory.
 * r factor, lemma:     outer_sum_kernel       S = sum (x-m)(x-m)^T over a share, one launch.
 *                      lemma_logdet_kernel    one thread per point: log|S| + log1p(u^T S^-1 u).
 * prototypes, exact:   proto_partial_kernel   one launch per fixed-point step and device:
 *                                             sum mu^2 x and sum mu^2 over the device's share.
 * prototypes, batched: proto_batched_kernel   one warp per start, a block's warps share tiles
 *                                             of X in shared memory; iterates to convergence.
 *
 * Invariants: reductions are deterministic (fixed summation order: no floating-point atomics),
 * so a run repeats bit for bit on the same device count; every kernel's shared memory stays
 * under 48 KB (no cudaFuncSetAttribute needed, which keeps the API surface small for remoting);
 * F <= PFM_MAX_F is checked by the caller before any launch.
 */
#include <math.h>

#include "pfm.h"

/* ---- shared helpers ------------------------------------------------------------------- */

/* Upper-triangle entries (a <= b) of an F x F symmetric matrix, E = F(F+1)/2 <= 2080; a
 * thread of a PFM_BLOCK block owns at most NE_MAX of them. */
#define NE_MAX ((PFM_MAX_F * (PFM_MAX_F + 1) / 2 + PFM_BLOCK - 1) / PFM_BLOCK)
/* Doubles of X staged in shared memory per tile by the outer-product kernels (16 KB). */
#define OUTER_TILE 2048
/* Doubles of X staged per tile by the batched prototype kernel (32 KB). */
#define BATCH_TILE 4096
/* Warps (= starts) per block of the batched prototype kernel, at most. */
#define BATCH_WARPS 8

static __host__ __device__ inline int outer_entries(int F) { return F * (F + 1) / 2; }
/* Thread groups splitting the c loop when there are fewer entries than threads (small F):
 * group g takes c = g, g+G, ...; with E >= PFM_BLOCK every thread takes every c. */
static __host__ __device__ inline int outer_groups(int F) {
  int E = outer_entries(F);
  return E >= PFM_BLOCK ? 1 : PFM_BLOCK / E;
}
static __host__ __device__ inline int outer_tile_rows(int F) { return OUTER_TILE / F; }

/* Entry index e (row-major over the upper triangle) -> (a, b), a <= b. */
static __device__ inline void entry_ab(int F, int e, int &a, int &b) {
  a = 0;
  while (e >= F - a) {
    e -= F - a;
    ++a;
  }
  b = a + e;
}

/* Which entries this thread owns. G == 1: e = tid + j*PFM_BLOCK for j < ne; G > 1: e = tid % E
 * in group g = tid / E (threads past G*E own nothing). */
struct OuterPlan {
  int E, G, g, ne;
  int ea[NE_MAX], eb[NE_MAX];
};

static __device__ inline void outer_plan(int F, OuterPlan &p) {
  const int tid = threadIdx.x;
  p.E = outer_entries(F);
  p.G = outer_groups(F);
  if (p.G == 1) {
    p.g = 0;
    p.ne = tid < p.E ? (p.E - 1 - tid) / PFM_BLOCK + 1 : 0;
  } else {
    p.g = tid / p.E;
    p.ne = tid < p.G * p.E ? 1 : 0;
  }
#pragma unroll
  for (int j = 0; j < NE_MAX; ++j) {
    p.ea[j] = p.eb[j] = 0;
    if (j < p.ne) entry_ab(F, p.G == 1 ? tid + j * PFM_BLOCK : tid % p.E, p.ea[j], p.eb[j]);
  }
}

/* acc[j] += sum over c in [c0, c1) of y_c[a_j] * y_c[b_j], y_c = x_c - ctr (ctr in shared
 * memory). X is staged tile by tile in shared memory as y (contiguous rows of F), loaded with
 * coalesced reads since a tile of consecutive rows is one contiguous range of X. Called by all
 * threads of the block (it synchronizes). */
static __device__ inline void outer_accumulate(const double *__restrict__ X, long long c0,
                                               long long c1, int F,
                                               const double *__restrict__ ctr, double *tile,
                                               const OuterPlan &p, double (&acc)[NE_MAX]) {
  const int T = outer_tile_rows(F);
  for (long long b0 = c0; b0 < c1; b0 += T) {
    const int cnt = (int)min((long long)T, c1 - b0);
    const double *src = X + b0 * F;
    for (int idx = threadIdx.x; idx < cnt * F; idx += blockDim.x)
      tile[idx] = src[idx] - ctr[idx % F];
    __syncthreads();
    if (p.G == 1) {
      for (int c = 0; c < cnt; ++c) {
        const double *y = tile + c * F;
#pragma unroll
        for (int j = 0; j < NE_MAX; ++j)
          if (j < p.ne) acc[j] = fma(y[p.ea[j]], y[p.eb[j]], acc[j]);
      }
    } else if (p.ne) {
      for (int c = p.g; c < cnt; c += p.G) {
        const double *y = tile + c * F;
        acc[0] = fma(y[p.ea[0]], y[p.eb[0]], acc[0]);
      }
    }
    __syncthreads();
  }
}

/* With G > 1 groups, add the groups' sums in group order (red: G*E doubles of shared memory).
 * Afterwards the owners of final totals are: G == 1: every thread for j < ne; G > 1: threads
 * tid < E, in acc[0] (thread tid < E is in group 0 and owns entry e = tid). */
static __device__ inline void outer_group_reduce(const OuterPlan &p, double (&acc)[NE_MAX],
                                                 double *red) {
  if (p.G == 1) return; /* uniform over the block: no barrier skipped by some threads only */
  if (p.ne) red[threadIdx.x] = acc[0]; /* == red[g*E + e] */
  __syncthreads();
  if ((int)threadIdx.x < p.E) {
    double s = 0.0;
    for (int q = 0; q < p.G; ++q) s += red[q * p.E + threadIdx.x];
    acc[0] = s;
  }
  __syncthreads();
}

static __device__ inline bool outer_owns(const OuterPlan &p, int j) {
  return p.G == 1 ? j < p.ne : (j == 0 && (int)threadIdx.x < p.E);
}
static __device__ inline int outer_entry_index(const OuterPlan &p, int j) {
  return p.G == 1 ? (int)threadIdx.x + j * PFM_BLOCK : (int)threadIdx.x;
}

/* Deterministic grid-wide reduction tail ("last block" pattern): every block has written its
 * row of width doubles to part[blockIdx.x]; the last block to finish sums the rows in block
 * order into out and re-arms the counter for the next launch. One launch, fixed order. */
static __device__ inline void last_block_reduce(double *part, int width,
                                                unsigned int *counter, double *out) {
  __shared__ bool am_last;
  __threadfence(); /* make this block's row visible device-wide before counting it */
  __syncthreads();
  if (threadIdx.x == 0) am_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!am_last) return;
  __threadfence();
  for (int e = threadIdx.x; e < width; e += blockDim.x) {
    double s = 0.0;
    for (unsigned int b = 0; b < gridDim.x; ++b) s += __ldcg(part + (size_t)b * width + e);
    out[e] = s;
  }
  if (threadIdx.x == 0) *counter = 0u;
}

/* ---- r factor, explicit form ------------------------------------------------------------ */

/* Block i (one per point, i = i0 + blockIdx.x): C_i = (1/n) sum_c (x_c - x_i)(x_c - x_i)^T by
 * the explicit O(n F^2) sum (the paper's heavy workload), then log|C_i| by LU with partial
 * pivoting in shared memory (log|C_i| = sum log|U_kk|; determinants themselves would overflow
 * or underflow at F = 49). Shared memory: x_i (PFM_MAX_F) | region, where the region holds
 * first the X tiles, then the matrix (row stride lda = F|1, odd so that walking a column does
 * not hit one bank) followed by the group-reduction scratch. */
static __host__ __device__ inline int cov_lda(int F) { return F | 1; }
static size_t cov_smem_bytes(int F) {
  const int E = outer_entries(F), G = outer_groups(F);
  size_t tile = (size_t)outer_tile_rows(F) * F;
  size_t mat = (size_t)F * cov_lda(F) + (G > 1 ? (size_t)G * E : 0);
  return (PFM_MAX_F + (tile > mat ? tile : mat)) * sizeof(double);
}

__global__ void __launch_bounds__(PFM_BLOCK)
    cov_logdet_kernel(const double *__restrict__ X, long long n, int F, long long i0,
                      double inv_n, double *__restrict__ logdet) {
  extern __shared__ double smem[];
  double *xi = smem;
  double *region = smem + PFM_MAX_F;
  const int tid = threadIdx.x;
  const long long i = i0 + blockIdx.x;
  const int lda = cov_lda(F);

  for (int f = tid; f < F; f += blockDim.x) xi[f] = X[i * F + f];
  OuterPlan p;
  outer_plan(F, p);
  double acc[NE_MAX];
#pragma unroll
  for (int j = 0; j < NE_MAX; ++j) acc[j] = 0.0;
  __syncthreads();

  outer_accumulate(X, 0, n, F, xi, region, p, acc);

  double *A = region; /* the tiles are dead now (outer_accumulate ends with a barrier) */
  outer_group_reduce(p, acc, A + F * lda);
#pragma unroll
  for (int j = 0; j < NE_MAX; ++j)
    if (outer_owns(p, j)) {
      const double v = acc[j] * inv_n;
      A[p.ea[j] * lda + p.eb[j]] = v;
      A[p.eb[j] * lda + p.ea[j]] = v;
    }
  __syncthreads();

  /* LU with partial pivoting; only the U diagonal is needed, so row swaps and updates touch
   * the trailing columns only. Warp 0 picks the pivot (largest |A[r][k]|, first on ties, as
   * LAPACK's idamax); the whole block updates the trailing submatrix. */
  __shared__ int piv;
  double ld = 0.0; /* meaningful in thread 0 */
  bool singular = false;
  for (int k = 0; k < F; ++k) {
    if (tid < 32) {
      double best = -1.0;
      int bi = k;
      for (int r = k + tid; r < F; r += 32) {
        const double v = fabs(A[r * lda + k]);
        if (v > best) {
          best = v;
          bi = r;
        }
      }
      for (int off = 16; off > 0; off >>= 1) {
        const double ob = __shfl_down_sync(0xffffffffu, best, off);
        const int oi = __shfl_down_sync(0xffffffffu, bi, off);
        if (ob > best || (ob == best && oi < bi)) {
          best = ob;
          bi = oi;
        }
      }
      if (tid == 0) piv = bi;
    }
    __syncthreads();
    const int pr = piv;
    if (pr != k)
      for (int j = k + tid; j < F; j += blockDim.x) {
        const double t = A[k * lda + j];
        A[k * lda + j] = A[pr * lda + j];
        A[pr * lda + j] = t;
      }
    __syncthreads();
    const double pk = A[k * lda + k];
    if (pk == 0.0) { /* same value in every thread: the whole block leaves together */
      singular = true;
      break;
    }
    if (tid == 0) ld += log(fabs(pk));
    const int m = F - k - 1;
    for (int idx = tid; idx < m * m; idx += blockDim.x) {
      const int r = k + 1 + idx / m, c = k + 1 + idx % m;
      A[r * lda + c] -= (A[r * lda + k] / pk) * A[k * lda + c];
    }
    __syncthreads();
  }
  if (tid == 0) logdet[blockIdx.x] = singular ? -INFINITY : ld;
}

void pfm_launch_cov_logdet(const double *d_X, size_t n, int F, size_t i0, size_t count,
                           double *d_logdet) {
  if (count == 0) return;
  cov_logdet_kernel<<<(unsigned int)count, PFM_BLOCK, cov_smem_bytes(F)>>>(
      d_X, (long long)n, F, (long long)i0, 1.0 / (double)n, d_logdet);
  CUDA_CHECK_LAUNCH();
}

/* ---- r factor, lemma form ----------------------------------------------------------------- */

/* Block b sums (x_c - m)(x_c - m)^T over its contiguous chunk of [c0, c0+count), writes its E
 * upper-triangle sums to part[b], and the last block adds the rows in block order into out.
 * Same tiling and entry ownership as the explicit kernel; the centre is the mean. */
static size_t outer_smem_bytes(int F) {
  const int E = outer_entries(F), G = outer_groups(F);
  size_t tile = (size_t)outer_tile_rows(F) * F;
  size_t red = G > 1 ? (size_t)G * E : 0;
  return (PFM_MAX_F + (tile > red ? tile : red)) * sizeof(double);
}

__global__ void __launch_bounds__(PFM_BLOCK)
    outer_sum_kernel(const double *__restrict__ X, int F, long long c0, long long count,
                     pfm_vec mean, double *part, unsigned int *counter, double *out) {
  extern __shared__ double smem[];
  double *ctr = smem;
  double *region = smem + PFM_MAX_F;
  for (int f = threadIdx.x; f < F; f += blockDim.x) ctr[f] = mean.x[f];
  OuterPlan p;
  outer_plan(F, p);
  double acc[NE_MAX];
#pragma unroll
  for (int j = 0; j < NE_MAX; ++j) acc[j] = 0.0;
  __syncthreads();

  const long long chunk = (count + gridDim.x - 1) / gridDim.x;
  const long long lo = c0 + min(count, (long long)blockIdx.x * chunk);
  const long long hi = c0 + min(count, (long long)(blockIdx.x + 1) * chunk);
  outer_accumulate(X, lo, hi, F, ctr, region, p, acc);
  outer_group_reduce(p, acc, region);

  double *row = part + (size_t)blockIdx.x * p.E;
#pragma unroll
  for (int j = 0; j < NE_MAX; ++j)
    if (outer_owns(p, j)) row[outer_entry_index(p, j)] = acc[j];
  last_block_reduce(part, p.E, counter, out);
}

int pfm_outer_blocks(size_t count, int sms) {
  /* Enough blocks to fill the device, but chunks of at least 256 points. */
  size_t b = (count + 255) / 256;
  size_t cap = (size_t)(sms > 0 ? sms : 1) * 2;
  if (b > cap) b = cap;
  return b < 1 ? 1 : (int)b;
}

void pfm_launch_outer_sum(const double *d_X, int F, size_t c0, size_t count, const pfm_vec *mean,
                          int blocks, double *d_part, unsigned int *d_counter, double *d_out) {
  outer_sum_kernel<<<blocks, PFM_BLOCK, outer_smem_bytes(F)>>>(
      d_X, F, (long long)c0, (long long)count, *mean, d_part, d_counter, d_out);
  CUDA_CHECK_LAUNCH();
}

/* One thread per point: q = u^T S^-1 u with u = x_i - m, log|C_i| = log|S| + log1p(q) (matrix
 * determinant lemma, since C_i = S + u u^T). S^-1 and m are staged in shared memory. */
__global__ void __launch_bounds__(PFM_BLOCK)
    lemma_logdet_kernel(const double *__restrict__ X, int F, long long i0, long long count,
                        pfm_vec mean, const double *__restrict__ Sinv, double logdet_S,
                        double *__restrict__ logdet) {
  extern __shared__ double smem[];
  double *m = smem;
  double *S = smem + PFM_MAX_F;
  for (int f = threadIdx.x; f < F; f += blockDim.x) m[f] = mean.x[f];
  for (int e = threadIdx.x; e < F * F; e += blockDim.x) S[e] = Sinv[e];
  __syncthreads();
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= count) return;
  const double *x = X + (i0 + t) * F;
  double q = 0.0;
  for (int a = 0; a < F; ++a) {
    double s = 0.0;
    for (int b = 0; b < F; ++b) s = fma(S[a * F + b], x[b] - m[b], s);
    q = fma(x[a] - m[a], s, q);
  }
  logdet[t] = logdet_S + log1p(q);
}

void pfm_launch_lemma_logdet(const double *d_X, int F, size_t i0, size_t count,
                             const pfm_vec *mean, const double *d_Sinv, double logdet_S,
                             double *d_logdet) {
  if (count == 0) return;
  const unsigned int blocks = (unsigned int)((count + PFM_BLOCK - 1) / PFM_BLOCK);
  const size_t smem = (PFM_MAX_F + (size_t)F * F) * sizeof(double);
  lemma_logdet_kernel<<<blocks, PFM_BLOCK, smem>>>(d_X, F, (long long)i0, (long long)count,
                                                   *mean, d_Sinv, logdet_S, d_logdet);
  CUDA_CHECK_LAUNCH();
}

/* ---- prototypes, exact mode ------------------------------------------------------------- */

/* Grid-stride over the share: each thread accumulates mu^2 x and mu^2 in registers (FB >= F is
 * a compile-time bound so the arrays stay in registers; the guards f < F keep it exact), warps
 * reduce by shuffles, warps' sums are added in warp order, blocks' rows in block order by the
 * last block. v arrives as a kernel parameter: per step the host does one launch and one
 * blocking copy of F+1 doubles back, the paper's pattern, kept on purpose. */
template <int FB>
__global__ void __launch_bounds__(PFM_BLOCK)
    proto_partial_kernel(const double *__restrict__ X, int F, long long count, pfm_vec v,
                         double r2, double *part, unsigned int *counter, double *out) {
  __shared__ double wsum[PFM_BLOCK / 32][PFM_MAX_F + 1];
  double acc[FB + 1];
#pragma unroll
  for (int f = 0; f <= FB; ++f) acc[f] = 0.0;
  for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < count;
       c += (long long)gridDim.x * blockDim.x) {
    const double *x = X + c * F;
    double d2 = 0.0;
#pragma unroll
    for (int f = 0; f < FB; ++f)
      if (f < F) {
        const double t = x[f] - v.x[f];
        d2 = fma(t, t, d2);
      }
    const double mu = 1.0 / (1.0 + r2 * d2);
    const double w = mu * mu;
#pragma unroll
    for (int f = 0; f < FB; ++f)
      if (f < F) acc[f] = fma(w, x[f], acc[f]);
    acc[FB] += w;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int f = 0; f <= FB; ++f)
    for (int off = 16; off > 0; off >>= 1) acc[f] += __shfl_down_sync(0xffffffffu, acc[f], off);
  if (lane == 0) {
#pragma unroll
    for (int f = 0; f < FB; ++f)
      if (f < F) wsum[warp][f] = acc[f];
    wsum[warp][F] = acc[FB];
  }
  __syncthreads();
  if ((int)threadIdx.x <= F) {
    double s = 0.0;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) s += wsum[w][threadIdx.x];
    part[(size_t)blockIdx.x * (F + 1) + threadIdx.x] = s;
  }
  last_block_reduce(part, F + 1, counter, out);
}

int pfm_partial_blocks(size_t count, int sms) {
  size_t b = (count + PFM_BLOCK - 1) / PFM_BLOCK;
  size_t cap = (size_t)(sms > 0 ? sms : 1) * 2;
  if (b > cap) b = cap;
  return b < 1 ? 1 : (int)b;
}

void pfm_launch_proto_partial(const double *d_X, int F, size_t c0, size_t count,
                              const pfm_vec *v, double r2, int blocks, double *d_part,
                              unsigned int *d_counter, double *d_out) {
  const double *Xs = d_X + c0 * (size_t)F;
  const long long cnt = (long long)count;
#define PFM_PARTIAL(FB)                                                                   \
  proto_partial_kernel<FB><<<blocks, PFM_BLOCK>>>(Xs, F, cnt, *v, r2, d_part, d_counter, \
                                                  d_out)
  if (F <= 2)
    PFM_PARTIAL(2);
  else if (F <= 4)
    PFM_PARTIAL(4);
  else if (F <= 8)
    PFM_PARTIAL(8);
  else if (F <= 16)
    PFM_PARTIAL(16);
  else if (F <= 32)
    PFM_PARTIAL(32);
  else
    PFM_PARTIAL(64);
#undef PFM_PARTIAL
  CUDA_CHECK_LAUNCH();
}

/* ---- prototypes, batched mode ----------------------------------------------------------- */

/* One warp per start; the block's warps (up to BATCH_WARPS starts) share tiles of X staged in
 * shared memory (row stride ldx = F|1, odd: lanes reading different rows hit different banks).
 * Per fixed-point step each lane takes points lane, lane+32, ... of every tile and accumulates
 * mu^2 x and mu^2 in registers; a butterfly (xor) shuffle leaves the identical sum in every
 * lane, so all lanes agree on v' and on E without another exchange. Each warp stops when its
 * start converges (E < tol) or reaches max_iter; the block loops until all its warps stopped.
 * Stopped warps keep loading tiles and meeting barriers: the barriers are block-wide. */
static __host__ __device__ inline int batch_ldx(int F) { return F | 1; }
static __host__ __device__ inline int batch_tile_rows(int F) { return BATCH_TILE / batch_ldx(F); }

template <int FB>
__global__ void __launch_bounds__(BATCH_WARPS * 32)
    proto_batched_kernel(const double *__restrict__ X, long long n, int F,
                         const double *__restrict__ V0, long long kstarts, double r2, double tol,
                         int max_iter, double *__restrict__ Vout, int *__restrict__ iters,
                         int *__restrict__ conv) {
  extern __shared__ double smem[];
  const int ldx = batch_ldx(F), T = batch_tile_rows(F);
  const int wpb = blockDim.x >> 5;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  double *tile = smem;
  double *v = smem + (size_t)T * ldx + (size_t)warp * F;
  const long long k = (long long)blockIdx.x * wpb + warp;
  bool active = k < kstarts;
  bool converged = false;
  int it = 0;
  if (active)
    for (int f = lane; f < F; f += 32) v[f] = V0[k * F + f];

  for (;;) {
    /* Barrier and vote: also publishes each warp's v written at the end of the last step. */
    if (__syncthreads_count(active ? 1 : 0) == 0) break;
    double acc[FB + 1];
#pragma unroll
    for (int f = 0; f <= FB; ++f) acc[f] = 0.0;
    for (long long p0 = 0; p0 < n; p0 += T) {
      const int cnt = (int)min((long long)T, n - p0);
      const double *src = X + p0 * F;
      for (int idx = threadIdx.x; idx < cnt * F; idx += blockDim.x)
        tile[(idx / F) * ldx + idx % F] = src[idx];
      __syncthreads();
      if (active)
        for (int p = lane; p < cnt; p += 32) {
          const double *x = tile + p * ldx;
          double d2 = 0.0;
#pragma unroll
          for (int f = 0; f < FB; ++f)
            if (f < F) {
              const double t = x[f] - v[f];
              d2 = fma(t, t, d2);
            }
          const double mu = 1.0 / (1.0 + r2 * d2);
          const double w = mu * mu;
#pragma unroll
          for (int f = 0; f < FB; ++f)
            if (f < F) acc[f] = fma(w, x[f], acc[f]);
          acc[FB] += w;
        }
      __syncthreads();
    }
    if (active) {
#pragma unroll
      for (int f = 0; f <= FB; ++f)
        for (int off = 16; off > 0; off >>= 1)
          acc[f] += __shfl_xor_sync(0xffffffffu, acc[f], off);
      const double den = acc[FB];
      double e2 = 0.0;
#pragma unroll
      for (int f = 0; f < FB; ++f)
        if (f < F) {
          const double d = acc[f] / den - v[f];
          e2 = fma(d, d, e2);
        }
      __syncwarp(); /* every lane has read the old v before lane 0 overwrites it */
      if (lane == 0) {
#pragma unroll
        for (int f = 0; f < FB; ++f)
          if (f < F) v[f] = acc[f] / den;
      }
      __syncwarp();
      ++it;
      if (sqrt(e2) < tol) {
        converged = true;
        active = false;
      } else if (it >= max_iter) {
        active = false;
      }
    }
  }
  if (k < kstarts) {
    for (int f = lane; f < F; f += 32) Vout[k * F + f] = v[f];
    if (lane == 0) {
      iters[k] = it;
      conv[k] = converged ? 1 : 0;
    }
  }
}

void pfm_launch_proto_batched(const double *d_X, size_t n, int F, const double *d_V0,
                              size_t kstarts, double r2, double tol, int max_iter, int sms,
                              double *d_V, int *d_iters, int *d_conv) {
  if (kstarts == 0) return;
  /* Fewer starts per block when there are few starts (aim: two blocks per SM), so that every
   * SM gets work; up to BATCH_WARPS starts share each tile of X when there are many. */
  const size_t target = 2 * (size_t)(sms > 0 ? sms : 1);
  const size_t per_block = (kstarts + target - 1) / target;
  const int wpb = per_block > BATCH_WARPS ? BATCH_WARPS : (int)per_block; /* >= 1 */
  const unsigned int blocks = (unsigned int)((kstarts + wpb - 1) / wpb);
  const size_t smem =
      ((size_t)batch_tile_rows(F) * batch_ldx(F) + (size_t)wpb * F) * sizeof(double);
#define PFM_BATCHED(FB)                                                                  \
  proto_batched_kernel<FB><<<blocks, wpb * 32, smem>>>(d_X, (long long)n, F, d_V0,      \
                                                       (long long)kstarts, r2, tol,     \
                                                       max_iter, d_V, d_iters, d_conv)
  if (F <= 2)
    PFM_BATCHED(2);
  else if (F <= 4)
    PFM_BATCHED(4);
  else if (F <= 8)
    PFM_BATCHED(8);
  else if (F <= 16)
    PFM_BATCHED(16);
  else if (F <= 32)
    PFM_BATCHED(32);
  else
    PFM_BATCHED(64);
#undef PFM_BATCHED
  CUDA_CHECK_LAUNCH();
}
