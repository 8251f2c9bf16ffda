/* main.cu - the pfm program: Fuzzy Minimals (FM) and its multi-GPU form (PFM) in CUDA.
 *
 *   pfm [options] DATA      (pfm --help lists the options)
 *
 * Phases, each timed on the host clock and each ending in a blocking copy, so a phase's time
 * covers its GPU work: load (read + validate the input, host statistics), init (devices,
 * contexts, X uploaded to every device), r_factor, prototypes; total covers all of them.
 *
 * Invariants:
 * - Everything that can be wrong with the options or the input is reported (exit 2) before the
 *   first CUDA call, so it is testable without a GPU; CUDA and numerical failures exit 1.
 * - One host thread per device (OpenMP, num_threads = devices); thread t calls cudaSetDevice(t)
 *   and only ever touches device t's memory (device t % count with PFM_VIRTUAL_DEVICES, a
 *   testing aid). Work is split in contiguous, even shares.
 * - The result is the sequential FM result: converged v of every start, merged in start order.
 */
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "pfm.h"

#define PFM_DEFAULT_MAX_ITER 10000
#define PFM_R_TOL 1e-9

enum { MODE_EXACT, MODE_BATCHED };
enum { R_EXPLICIT, R_LEMMA };

typedef struct {
  const char *input;
  const char *out;
  const char *json;
  int mode;
  int r_method;
  int devices; /* 0: all */
  long long starts; /* 0: all points */
  double eps1, eps2;
  int max_iter;
  int quiet;
  int virtual_devices; /* PFM_VIRTUAL_DEVICES, 0: unset */
} options;

