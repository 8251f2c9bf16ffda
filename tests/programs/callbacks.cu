// callbacks: host functions in stream order. cudaLaunchHostFunc and
// cudaStreamAddCallback interleaved with kernels and async copies; each host
// function records its order number and reads pinned memory that a preceding
// D2H cudaMemcpyAsync wrote; one host function writes pinned memory that a
// following H2D cudaMemcpyAsync reads (issued while the host function is still
// pending behind a slow kernel); a host function on a second stream ordered by
// cudaStreamWaitEvent, and one on the legacy default stream. The order log is
// printed after synchronization.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <atomic>
#include <cuda_runtime.h>

#define CHECK(call)                                                           \
  do {                                                                        \
    cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) {                                                  \
      printf("FAIL line %d: %s -> %s\n", __LINE__, #call, cudaGetErrorName(e_)); \
      fflush(stdout);                                                         \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

static int g_failures = 0;
#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) { printf("MISMATCH line %d: %s\n", __LINE__, #cond); ++g_failures; } \
  } while (0)

const int N = 1 << 16;

struct Task {
  const char* name;
  const int* read;   // pinned buffer to read (may be null)
  int read_base;     // expected read[i] == read_base + i
  int* write;        // pinned buffer to write (may be null)
  int write_base;    // writes write[i] = write_base + i
  // results
  int order;
  long long sum;
  int read_ok;
  cudaError_t status;
  int via_callback;
};

static std::atomic<int> g_order{0};

static void run_task(Task* t) {
  t->order = g_order.fetch_add(1);
  long long s = 0;
  int ok = 1;
  if (t->read) {
    for (int i = 0; i < N; ++i) {
      s += t->read[i];
      ok &= (t->read[i] == t->read_base + i);
    }
  }
  t->sum = s;
  t->read_ok = ok;
  if (t->write)
    for (int i = 0; i < N; ++i) t->write[i] = t->write_base + i;
}

static void CUDART_CB host_fn(void* user) {
  Task* t = (Task*)user;
  t->via_callback = 0;
  t->status = cudaSuccess;
  run_task(t);
}

static void CUDART_CB stream_cb(cudaStream_t, cudaError_t status, void* user) {
  Task* t = (Task*)user;
  t->via_callback = 1;
  t->status = status;
  run_task(t);
}

__global__ void fill(int* d, int base, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) d[i] = base + i;
}
__global__ void add(int* d, int v, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) d[i] += v;
}
__global__ void spin(long long cycles) {
  long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

int main() {
  printf("callbacks\n");
  CHECK(cudaSetDevice(0));
  const int nb = (N + 255) / 256;
  int *h1, *h2, *h3, *h4, *h5;
  CHECK(cudaMallocHost((void**)&h1, N * sizeof(int)));
  CHECK(cudaMallocHost((void**)&h2, N * sizeof(int)));
  CHECK(cudaMallocHost((void**)&h3, N * sizeof(int)));
  CHECK(cudaHostAlloc((void**)&h4, N * sizeof(int), cudaHostAllocDefault));
  CHECK(cudaHostAlloc((void**)&h5, N * sizeof(int), cudaHostAllocDefault));
  for (int i = 0; i < N; ++i) h1[i] = h2[i] = h3[i] = h4[i] = h5[i] = -1;
  int *d1, *d2;
  CHECK(cudaMalloc(&d1, N * sizeof(int)));
  CHECK(cudaMalloc(&d2, N * sizeof(int)));

  Task tasks[8] = {
      {"A hostfunc reads D2H(fill 100)", h1, 100, nullptr, 0, -1, 0, 0, cudaErrorUnknown, -1},
      {"B callback reads D2H(fill 200)", h2, 200, nullptr, 0, -1, 0, 0, cudaErrorUnknown, -1},
      {"C hostfunc after slow kernel writes 3000+i", nullptr, 0, h3, 3000, -1, 0, 0, cudaErrorUnknown, -1},
      {"D hostfunc reads D2H(H2D(C's data)+1)", h4, 3001, nullptr, 0, -1, 0, 0, cudaErrorUnknown, -1},
      {"E callback reads D2H(fill 500 + 5)", h5, 505, nullptr, 0, -1, 0, 0, cudaErrorUnknown, -1},
      {"F hostfunc on 2nd stream after event", h5, 505, nullptr, 0, -1, 0, 0, cudaErrorUnknown, -1},
      {"G hostfunc on legacy default stream", h1, 100, nullptr, 0, -1, 0, 0, cudaErrorUnknown, -1},
      {"H callback on 2nd stream, last", h4, 3001, nullptr, 0, -1, 0, 0, cudaErrorUnknown, -1},
  };

  cudaStream_t s, t;
  CHECK(cudaStreamCreate(&s));
  CHECK(cudaStreamCreate(&t));
  cudaEvent_t ev;
  CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));

  fill<<<nb, 256, 0, s>>>(d1, 100, N);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpyAsync(h1, d1, N * sizeof(int), cudaMemcpyDeviceToHost, s));
  CHECK(cudaLaunchHostFunc(s, host_fn, &tasks[0]));

  fill<<<nb, 256, 0, s>>>(d1, 200, N);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpyAsync(h2, d1, N * sizeof(int), cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamAddCallback(s, stream_cb, &tasks[1], 0));

  spin<<<1, 1, 0, s>>>(40000000LL);  // ~20 ms: C is still pending when the H2D below is issued
  CHECK(cudaGetLastError());
  CHECK(cudaLaunchHostFunc(s, host_fn, &tasks[2]));
  CHECK(cudaMemcpyAsync(d2, h3, N * sizeof(int), cudaMemcpyHostToDevice, s));  // must see C's data
  add<<<nb, 256, 0, s>>>(d2, 1, N);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpyAsync(h4, d2, N * sizeof(int), cudaMemcpyDeviceToHost, s));
  CHECK(cudaLaunchHostFunc(s, host_fn, &tasks[3]));

  fill<<<nb, 256, 0, s>>>(d1, 500, N);
  add<<<nb, 256, 0, s>>>(d1, 5, N);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpyAsync(h5, d1, N * sizeof(int), cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamAddCallback(s, stream_cb, &tasks[4], 0));
  CHECK(cudaEventRecord(ev, s));

  CHECK(cudaStreamWaitEvent(t, ev, 0));
  CHECK(cudaLaunchHostFunc(t, host_fn, &tasks[5]));
  // The legacy default stream waits for all work in blocking streams s and t issued so far.
  CHECK(cudaLaunchHostFunc(0, host_fn, &tasks[6]));
  // t is blocking too, so this waits for G.
  CHECK(cudaStreamAddCallback(t, stream_cb, &tasks[7], 0));
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaStreamSynchronize(s));
  CHECK(cudaStreamSynchronize(t));

  int in_order = 1;
  for (int k = 0; k < 8; ++k) {
    Task& tk = tasks[k];
    printf("order %d: %s via %s status=%s sum=%lld read_ok=%s\n", tk.order, tk.name,
           tk.via_callback == 1 ? "cudaStreamAddCallback" : (tk.via_callback == 0 ? "cudaLaunchHostFunc" : "never"),
           cudaGetErrorName(tk.status), tk.sum, tk.read ? (tk.read_ok ? "yes" : "NO") : "n/a");
    in_order &= tk.order == k;
    if (tk.read) EXPECT(tk.read_ok);
    EXPECT(tk.status == cudaSuccess);
  }
  printf("host functions ran in stream order: %s\n", in_order ? "yes" : "no");
  EXPECT(in_order);

  // The data that D read came from C's writes through an H2D copy; check it once more on the host.
  int bad = 0;
  for (int i = 0; i < N; ++i) bad += h4[i] != 3001 + i;
  printf("H2D after pending host function saw its data: %s\n", bad == 0 ? "yes" : "no");
  EXPECT(bad == 0);

  // Many small host functions in one stream keep their order.
  {
    static int seq[200];
    static std::atomic<int> pos{0};
    struct Ctx { int id; int* seq; std::atomic<int>* pos; };
    static Ctx ctx[200];
    for (int i = 0; i < 200; ++i) {
      ctx[i] = {i, seq, &pos};
      CHECK(cudaLaunchHostFunc(s, [](void* u) {
        Ctx* c = (Ctx*)u;
        c->seq[c->pos->fetch_add(1)] = c->id;
      }, &ctx[i]));
      if (i % 50 == 0) {
        add<<<nb, 256, 0, s>>>(d1, 1, N);
        CHECK(cudaGetLastError());
      }
    }
    CHECK(cudaStreamSynchronize(s));
    int ok = pos.load() == 200;
    for (int i = 0; i < 200 && ok; ++i) ok &= seq[i] == i;
    printf("200 host functions in order: %s\n", ok ? "yes" : "no");
    EXPECT(ok);
  }

  CHECK(cudaEventDestroy(ev));
  CHECK(cudaStreamDestroy(s));
  CHECK(cudaStreamDestroy(t));
  CHECK(cudaFree(d1));
  CHECK(cudaFree(d2));
  CHECK(cudaFreeHost(h1));
  CHECK(cudaFreeHost(h2));
  CHECK(cudaFreeHost(h3));
  CHECK(cudaFreeHost(h4));
  CHECK(cudaFreeHost(h5));
  printf("%s\n", g_failures ? "FAILED" : "PASSED");
  return g_failures ? 1 : 0;
}
