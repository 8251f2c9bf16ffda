// load: one tenant of the load tests (tests/integration/test_load.py, tests/gpu/test_load_gpu.py,
// bench/load.py). Runs for a given time, checks every result against the host's own
// computation, and ends with one JSON line on stdout: operations and latency per kind.
//
// Usage: load DURATION_S SEED MODE [MAX_KIB=2048 [-]]
//   mixed      until DURATION_S is over, iterations of: cudaMalloc/cudaFree of varying sizes
//              (log-uniform, 1 KiB..MAX_KIB), pageable H2D copies of random data, a kernel
//              that transforms it (out[i] = in[i]*mul + (i ^ key), uint32), cudaMemset of a
//              random range, pageable D2H copies; then a two-stream pipeline from pinned
//              memory (async H2D, kernel, event, cross-stream wait, second kernel,
//              cudaMemsetAsync, async D2H, event synchronization); long-lived allocations
//              filled with a byte and verified before they are freed (no other tenant may
//              touch them); a cudaDeviceSynchronize every 8 iterations. Iterations alternate
//              over every device cudaGetDeviceCount shows.
//   nokernels  the same with device-to-device copies where mixed launches kernels: runs on
//              farcuda's in-memory fake GPU (CI), which executes no kernels.
//   flood      tiny kernels on one stream, never synchronized, until DURATION_S is over (or
//              the process is killed); it exits with its work still queued.
//   fault      checked kernels for the first quarter of DURATION_S, then a kernel writing to
//              an illegal address: the next synchronization must return
//              cudaErrorIllegalAddress, and so must every later call that needs the device,
//              round after round until DURATION_S is over.
// After its setup (contexts, streams, pinned buffers) the program prints "ready"; with "-" as
// the last argument it then waits for a line on stdin, so that many tenants start their
// timed loops together. DURATION_S counts from there. The flood prints "progress
// launches=N elapsed_s=T" about every second (it is usually killed).
//
// Output: {"mode":..., "iterations":N, "errors":0, "ops":{kind:n}, "p50_us":{kind:..},
// "p99_us":{kind:..}, "hist":{kind:[[bucket,count],...]}, "bytes_h2d":.., "bytes_d2h":..,
// ...}. Latencies are wall times of the calls on the host (an async call: the time to
// enqueue it; a synchronization: the wait), binned in buckets of 2^(1/16) (4.4%): bucket b
// holds [2^(b/16), 2^((b+1)/16)) ns, so that the histograms of many tenants add up and their
// percentiles can be taken together. Kind "iteration" is a whole iteration (a round of the
// fault mode's failing calls, a launch of the flood).
// Any CUDA error or wrong result: "FAIL ..." on stdout and exit 1.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

// ------------------------------------------------------------------ failing loudly

static void fail(const char* what, int line, const char* detail) {
  printf("FAIL line %d: %s -> %s\n", line, what, detail);
  fflush(stdout);
  exit(1);
}

#define CHECK(call)                                                   \
  do {                                                                \
    cudaError_t e_ = (call);                                          \
    if (e_ != cudaSuccess) fail(#call, __LINE__, cudaGetErrorName(e_)); \
  } while (0)

// ------------------------------------------------------------------ time, randomness

static double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Set up: say so, and wait for the word to start (a line on stdin) when told to.
static void ready(bool wait) {
  printf("ready\n");
  fflush(stdout);
  if (!wait) return;
  char line[64];
  if (!fgets(line, sizeof line, stdin)) fail("waiting for the start on stdin", __LINE__, "EOF");
}

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL) {
    if (!s) s = 1;
  }
  uint64_t next() {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
  }
  uint32_t u32() { return (uint32_t)(next() >> 32); }
  size_t below(size_t n) { return (size_t)(next() % n); }
  double unit() { return (double)(next() >> 11) * (1.0 / 9007199254740992.0); }
};

// ------------------------------------------------------------------ latency statistics

enum Kind { MALLOC, FREE, H2D, H2D_PINNED, D2H, D2H_PINNED, D2D, MEMSET, LAUNCH, EVENT, SYNC,
            ITERATION, NKINDS };
static const char* const KIND_NAMES[NKINDS] = {
    "malloc", "free", "h2d", "h2d_pinned", "d2h", "d2h_pinned", "d2d", "memset", "launch",
    "event", "sync", "iteration"};