static void die(int code, const char *fmt, ...) {
  va_list ap;
  fputs("pfm: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  exit(code);
}

static const char USAGE[] =
    "usage: pfm [options] DATA\n"
    "\n"
    "Fuzzy Minimals clustering on all (or --devices N) CUDA devices, float64.\n"
    "DATA: PFMD binary (magic \"PFMD\", u32 version=1, u64 n, u64 F, n*F float64, all\n"
    "little-endian) or text (one point per line, values separated by commas/whitespace,\n"
    "'#' comments). gzip is not read here: use python -m farcuda.pfm convert. F <= 64.\n"
    "\n"
    "options:\n"
    "  --mode exact|batched       prototype phase (default batched): exact = X split over\n"
    "                             devices, one launch + one blocking copy per step and device;\n"
    "                             batched = each device iterates its share of the starts at once\n"
    "  --r-method explicit|lemma  log|C_i| by the explicit O(n^2 F^2) sums + LU (default), or\n"
    "                             by the matrix determinant lemma (O(n F^2))\n"
    "  --devices N                use devices 0..N-1 (default: all that CUDA reports)\n"
    "  --starts K                 start from every n/K-th point: (j*n)/K, j < K (default: all)\n"
    "  --eps1 X                   prototype step tolerance, relative to scale (default 1e-6)\n"
    "  --eps2 X                   merge tolerance, squared, relative to scale^2 (default 1e-5)\n"
    "  --max-iter N               cap on steps per start (default 10000); starts that hit it\n"
    "                             are reported (stderr, JSON \"unconverged\")\n"
    "  --out FILE                 prototypes as CSV (default: stdout)\n"
    "  --json FILE                JSON record: r, prototypes, per-phase times, devices, ...\n"
    "  --quiet                    no summary line on stderr\n"
    "exit status: 0 ok, 2 bad usage or input (checked before any CUDA call), 1 CUDA/runtime\n";

static double parse_double(const char *opt, const char *s) {
  char *end = NULL;
  double v = strtod(s, &end);
  if (!end || *end || end == s || !isfinite(v))
    die(PFM_EXIT_INPUT, "%s: not a number: '%s'", opt, s);
  return v;
}

static long long parse_int(const char *opt, const char *s) {
  char *end = NULL;
  long long v = strtoll(s, &end, 10);
  if (!end || *end || end == s) die(PFM_EXIT_INPUT, "%s: not an integer: '%s'", opt, s);
  return v;
}

static void parse_options(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  o->mode = MODE_BATCHED;
  o->r_method = R_EXPLICIT;
  o->eps1 = 1e-6;
  o->eps2 = 1e-5;
  o->max_iter = PFM_DEFAULT_MAX_ITER;
  for (int a = 1; a < argc; ++a) {
    const char *arg = argv[a];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      fputs(USAGE, stdout);
      exit(0);
    }
    if (strcmp(arg, "--quiet") == 0) {
      o->quiet = 1;
      continue;
    }
    if (strncmp(arg, "--", 2) != 0 || strcmp(arg, "--") == 0) {
      if (strcmp(arg, "--") == 0 && a + 1 < argc) arg = argv[++a];
      if (o->input) die(PFM_EXIT_INPUT, "more than one DATA argument ('%s', '%s')", o->input, arg);
      o->input = arg;
      continue;
    }
    /* --name value or --name=value */
    char name[64];
    const char *val = NULL;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (len >= sizeof name) die(PFM_EXIT_INPUT, "unknown option '%s' (see pfm --help)", arg);
    memcpy(name, arg, len);
    name[len] = 0;
    if (eq)
      val = eq + 1;
    else if (a + 1 < argc)
      val = argv[++a];
    else
      die(PFM_EXIT_INPUT, "option %s needs a value", name);
    if (strcmp(name, "--mode") == 0) {
      if (strcmp(val, "exact") == 0)
        o->mode = MODE_EXACT;
      else if (strcmp(val, "batched") == 0)
        o->mode = MODE_BATCHED;
      else
        die(PFM_EXIT_INPUT, "--mode: '%s' is not exact or batched", val);
    } else if (strcmp(name, "--r-method") == 0) {
      if (strcmp(val, "explicit") == 0)
        o->r_method = R_EXPLICIT;
      else if (strcmp(val, "lemma") == 0)
        o->r_method = R_LEMMA;
      else
        die(PFM_EXIT_INPUT, "--r-method: '%s' is not explicit or lemma", val);
    } else if (strcmp(name, "--devices") == 0) {
      long long v = parse_int(name, val);
      if (v < 1 || v > 1024) die(PFM_EXIT_INPUT, "--devices: %lld is not in 1..1024", v);
      o->devices = (int)v;
    } else if (strcmp(name, "--starts") == 0) {
      long long v = parse_int(name, val);
      if (v < 0) die(PFM_EXIT_INPUT, "--starts: %lld is negative", v);
      o->starts = v;
    } else if (strcmp(name, "--eps1") == 0) {
      o->eps1 = parse_double(name, val);
      if (!(o->eps1 > 0)) die(PFM_EXIT_INPUT, "--eps1 must be > 0");
    } else if (strcmp(name, "--eps2") == 0) {
      o->eps2 = parse_double(name, val);
      if (!(o->eps2 > 0)) die(PFM_EXIT_INPUT, "--eps2 must be > 0");
    } else if (strcmp(name, "--max-iter") == 0) {
      long long v = parse_int(name, val);
      if (v < 1 || v > 100000000) die(PFM_EXIT_INPUT, "--max-iter: %lld is not in 1..1e8", v);
      o->max_iter = (int)v;
    } else if (strcmp(name, "--out") == 0) {
      o->out = val;
    } else if (strcmp(name, "--json") == 0) {
      o->json = val;
    } else {
      die(PFM_EXIT_INPUT, "unknown option '%s' (see pfm --help)", name);
    }
  }
  if (!o->input) die(PFM_EXIT_INPUT, "no DATA file given (see pfm --help)");
  /* Testing aid: PFM_VIRTUAL_DEVICES=N shows N devices mapped round-robin onto the physical
   * ones (thread t works on physical device t % count), so that the multi-device paths (shares,
   * barriers, host-side combination, empty shares) run on a one-GPU machine. farcuda's device
   * map is the real way to get several virtual devices on one GPU. */
  const char *vd = getenv("PFM_VIRTUAL_DEVICES");
  if (vd && *vd) {
    long long v = parse_int("PFM_VIRTUAL_DEVICES", vd);
    if (v < 1 || v > 64) die(PFM_EXIT_INPUT, "PFM_VIRTUAL_DEVICES: %lld is not in 1..64", v);
    o->virtual_devices = (int)v;
  }
}

/* Host-side statistics and the validation that needs them (all before any CUDA call). */
typedef struct {
  double mean[PFM_MAX_F];
  double *d2; /* ||x_i - m||^2 */
  double s;   /* scale */
} host_stats;

