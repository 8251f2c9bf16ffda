/* io.cu - input, host-side linear algebra and small utilities of the pfm program.
 *
 * Nothing here calls the CUDA runtime except pfm_cuda_fail's cudaGetErrorName/String (which
 * only format an error that already happened): loading and validation must work, and report
 * bad input, on a machine without a GPU. The accepted formats match farcuda.pfm.data (Python):
 *   - PFMD binary: "PFMD", u32 version (1), u64 n, u64 F, then n*F float64, all little-endian;
 *   - text: one point per line, values separated by commas and/or whitespace; blank lines and
 *     lines starting with '#' are skipped; all rows the same length; finite decimal numbers.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pfm.h"

void pfm_cuda_fail(cudaError_t err, const char *call, const char *file, int line) {
  fprintf(stderr, "pfm: CUDA error at %s:%d: %s: %s: %s\n", file, line, call,
          cudaGetErrorName(err), cudaGetErrorString(err));
  fflush(stderr);
  exit(PFM_EXIT_RUNTIME);
}

double pfm_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void pfm_json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; ++s) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* Whole file into memory (files here are at most a few hundred MB). */
static int read_all(const char *path, unsigned char **buf, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT) return fail(err, errlen, "%s: no such file", path);
    return fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  }
  size_t cap = 1 << 16, n = 0;
  unsigned char *b = (unsigned char *)malloc(cap + 1);
  if (!b) {
    fclose(f);
    return fail(err, errlen, "%s: out of memory", path);
  }
  for (;;) {
    if (n == cap) {
      cap *= 2;
      unsigned char *nb = (unsigned char *)realloc(b, cap + 1);
      if (!nb) {
        free(b);
        fclose(f);
        return fail(err, errlen, "%s: out of memory", path);
      }
      b = nb;
    }
    size_t got = fread(b + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(b);
    return fail(err, errlen, "%s: read error (is it a directory?)", path);
  }
  b[n] = 0; /* the text parser relies on a terminating NUL */
  *buf = b;
  *len = n;
  return 0;
}

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) {
  return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static int load_binary(const char *path, const unsigned char *b, size_t len, pfm_data *out,
                       char *err, size_t errlen) {
  if (len < 24) return fail(err, errlen, "%s: truncated PFMD header (%zu bytes)", path, len);
  uint32_t version = le32(b + 4);
  uint64_t n = le64(b + 8), nf = le64(b + 16);
  if (version != 1) return fail(err, errlen, "%s: unsupported PFMD version %u", path, version);
  if (n == 0 || nf == 0)
    return fail(err, errlen, "%s: empty data (n=%llu, F=%llu)", path, (unsigned long long)n,
                (unsigned long long)nf);
  if (nf > PFM_MAX_F)
    return fail(err, errlen, "%s: F=%llu features exceeds the limit of %d (PFM_MAX_F)", path,
                (unsigned long long)nf, PFM_MAX_F);
  /* n*F*8 could overflow for a hostile header: compare against the payload instead. */
  uint64_t payload = (uint64_t)(len - 24);
  if (n > payload / (8 * nf) || payload != n * nf * 8)
    return fail(err, errlen,
                "%s: size %zu bytes does not match header (n=%llu, F=%llu: expected %llu)", path,
                len, (unsigned long long)n, (unsigned long long)nf,
                (unsigned long long)(24 + n * nf * 8));
  double *x = (double *)malloc(payload);
  if (!x) return fail(err, errlen, "%s: out of memory", path);
  memcpy(x, b + 24, payload); /* little-endian host assumed (x86-64, aarch64) */
  for (uint64_t k = 0; k < n * nf; ++k)
    if (!isfinite(x[k])) {
      free(x);
      return fail(err, errlen, "%s: non-finite value (NaN/inf) at point %llu, feature %llu",
                  path, (unsigned long long)(k / nf), (unsigned long long)(k % nf));
    }
  out->n = (size_t)n;
  out->F = (int)nf;
  out->x = x;
  return 0;
}

static int is_sep(char c) {
  return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int load_text(const char *path, char *text, pfm_data *out, char *err, size_t errlen) {
  size_t cap = 0, count = 0, rows = 0;
  double *x = NULL;
  int width = -1;
  size_t lineno = 0;
  char *line = text;
  while (*line) {
    char *end = strchr(line, '\n');
    char *next = end ? end + 1 : line + strlen(line);
    if (end) *end = 0;
    ++lineno;
    char *p = line;
    while (*p && is_sep(*p)) ++p;
    if (*p && *p != '#') {
      /* Count the row's values first, so a ragged or too wide row is reported with its size. */
      int got = 0;
      for (char *q = p; *q;) {
        ++got;
        while (*q && !is_sep(*q)) ++q;
        while (*q && is_sep(*q)) ++q;
      }
      if (width < 0 && got > PFM_MAX_F) {
        free(x);
        return fail(err, errlen, "%s:%zu: F=%d features exceeds the limit of %d (PFM_MAX_F)",
                    path, lineno, got, PFM_MAX_F);
      }
      if (width >= 0 && got != width) {
        free(x);
        return fail(err, errlen, "%s:%zu: ragged row: %d values, expected %d", path, lineno, got,
                    width);
      }
      width = got;
      if (count + got > cap) {
        cap = cap ? 2 * cap : 4096;
        while (cap < count + got) cap *= 2;
        double *nx = (double *)realloc(x, cap * sizeof(double));
        if (!nx) {
          free(x);
          return fail(err, errlen, "%s: out of memory", path);
        }
        x = nx;
      }
      while (*p) {
        char *tok = p;
        while (*p && !is_sep(*p)) ++p;
        char saved = *p;
        *p = 0;
        /* strtod also takes hex floats; the Python loader does not, so neither do we. */
        char *stop = NULL;
        double v = (strchr(tok, 'x') || strchr(tok, 'X')) ? 0.0 : strtod(tok, &stop);
        if (!stop || *stop || stop == tok) {
          free(x);
          return fail(err, errlen, "%s:%zu: not a number: '%s'", path, lineno, tok);
        }
        if (!isfinite(v)) {
          free(x);
          return fail(err, errlen, "%s:%zu: non-finite value '%s' (NaN/inf)", path, lineno, tok);
        }
        x[count++] = v;
        *p = saved;
        while (*p && is_sep(*p)) ++p;
      }
      ++rows;
    }
    line = next;
  }
  if (rows == 0) {
    free(x);
    return fail(err, errlen, "%s: no data rows", path);
  }
  out->n = rows;
  out->F = width;
  out->x = x;
  return 0;
}

int pfm_load(const char *path, pfm_data *out, char *err, size_t errlen) {
  unsigned char *b = NULL;
  size_t len = 0;
  if (read_all(path, &b, &len, err, errlen)) return -1;
  int rc;
  if (len >= 4 && memcmp(b, "PFMD", 4) == 0) {
    rc = load_binary(path, b, len, out, err, errlen);
  } else if (len >= 2 && b[0] == 0x1f && b[1] == 0x8b) {
    rc = fail(err, errlen,
              "%s: gzip-compressed input is not read by the C program; decompress it, or "
              "convert it: python -m farcuda.pfm convert %s OUT.pfmd",
              path, path);
  } else if (memchr(b, 0, len)) {
    rc = fail(err, errlen, "%s: not a text file (NUL bytes) and not PFMD binary", path);
  } else {
    rc = load_text(path, (char *)b, out, err, errlen);
  }
  free(b);
  return rc;
}

double pfm_host_lu(double *A, int F, int lda, int *piv, int *singular) {
  double ld = 0.0;
  *singular = 0;
  for (int k = 0; k < F; ++k) {
    int p = k;
    double best = fabs(A[k * lda + k]);
    for (int r = k + 1; r < F; ++r)
      if (fabs(A[r * lda + k]) > best) {
        best = fabs(A[r * lda + k]);
        p = r;
      }
    piv[k] = p;
    if (p != k)
      for (int j = 0; j < F; ++j) {
        double t = A[k * lda + j];
        A[k * lda + j] = A[p * lda + j];
        A[p * lda + j] = t;
      }
    double pk = A[k * lda + k];
    if (pk == 0.0) {
      *singular = 1;
      return -INFINITY;
    }
    ld += log(fabs(pk));
    for (int r = k + 1; r < F; ++r) {
      double l = A[r * lda + k] / pk;
      A[r * lda + k] = l;
      for (int j = k + 1; j < F; ++j) A[r * lda + j] -= l * A[k * lda + j];
    }
  }
  return ld;
}

void pfm_host_lu_inverse(const double *LU, int F, int lda, const int *piv, double *inv) {
  /* Solve A X = I column by column: P A = L U, so X = U^-1 L^-1 P. */
  double *col = (double *)malloc((size_t)F * sizeof(double));
  for (int c = 0; c < F; ++c) {
    for (int i = 0; i < F; ++i) col[i] = (i == c) ? 1.0 : 0.0;
    for (int k = 0; k < F; ++k) /* apply the row swaps in factorisation order */
      if (piv[k] != k) {
        double t = col[k];
        col[k] = col[piv[k]];
        col[piv[k]] = t;
      }
    for (int i = 0; i < F; ++i) /* forward: L has a unit diagonal */
      for (int k = 0; k < i; ++k) col[i] -= LU[i * lda + k] * col[k];
    for (int i = F - 1; i >= 0; --i) { /* backward */
      for (int k = i + 1; k < F; ++k) col[i] -= LU[i * lda + k] * col[k];
      col[i] /= LU[i * lda + i];
    }
    for (int i = 0; i < F; ++i) inv[i * F + c] = col[i];
  }
  free(col);
}