const int NBUCKETS = 16 * 40;  // up to 2^40 ns (18 minutes)

struct Stats {
  std::vector<uint64_t> hist[NKINDS];
  uint64_t ops[NKINDS] = {};
  uint64_t bytes_h2d = 0, bytes_d2h = 0, bytes_d2d = 0;
  Stats() {
    for (auto& h : hist) h.assign(NBUCKETS, 0);
  }
  void add(Kind k, double seconds) {
    double ns = seconds * 1e9;
    int b = ns < 1.0 ? 0 : (int)(16.0 * std::log2(ns));
    if (b >= NBUCKETS) b = NBUCKETS - 1;
    hist[k][b]++;
    ops[k]++;
  }
  // The value of bucket b, in microseconds: its geometric middle.
  static double bucket_us(int b) { return std::exp2((b + 0.5) / 16.0) / 1000.0; }
  double percentile_us(Kind k, double q) const {
    uint64_t rank = (uint64_t)std::ceil(q * (double)ops[k]);
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < NBUCKETS; b++) {
      seen += hist[k][b];
      if (seen >= rank) return bucket_us(b);
    }
    return bucket_us(NBUCKETS - 1);
  }
};

static Stats g_stats;

// Time one call of a kind: TIMED(KIND, cudaCall(...)) checks it too.
#define TIMED(kind, call)                            \
  do {                                               \
    double t0_ = now_s();                            \
    cudaError_t e_ = (call);                         \
    g_stats.add(kind, now_s() - t0_);                \
    if (e_ != cudaSuccess) fail(#call, __LINE__, cudaGetErrorName(e_)); \
  } while (0)

static void print_json(const char* mode, uint64_t seed, int devices, double duration,
                       uint64_t iterations, const std::string& extra) {
  std::string s;
  char buf[256];
  snprintf(buf, sizeof buf,
           "{\"mode\":\"%s\",\"seed\":%llu,\"devices\":%d,\"duration_s\":%.6f,"
           "\"iterations\":%llu,\"errors\":0,\"bytes_h2d\":%llu,"
           "\"bytes_d2h\":%llu,\"bytes_d2d\":%llu",
           mode, (unsigned long long)seed, devices, duration, (unsigned long long)iterations,
           (unsigned long long)g_stats.bytes_h2d, (unsigned long long)g_stats.bytes_d2h,
           (unsigned long long)g_stats.bytes_d2d);
  s += buf;
  s += extra;
  const char* sections[3] = {"ops", "p50_us", "p99_us"};
  for (int sec = 0; sec < 3; sec++) {
    s += ",\"";
    s += sections[sec];
    s += "\":{";
    bool first = true;
    for (int k = 0; k < NKINDS; k++) {
      if (!g_stats.ops[k]) continue;
      if (sec == 0)
        snprintf(buf, sizeof buf, "%s\"%s\":%llu", first ? "" : ",", KIND_NAMES[k],
                 (unsigned long long)g_stats.ops[k]);
      else
        snprintf(buf, sizeof buf, "%s\"%s\":%.2f", first ? "" : ",", KIND_NAMES[k],
                 g_stats.percentile_us((Kind)k, sec == 1 ? 0.50 : 0.99));
      s += buf;
      first = false;
    }
    s += "}";
  }
  s += ",\"hist\":{";
  bool first_kind = true;
  for (int k = 0; k < NKINDS; k++) {
    if (!g_stats.ops[k]) continue;
    s += first_kind ? "\"" : ",\"";
    s += KIND_NAMES[k];
    s += "\":[";
    bool first = true;
    for (int b = 0; b < NBUCKETS; b++) {
      if (!g_stats.hist[k][b]) continue;
      snprintf(buf, sizeof buf, "%s[%d,%llu]", first ? "" : ",", b,
               (unsigned long long)g_stats.hist[k][b]);
      s += buf;
      first = false;
    }
    s += "]";
    first_kind = false;
  }
  s += "}}";
  printf("%s\n", s.c_str());
  fflush(stdout);
}

// ------------------------------------------------------------------ kernels

__global__ void transform(const uint32_t* in, uint32_t* out, size_t n, uint32_t mul,
                          uint32_t key) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = in[i] * mul + ((uint32_t)i ^ key);
}