static void host_prepare(const options *o, const pfm_data *d, host_stats *h) {
  const size_t n = d->n;
  const int F = d->F;
  if (n < 2) die(PFM_EXIT_INPUT, "%s: need at least 2 points, got n=%zu", o->input, n);
  if (n > 0x7fffffffu)
    die(PFM_EXIT_INPUT, "%s: n=%zu points exceeds the limit of 2^31-1", o->input, n);
  for (int f = 0; f < F; ++f) {
    size_t i = 1;
    while (i < n && d->x[i * F + f] == d->x[f]) ++i;
    if (i == n)
      die(PFM_EXIT_INPUT, "%s: feature %d is constant: every covariance matrix is singular",
          o->input, f);
  }
  if (n <= (size_t)F)
    die(PFM_EXIT_INPUT,
        "%s: n=%zu points for F=%d features: need n > F, or the covariance matrices are "
        "singular",
        o->input, n, F);
  for (int f = 0; f < F; ++f) {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += d->x[i * F + f];
    h->mean[f] = s / (double)n;
  }
  h->d2 = (double *)malloc(n * sizeof(double));
  double S[PFM_MAX_F * PFM_MAX_F];
  memset(S, 0, sizeof S);
  double tot = 0.0;
  for (size_t i = 0; i < n; ++i) {
    double u[PFM_MAX_F], q = 0.0;
    for (int f = 0; f < F; ++f) {
      u[f] = d->x[i * F + f] - h->mean[f];
      q += u[f] * u[f];
    }
    h->d2[i] = q;
    tot += q;
    for (int a = 0; a < F; ++a)
      for (int b = a; b < F; ++b) S[a * F + b] += u[a] * u[b];
  }
  h->s = sqrt(tot / (double)n);
  if (!(h->s > 0)) die(PFM_EXIT_INPUT, "%s: all points are identical (scale 0)", o->input);
  /* Linearly dependent features make S (and every C_i, which is S + u u^T) singular: the
   * log-determinants would be rounding noise. A pivot below 1e-13 of the largest diagonal
   * entry is treated as singular (features of very different units stay far above it). */
  double dmax = 0.0;
  for (int a = 0; a < F; ++a) {
    for (int b = 0; b < a; ++b) S[a * F + b] = S[b * F + a];
    if (S[a * F + a] > dmax) dmax = S[a * F + a];
  }
  int piv[PFM_MAX_F], sing = 0;
  pfm_host_lu(S, F, F, piv, &sing);
  double pmin = INFINITY;
  for (int k = 0; k < F && !sing; ++k) pmin = fmin(pmin, fabs(S[k * F + k]));
  if (sing || pmin <= 1e-13 * dmax)
    die(PFM_EXIT_INPUT,
        "%s: the covariance matrix of the data is singular (linearly dependent features)",
        o->input);
}

/* Share t of [0, total) over parts: contiguous, sizes differ by at most one. */
static size_t share_lo(size_t total, int parts, int t) { return total * (size_t)t / (size_t)parts; }

/* r fixed point in log space (MISSION.md); returns the number of steps, or -1. */
static long long r_fixed_point(const double *ld, const double *d2, size_t n, int F, double s,
                               double *r_out, double *log_f1_out) {
  double hmax = -INFINITY;
  for (size_t i = 0; i < n; ++i) hmax = fmax(hmax, -0.5 * ld[i]);
  double acc = 0.0;
  for (size_t i = 0; i < n; ++i) acc += exp(-0.5 * ld[i] - hmax);
  const double log_f1 = hmax + log(acc), log_n = log((double)n);
  *log_f1_out = log_f1;
  double r = 1.0 / s;
  const long long cap = (long long)n * F;
  for (long long k = 0; k < cap; ++k) {
    double tot = 0.0;
    const double r2 = r * r;
    for (size_t i = 0; i < n; ++i) tot += 1.0 / (1.0 + r2 * d2[i]);
    const double rn = exp((log_f1 + log(tot) - log_n) / F);
    if (fabs(rn - r) <= PFM_R_TOL * r) {
      *r_out = rn;
      return k + 1;
    }
    r = rn;
  }
  return -1;
}