__global__ void tiny(uint32_t* counter) { counter[threadIdx.x] += 1; }

__global__ void bad_write(uint32_t* p) { *p = 0xDEAD; }

static uint32_t expect_transform(uint32_t x, size_t i, uint32_t mul, uint32_t key) {
  return x * mul + ((uint32_t)i ^ key);
}

static unsigned grid_for(size_t n) {
  size_t g = (n + 255) / 256;
  return (unsigned)(g < 1024 ? (g ? g : 1) : 1024);
}

// ------------------------------------------------------------------ the mixed workload

const int KEEP_SLOTS = 4;

struct Kept {
  uint8_t* ptr = nullptr;
  size_t bytes = 0;
  uint8_t value = 0;
};

struct Device {
  cudaStream_t s[2];
  cudaEvent_t produced, done;
  uint32_t *pin_in, *pin_out;
  Kept kept[KEEP_SLOTS];
};

static size_t pick_words(Rng& rng, size_t max_bytes) {
  // log-uniform between 1 KiB and max_bytes, then a few words either way
  double lo = std::log2(1024.0), hi = std::log2((double)max_bytes);
  size_t bytes = (size_t)std::exp2(lo + (hi - lo) * rng.unit());
  size_t words = bytes / 4 + rng.below(7);
  return words > max_bytes / 4 ? max_bytes / 4 : words;
}

static void check_words(const uint32_t* got, const uint32_t* want, size_t n, const char* what,
                        uint64_t iteration) {
  if (memcmp(got, want, n * 4) == 0) return;
  size_t i = 0;
  while (got[i] == want[i]) i++;
  char detail[200];
  snprintf(detail, sizeof detail, "iteration %llu word %zu of %zu: got 0x%08x, want 0x%08x",
           (unsigned long long)iteration, i, n, got[i], want[i]);
  fail(what, 0, detail);
}

// The byte pattern of cudaMemset(value) over words [off, off+len) of want.
static void apply_memset(uint32_t* want, size_t off, size_t len, uint8_t value) {
  memset(want + off, value, len * 4);
}

static void verify_kept(Kept& k, std::vector<uint8_t>& scratch, uint64_t iteration) {
  scratch.resize(k.bytes);
  TIMED(D2H, cudaMemcpy(scratch.data(), k.ptr, k.bytes, cudaMemcpyDeviceToHost));
  g_stats.bytes_d2h += k.bytes;
  for (size_t i = 0; i < k.bytes; i++) {
    if (scratch[i] != k.value) {
      char detail[160];
      snprintf(detail, sizeof detail, "iteration %llu byte %zu of %zu: got %u, want %u",
               (unsigned long long)iteration, i, k.bytes, scratch[i], k.value);
      fail("long-lived allocation changed", 0, detail);
    }
  }
}

static int run_mixed(double duration, uint64_t seed, bool kernels, size_t max_bytes,
                     bool wait) {
  int ndev = 0;
  CHECK(cudaGetDeviceCount(&ndev));
  if (ndev < 1) fail("cudaGetDeviceCount", __LINE__, "no device");
  std::vector<Device> devs(ndev);
  const size_t max_words = max_bytes / 4;
  for (int d = 0; d < ndev; d++) {
    Device& v = devs[d];
    CHECK(cudaSetDevice(d));
    CHECK(cudaFree(nullptr));  // the context, before the clock starts
    CHECK(cudaStreamCreate(&v.s[0]));
    CHECK(cudaStreamCreateWithFlags(&v.s[1], cudaStreamNonBlocking));
    CHECK(cudaEventCreateWithFlags(&v.produced, cudaEventDisableTiming));
    CHECK(cudaEventCreateWithFlags(&v.done, cudaEventDisableTiming));
    CHECK(cudaMallocHost((void**)&v.pin_in, max_bytes));
    CHECK(cudaHostAlloc((void**)&v.pin_out, max_bytes, cudaHostAllocDefault));
  }
  std::vector<uint32_t> in(max_words), want(max_words), out(max_words);
  std::vector<uint8_t> scratch;
  Rng rng(seed);

  ready(wait);
  const double t_start = now_s(), t_end = t_start + duration;
  uint64_t it = 0;
  for (; now_s() < t_end; it++) {
    const double t_iter = now_s();
    const int d = (int)(it % (uint64_t)ndev);
    Device& v = devs[d];
    CHECK(cudaSetDevice(d));
    const size_t n = pick_words(rng, max_bytes), bytes = n * 4;

    // --- synchronous part: pageable copies, a kernel (or a device copy), a memset
    uint32_t *a = nullptr, *b = nullptr;
    TIMED(MALLOC, cudaMalloc((void**)&a, bytes));
    TIMED(MALLOC, cudaMalloc((void**)&b, bytes));
    for (size_t i = 0; i < n; i++) in[i] = rng.u32();
    TIMED(H2D, cudaMemcpy(a, in.data(), bytes, cudaMemcpyHostToDevice));
    g_stats.bytes_h2d += bytes;
    const uint32_t mul = rng.u32() | 1, key = rng.u32();
    if (kernels) {
      double t0 = now_s();
      transform<<<grid_for(n), 256, 0, v.s[0]>>>(a, b, n, mul, key);
      cudaError_t e = cudaGetLastError();
      g_stats.add(LAUNCH, now_s() - t0);
      if (e != cudaSuccess) fail("transform<<<>>>", __LINE__, cudaGetErrorName(e));
      for (size_t i = 0; i < n; i++) want[i] = expect_transform(in[i], i, mul, key);
    } else {
      TIMED(D2D, cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, v.s[0]));
      g_stats.bytes_d2d += bytes;
      memcpy(want.data(), in.data(), bytes);
    }
    TIMED(SYNC, cudaStreamSynchronize(v.s[0]));
    size_t off = rng.below(n), len = rng.below(n - off + 1);
    uint8_t value = (uint8_t)rng.u32();
    TIMED(MEMSET, cudaMemset(b + off, value, len * 4));
    apply_memset(want.data(), off, len, value);
    TIMED(D2H, cudaMemcpy(out.data(), b, bytes, cudaMemcpyDeviceToHost));
    g_stats.bytes_d2h += bytes;
    check_words(out.data(), want.data(), n, kernels ? "kernel + memset, D2H" :
                "device copy + memset, D2H", it);

    // --- two streams from pinned memory: s0 produces into b, s1 waits for it and
    // writes a, then a goes back to pinned memory
    for (size_t i = 0; i < n; i++) v.pin_in[i] = rng.u32();
    const uint32_t mul2 = rng.u32() | 1, key2 = rng.u32(), mul3 = rng.u32() | 1,
                   key3 = rng.u32();
    TIMED(H2D_PINNED, cudaMemcpyAsync(a, v.pin_in, bytes, cudaMemcpyHostToDevice, v.s[0]));
    g_stats.bytes_h2d += bytes;
    if (kernels) {
      double t0 = now_s();
      transform<<<grid_for(n), 256, 0, v.s[0]>>>(a, b, n, mul2, key2);
      cudaError_t e = cudaGetLastError();
      g_stats.add(LAUNCH, now_s() - t0);
      if (e != cudaSuccess) fail("transform<<<>>> on stream 0", __LINE__, cudaGetErrorName(e));
    } else {
      TIMED(D2D, cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, v.s[0]));
      g_stats.bytes_d2d += bytes;
    }
    TIMED(EVENT, cudaEventRecord(v.produced, v.s[0]));
    TIMED(EVENT, cudaStreamWaitEvent(v.s[1], v.produced, 0));
    if (kernels) {
      double t0 = now_s();
      transform<<<grid_for(n), 256, 0, v.s[1]>>>(b, a, n, mul3, key3);
      cudaError_t e = cudaGetLastError();
      g_stats.add(LAUNCH, now_s() - t0);
      if (e != cudaSuccess) fail("transform<<<>>> on stream 1", __LINE__, cudaGetErrorName(e));
      for (size_t i = 0; i < n; i++)
        want[i] = expect_transform(expect_transform(v.pin_in[i], i, mul2, key2), i, mul3, key3);
    } else {
      TIMED(D2D, cudaMemcpyAsync(a, b, bytes, cudaMemcpyDeviceToDevice, v.s[1]));
      g_stats.bytes_d2d += bytes;
      memcpy(want.data(), v.pin_in, bytes);
    }
    off = rng.below(n);
    len = rng.below(n - off + 1);
    value = (uint8_t)rng.u32();
    TIMED(MEMSET, cudaMemsetAsync(a + off, value, len * 4, v.s[1]));
    apply_memset(want.data(), off, len, value);
    memset(v.pin_out, 0xA5, bytes);  // stale data must not pass for a result
    TIMED(D2H_PINNED, cudaMemcpyAsync(v.pin_out, a, bytes, cudaMemcpyDeviceToHost, v.s[1]));
    g_stats.bytes_d2h += bytes;
    TIMED(EVENT, cudaEventRecord(v.done, v.s[1]));
    TIMED(SYNC, cudaEventSynchronize(v.done));
    check_words(v.pin_out, want.data(), n, "two-stream pipeline, pinned D2H", it);
    TIMED(FREE, cudaFree(a));
    TIMED(FREE, cudaFree(b));

    // --- a long-lived allocation: verify and free it, or make one
    Kept& k = v.kept[rng.below(KEEP_SLOTS)];
    if (k.ptr) {
      verify_kept(k, scratch, it);
      TIMED(FREE, cudaFree(k.ptr));
      k.ptr = nullptr;
    } else {
      k.bytes = 4096 + rng.below(256 << 10);
      k.value = (uint8_t)rng.u32();
      TIMED(MALLOC, cudaMalloc((void**)&k.ptr, k.bytes));
      TIMED(MEMSET, cudaMemset(k.ptr, k.value, k.bytes));
    }
    if (it % 8 == 7) TIMED(SYNC, cudaDeviceSynchronize());
    g_stats.add(ITERATION, now_s() - t_iter);
  }
  const double elapsed = now_s() - t_start;

  for (int d = 0; d < ndev; d++) {
    Device& v = devs[d];
    CHECK(cudaSetDevice(d));
    for (Kept& k : v.kept) {
      if (!k.ptr) continue;
      verify_kept(k, scratch, it);
      TIMED(FREE, cudaFree(k.ptr));
    }
    CHECK(cudaStreamDestroy(v.s[0]));
    CHECK(cudaStreamDestroy(v.s[1]));
    CHECK(cudaEventDestroy(v.produced));
    CHECK(cudaEventDestroy(v.done));
    CHECK(cudaFreeHost(v.pin_in));
    CHECK(cudaFreeHost(v.pin_out));
    CHECK(cudaDeviceSynchronize());
  }
  CHECK(cudaGetLastError());
  print_json(kernels ? "mixed" : "nokernels", seed, ndev, elapsed, it, "");
  return 0;
}