int main(int argc, char **argv) {
  const double t_start = pfm_now();
  options o;
  parse_options(argc, argv, &o);

  /* ---- load and validate: no CUDA call before the end of this block ---- */
  FILE *out = stdout, *jf = NULL;
  if (o.out && !(out = fopen(o.out, "w"))) die(PFM_EXIT_INPUT, "--out %s: cannot write", o.out);
  if (o.json && !(jf = fopen(o.json, "w"))) die(PFM_EXIT_INPUT, "--json %s: cannot write", o.json);
  pfm_data d;
  char err[1024];
  if (pfm_load(o.input, &d, err, sizeof err)) die(PFM_EXIT_INPUT, "%s", err);
  host_stats h;
  host_prepare(&o, &d, &h);
  const size_t n = d.n;
  const int F = d.F;
  const size_t K = (o.starts <= 0 || (size_t)o.starts >= n) ? n : (size_t)o.starts;
  double *V0 = (double *)malloc(K * F * sizeof(double));
  for (size_t j = 0; j < K; ++j) {
    const size_t k = (size_t)((unsigned long long)j * n / K);
    memcpy(V0 + j * F, d.x + k * F, F * sizeof(double));
  }
  const double t_load = pfm_now() - t_start;

  /* ---- init: devices, contexts, X on every device ---- */
  double t0 = pfm_now();
  int count = 0;
  cudaError_t cerr = cudaGetDeviceCount(&count);
  if (cerr != cudaSuccess)
    die(PFM_EXIT_RUNTIME, "no usable CUDA device: cudaGetDeviceCount: %s: %s",
        cudaGetErrorName(cerr), cudaGetErrorString(cerr));
  if (count < 1) die(PFM_EXIT_RUNTIME, "no CUDA device");
  const int physical = count;
  if (o.virtual_devices) count = o.virtual_devices;
  if (o.devices > count)
    die(PFM_EXIT_INPUT, "--devices %d: only %d device(s) visible", o.devices, count);
  const int ndev = o.devices ? o.devices : count;
  omp_set_dynamic(0);
  double **d_X = (double **)calloc(ndev, sizeof(double *));
  int *sms = (int *)calloc(ndev, sizeof(int));
  int team_ok = 1;
#pragma omp parallel num_threads(ndev)
  {
    const int t = omp_get_thread_num();
    if (omp_get_num_threads() != ndev) {
#pragma omp atomic write
      team_ok = 0;
    } else {
      CUDA_CHECK(cudaSetDevice(t % physical));
      CUDA_CHECK(cudaFree(0)); /* create the context here, not inside a timed phase */
      CUDA_CHECK(cudaDeviceGetAttribute(&sms[t], cudaDevAttrMultiProcessorCount,
                                        t % physical));
      CUDA_CHECK(cudaMalloc((void **)&d_X[t], n * F * sizeof(double)));
      CUDA_CHECK(cudaMemcpy(d_X[t], d.x, n * F * sizeof(double), cudaMemcpyHostToDevice));
    }
  }
  if (!team_ok) die(PFM_EXIT_RUNTIME, "OpenMP gave fewer than %d threads", ndev);
  const double t_init = pfm_now() - t0;

  /* ---- r factor ---- */
  t0 = pfm_now();
  double *ld = (double *)malloc(n * sizeof(double));
  const int E = F * (F + 1) / 2;
  double *Spart = (double *)calloc((size_t)ndev * E, sizeof(double));
  double *Sinv = (double *)malloc((size_t)F * F * sizeof(double));
  double logdet_S = 0.0;
  int S_singular = 0;
  pfm_vec mean;
  memset(&mean, 0, sizeof mean);
  memcpy(mean.x, h.mean, F * sizeof(double));
#pragma omp parallel num_threads(ndev)
  {
    const int t = omp_get_thread_num();
    CUDA_CHECK(cudaSetDevice(t % physical));
    const size_t lo = share_lo(n, ndev, t), cnt = share_lo(n, ndev, t + 1) - lo;
    double *d_ld = NULL;
    if (cnt) CUDA_CHECK(cudaMalloc((void **)&d_ld, cnt * sizeof(double)));
    if (o.r_method == R_EXPLICIT) {
      if (cnt) {
        pfm_launch_cov_logdet(d_X[t], n, F, lo, cnt, d_ld);
        CUDA_CHECK(cudaMemcpy(ld + lo, d_ld, cnt * sizeof(double), cudaMemcpyDeviceToHost));
      }
    } else {
      /* S = (1/n) sum (x-m)(x-m)^T: each device sums its share, the host adds them. */
      if (cnt) {
        const int blocks = pfm_outer_blocks(cnt, sms[t]);
        double *d_part, *d_out;
        unsigned int *d_counter;
        CUDA_CHECK(cudaMalloc((void **)&d_part, (size_t)blocks * E * sizeof(double)));
        CUDA_CHECK(cudaMalloc((void **)&d_out, (size_t)E * sizeof(double)));
        CUDA_CHECK(cudaMalloc((void **)&d_counter, sizeof(unsigned int)));
        CUDA_CHECK(cudaMemset(d_counter, 0, sizeof(unsigned int)));
        pfm_launch_outer_sum(d_X[t], F, lo, cnt, &mean, blocks, d_part, d_counter, d_out);
        CUDA_CHECK(cudaMemcpy(Spart + (size_t)t * E, d_out, (size_t)E * sizeof(double),
                              cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaFree(d_part));
        CUDA_CHECK(cudaFree(d_out));
        CUDA_CHECK(cudaFree(d_counter));
      }
#pragma omp barrier
#pragma omp single
      {
        double S[PFM_MAX_F * PFM_MAX_F];
        int piv[PFM_MAX_F];
        for (int a = 0, e = 0; a < F; ++a)
          for (int b = a; b < F; ++b, ++e) {
            double v = 0.0;
            for (int q = 0; q < ndev; ++q) v += Spart[(size_t)q * E + e];
            S[a * F + b] = S[b * F + a] = v / (double)n;
          }
        logdet_S = pfm_host_lu(S, F, F, piv, &S_singular);
        if (!S_singular) pfm_host_lu_inverse(S, F, F, piv, Sinv);
      } /* implicit barrier: Sinv and logdet_S are visible to every thread */
      if (!S_singular && cnt) {
        double *d_Sinv;
        CUDA_CHECK(cudaMalloc((void **)&d_Sinv, (size_t)F * F * sizeof(double)));
        CUDA_CHECK(cudaMemcpy(d_Sinv, Sinv, (size_t)F * F * sizeof(double),
                              cudaMemcpyHostToDevice));
        pfm_launch_lemma_logdet(d_X[t], F, lo, cnt, &mean, d_Sinv, logdet_S, d_ld);
        CUDA_CHECK(cudaMemcpy(ld + lo, d_ld, cnt * sizeof(double), cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaFree(d_Sinv));
      }
    }
    if (d_ld) CUDA_CHECK(cudaFree(d_ld));
  }
  if (S_singular) die(PFM_EXIT_RUNTIME, "the covariance matrix S is singular");
  for (size_t i = 0; i < n; ++i)
    if (!isfinite(ld[i]))
      die(PFM_EXIT_RUNTIME, "fuzzy covariance matrix of point %zu is singular (log|C| = %g)", i,
          ld[i]);
  double r = 0.0, log_f1 = 0.0;
  const long long r_steps = r_fixed_point(ld, h.d2, n, F, h.s, &r, &log_f1);
  if (r_steps < 0)
    die(PFM_EXIT_RUNTIME, "r factor fixed point did not converge in n*F = %lld steps",
        (long long)n * F);
  const double t_r = pfm_now() - t0;

  /* ---- prototypes ---- */
  t0 = pfm_now();
  const double r2 = r * r, tol = o.eps1 * h.s;
  double *V = (double *)malloc(K * F * sizeof(double));
  int *iters = (int *)malloc(K * sizeof(int));
  int *conv = (int *)malloc(K * sizeof(int));
  long long launches = 0; /* exact mode: launches (= blocking copies back) over all devices */
  if (o.mode == MODE_EXACT) {
    double *part = (double *)calloc((size_t)ndev * (F + 1), sizeof(double));
    pfm_vec vcur;
    memset(&vcur, 0, sizeof vcur);
    int done = 0, step = 0, busy_devices = 0;
    for (int t = 0; t < ndev; ++t) busy_devices += share_lo(n, ndev, t + 1) > share_lo(n, ndev, t);
#pragma omp parallel num_threads(ndev)
    {
      const int t = omp_get_thread_num();
      CUDA_CHECK(cudaSetDevice(t % physical));
      const size_t lo = share_lo(n, ndev, t), cnt = share_lo(n, ndev, t + 1) - lo;
      const int blocks = pfm_partial_blocks(cnt, sms[t]);
      double *d_part, *d_out;
      unsigned int *d_counter;
      CUDA_CHECK(cudaMalloc((void **)&d_part, (size_t)blocks * (F + 1) * sizeof(double)));
      CUDA_CHECK(cudaMalloc((void **)&d_out, (size_t)(F + 1) * sizeof(double)));
      CUDA_CHECK(cudaMalloc((void **)&d_counter, sizeof(unsigned int)));
      CUDA_CHECK(cudaMemset(d_counter, 0, sizeof(unsigned int)));
      double *mine = part + (size_t)t * (F + 1);
      for (size_t j = 0; j < K; ++j) {
#pragma omp single
        {
          memcpy(vcur.x, V0 + j * F, F * sizeof(double));
          done = 0;
          step = 0;
        }
        while (!done) {
          if (cnt) {
            pfm_launch_proto_partial(d_X[t], F, lo, cnt, &vcur, r2, blocks, d_part, d_counter,
                                     d_out);
            CUDA_CHECK(cudaMemcpy(mine, d_out, (size_t)(F + 1) * sizeof(double),
                                  cudaMemcpyDeviceToHost));
          } else {
            memset(mine, 0, (size_t)(F + 1) * sizeof(double));
          }
#pragma omp barrier
#pragma omp single
          {
            /* Combine the devices' sums in device order, then one fixed-point step. */
            double num[PFM_MAX_F + 1];
            for (int f = 0; f <= F; ++f) {
              num[f] = 0.0;
              for (int q = 0; q < ndev; ++q) num[f] += part[(size_t)q * (F + 1) + f];
            }
            double e2 = 0.0;
            for (int f = 0; f < F; ++f) {
              const double nv = num[f] / num[F];
              e2 += (nv - vcur.x[f]) * (nv - vcur.x[f]);
              vcur.x[f] = nv;
            }
            ++step;
            launches += busy_devices; /* one launch per device with a non-empty share */
            const int ok = sqrt(e2) < tol;
            if (ok || step >= o.max_iter) {
              memcpy(V + j * F, vcur.x, F * sizeof(double));
              iters[j] = step;
              conv[j] = ok;
              done = 1;
            }
          } /* implicit barrier: vcur and done are visible to every thread */
        }
        /* Every thread must have read done == 1 before the next start's single resets it;
         * without this barrier a fast thread can reset it under a slow one, which then runs
         * another step alone and waits at a barrier the others never reach (deadlock). */
#pragma omp barrier
      }
      CUDA_CHECK(cudaFree(d_part));
      CUDA_CHECK(cudaFree(d_out));
      CUDA_CHECK(cudaFree(d_counter));
    }
    free(part);
  } else {
#pragma omp parallel num_threads(ndev)
    {
      const int t = omp_get_thread_num();
      CUDA_CHECK(cudaSetDevice(t % physical));
      const size_t klo = share_lo(K, ndev, t), kc = share_lo(K, ndev, t + 1) - klo;
      if (kc) {
        double *d_V0, *d_V;
        int *d_it, *d_cv;
        CUDA_CHECK(cudaMalloc((void **)&d_V0, kc * F * sizeof(double)));
        CUDA_CHECK(cudaMalloc((void **)&d_V, kc * F * sizeof(double)));
        CUDA_CHECK(cudaMalloc((void **)&d_it, kc * sizeof(int)));
        CUDA_CHECK(cudaMalloc((void **)&d_cv, kc * sizeof(int)));
        CUDA_CHECK(cudaMemcpy(d_V0, V0 + klo * F, kc * F * sizeof(double),
                              cudaMemcpyHostToDevice));
        pfm_launch_proto_batched(d_X[t], n, F, d_V0, kc, r2, tol, o.max_iter, sms[t], d_V, d_it,
                                 d_cv);
        CUDA_CHECK(cudaMemcpy(V + klo * F, d_V, kc * F * sizeof(double), cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(iters + klo, d_it, kc * sizeof(int), cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(conv + klo, d_cv, kc * sizeof(int), cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaFree(d_V0));
        CUDA_CHECK(cudaFree(d_V));
        CUDA_CHECK(cudaFree(d_it));
        CUDA_CHECK(cudaFree(d_cv));
      }
    }
  }
  /* First-found merge in start order: identical to the sequential loop. */
  const double thr = o.eps2 * h.s * h.s;
  double *P = (double *)malloc(K * F * sizeof(double));
  size_t np = 0, unconverged = 0;
  long long steps = 0;
  int max_steps = 0;
  for (size_t j = 0; j < K; ++j) {
    const double *v = V + j * F;
    int keep = 1;
    for (size_t q = 0; q < np && keep; ++q) {
      double e2 = 0.0;
      for (int f = 0; f < F; ++f) e2 += (v[f] - P[q * F + f]) * (v[f] - P[q * F + f]);
      if (!(e2 > thr)) keep = 0;
    }
    if (keep) memcpy(P + np++ * F, v, F * sizeof(double));
    if (!conv[j]) ++unconverged;
    steps += iters[j];
    if (iters[j] > max_steps) max_steps = iters[j];
  }
  const double t_p = pfm_now() - t0;

  /* Release the devices' copies of X (each by its own thread's device). */
#pragma omp parallel num_threads(ndev)
  {
    const int t = omp_get_thread_num();
    CUDA_CHECK(cudaSetDevice(t % physical));
    CUDA_CHECK(cudaFree(d_X[t]));
  }
  const double t_total = pfm_now() - t_start;

  /* ---- output ---- */
  if (unconverged)
    fprintf(stderr, "pfm: warning: %zu of %zu starts did not converge in %d steps\n",
            unconverged, K, o.max_iter);
  for (size_t q = 0; q < np; ++q)
    for (int f = 0; f < F; ++f) fprintf(out, "%.17g%c", P[q * F + f], f + 1 < F ? ',' : '\n');
  if (out != stdout && fclose(out)) die(PFM_EXIT_RUNTIME, "--out %s: write failed", o.out);
  const char *mode = o.mode == MODE_EXACT ? "exact" : "batched";
  const char *rm = o.r_method == R_EXPLICIT ? "explicit" : "lemma";
  if (jf) {
    fprintf(jf, "{\n  \"program\": \"pfm\",\n  \"input\": ");
    pfm_json_string(jf, o.input);
    fprintf(jf,
            ",\n  \"n\": %zu,\n  \"F\": %d,\n  \"mode\": \"%s\",\n  \"r_method\": \"%s\",\n"
            "  \"devices\": %d,\n  \"device_count\": %d,\n  \"physical_devices\": %d,\n"
            "  \"starts\": %zu,\n"
            "  \"eps1\": %.17g,\n  \"eps2\": %.17g,\n  \"max_iter\": %d,\n"
            "  \"scale\": %.17g,\n  \"r\": %.17g,\n  \"log_f1\": %.17g,\n"
            "  \"r_iterations\": %lld,\n  \"n_prototypes\": %zu,\n  \"unconverged\": %zu,\n"
            "  \"steps\": %lld,\n  \"max_steps\": %d,\n  \"exact_launches\": %lld,\n",
            n, F, mode, rm, ndev, count, physical, K, o.eps1, o.eps2, o.max_iter, h.s, r, log_f1,
            r_steps, np, unconverged, steps, max_steps, launches);
    fprintf(jf,
            "  \"times\": {\"load\": %.6f, \"init\": %.6f, \"r_factor\": %.6f, "
            "\"prototypes\": %.6f, \"total\": %.6f},\n",
            t_load, t_init, t_r, t_p, t_total);
    fprintf(jf, "  \"prototypes\": [");
    for (size_t q = 0; q < np; ++q) {
      fprintf(jf, "%s[", q ? ",\n    " : "\n    ");
      for (int f = 0; f < F; ++f) fprintf(jf, "%.17g%s", P[q * F + f], f + 1 < F ? ", " : "");
      fputc(']', jf);
    }
    fprintf(jf, "%s]\n}\n", np ? "\n  " : "");
    if (fclose(jf)) die(PFM_EXIT_RUNTIME, "--json %s: write failed", o.json);
  }
  if (!o.quiet)
    fprintf(stderr,
            "pfm: n=%zu F=%d r=%.10g prototypes=%zu mode=%s r-method=%s devices=%d starts=%zu "
            "times: load %.3f init %.3f r %.3f prototypes %.3f total %.3f s\n",
            n, F, r, np, mode, rm, ndev, K, t_load, t_init, t_r, t_p, t_total);
  free(P);
  free(V);
  free(iters);
  free(conv);
  free(V0);
  free(ld);
  free(Spart);
  free(Sinv);
  free(h.d2);
  free(d.x);
  free(d_X);
  free(sms);
  return 0;
}