// ------------------------------------------------------------------ misbehaving tenants

static int run_flood(double duration, uint64_t seed, bool wait) {
  cudaStream_t s;
  uint32_t* counter;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CHECK(cudaMalloc((void**)&counter, 32 * sizeof(uint32_t)));
  ready(wait);
  const double t_start = now_s(), t_end = t_start + duration;
  double t_progress = t_start + 1;
  uint64_t launches = 0;
  for (;;) {
    double t0 = now_s();
    tiny<<<1, 32, 0, s>>>(counter);
    cudaError_t e = cudaGetLastError();
    double t1 = now_s();
    g_stats.add(LAUNCH, t1 - t0);
    if (e != cudaSuccess) fail("tiny<<<>>>", __LINE__, cudaGetErrorName(e));
    launches++;
    if (t1 >= t_progress) {
      printf("progress launches=%llu elapsed_s=%.3f\n", (unsigned long long)launches,
             t1 - t_start);
      fflush(stdout);
      t_progress = t1 + 1;
    }
    if (t1 >= t_end) break;
  }
  // No synchronization, no cleanup: the work is still queued when the process ends.
  print_json("flood", seed, 1, now_s() - t_start, launches, "");
  return 0;
}

static int run_fault(double duration, uint64_t seed, bool wait) {
  cudaStream_t s;
  cudaEvent_t ev;
  uint32_t *d_buf, host[64] = {}, back[64];
  const size_t n = 64;
  CHECK(cudaStreamCreate(&s));
  CHECK(cudaEventCreate(&ev));
  CHECK(cudaMalloc((void**)&d_buf, n * 4));
  ready(wait);
  const double t_start = now_s(), t_end = t_start + duration;
  Rng rng(seed);
  uint64_t healthy = 0;
  while (now_s() < t_start + duration / 4) {  // a real tenant first
    for (size_t i = 0; i < n; i++) host[i] = rng.u32();
    const uint32_t mul = rng.u32() | 1, key = rng.u32();
    CHECK(cudaMemcpy(d_buf, host, n * 4, cudaMemcpyHostToDevice));
    transform<<<1, 64, 0, s>>>(d_buf, d_buf, n, mul, key);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpyAsync(back, d_buf, n * 4, cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    for (size_t i = 0; i < n; i++)
      if (back[i] != expect_transform(host[i], i, mul, key))
        fail("healthy kernel before the fault", __LINE__, "wrong result");
    healthy++;
  }
  bad_write<<<1, 1, 0, s>>>((uint32_t*)0x10);
  cudaError_t launched = cudaGetLastError();  // success, or the fault already reported
  cudaError_t first = cudaDeviceSynchronize();
  if (first != cudaErrorIllegalAddress)
    fail("cudaDeviceSynchronize after the faulting kernel", __LINE__, cudaGetErrorName(first));

  // Every later call that needs the device must fail the same way.
  uint64_t rounds = 0, calls = 0;
  auto expect = [&](cudaError_t e, const char* what) {
    calls++;
    if (e != cudaErrorIllegalAddress) fail(what, __LINE__, cudaGetErrorName(e));
  };
  do {
    double t0 = now_s();
    uint32_t* p = nullptr;
    expect(cudaDeviceSynchronize(), "cudaDeviceSynchronize after the fault");
    expect(cudaMalloc((void**)&p, 4096), "cudaMalloc after the fault");
    expect(cudaMemcpy(d_buf, host, n * 4, cudaMemcpyHostToDevice), "H2D after the fault");
    expect(cudaMemcpy(back, d_buf, n * 4, cudaMemcpyDeviceToHost), "D2H after the fault");
    expect(cudaMemset(d_buf, 0, n * 4), "cudaMemset after the fault");
    expect(cudaStreamSynchronize(s), "cudaStreamSynchronize after the fault");
    expect(cudaEventRecord(ev, s), "cudaEventRecord after the fault");
    // The failed calls left their error as the last one; taking it clears it (as in CUDA), so
    // that the launch must set it again.
    expect(cudaGetLastError(), "cudaGetLastError after the failed calls");
    transform<<<1, 64, 0, s>>>(d_buf, d_buf, n, 3, 5);
    expect(cudaGetLastError(), "a launch after the fault");
    g_stats.add(ITERATION, now_s() - t0);
    rounds++;
    timespec ts = {0, 2000000};  // keep trying, without spinning a core
    nanosleep(&ts, nullptr);
  } while (now_s() < t_end);
  char extra[200];
  snprintf(extra, sizeof extra,
           ",\"healthy_iterations\":%llu,\"launch_status\":\"%s\",\"fault_status\":\"%s\","
           "\"calls_after_fault\":%llu",
           (unsigned long long)healthy, cudaGetErrorName(launched), cudaGetErrorName(first),
           (unsigned long long)calls);
  print_json("fault", seed, 1, now_s() - t_start, rounds, extra);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s DURATION_S SEED mixed|nokernels|flood|fault [MAX_KIB [-]]\n",
            argv[0]);
    return 2;
  }
  const double duration = atof(argv[1]);
  const uint64_t seed = strtoull(argv[2], nullptr, 10);
  const std::string mode = argv[3];
  const size_t max_kib = argc > 4 ? strtoull(argv[4], nullptr, 10) : 2048;
  const bool wait = argc > 5 && strcmp(argv[5], "-") == 0;
  if (max_kib < 2) {
    fprintf(stderr, "MAX_KIB must be at least 2\n");
    return 2;
  }
  if (mode == "mixed" || mode == "nokernels")
    return run_mixed(duration, seed, mode == "mixed", max_kib << 10, wait);
  if (mode == "flood") return run_flood(duration, seed, wait);
  if (mode == "fault") return run_fault(duration, seed, wait);
  fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
