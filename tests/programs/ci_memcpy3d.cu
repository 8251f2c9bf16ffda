// ci_memcpy3d: 3D copies and sets of linear memory, NO kernel launches (runs against
// farcuda's in-memory fake GPU in CI as well as on a real GPU). cudaMalloc3D, cudaMemset3D
// and cudaMemset3DAsync, cudaMemcpy3D host to device and back, a box with offsets from one
// volume into another on the device, cudaMemcpy3DAsync from pinned host memory whose
// slices are not back to back, cudaMemcpyDefault, and a NULL parameter block. Every result
// is checked against a model of the volumes kept on the host; it prints what it checked and
// PASSED.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <vector>
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

static uint64_t g_lcg = 0x3D3D3D3D12345677ULL;
static unsigned char rnd() {
  g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (unsigned char)(g_lcg >> 33);
}

// A volume of W x H x D bytes as the host sees it (tightly packed) mirrors a device one.
struct Model {
  size_t w, h, d;
  std::vector<unsigned char> b;
  Model(size_t w_, size_t h_, size_t d_) : w(w_), h(h_), d(d_), b(w_ * h_ * d_) {}
  unsigned char& at(size_t x, size_t y, size_t z) { return b[(z * h + y) * w + x]; }
};

// The whole device volume back into a tightly packed host buffer (one 3D copy).
static std::vector<unsigned char> read_back(cudaPitchedPtr dev, cudaExtent e) {
  std::vector<unsigned char> out(e.width * e.height * e.depth);
  cudaMemcpy3DParms p = {};
  p.srcPtr = dev;
  p.dstPtr = make_cudaPitchedPtr(out.data(), e.width, e.width, e.height);
  p.extent = e;
  p.kind = cudaMemcpyDeviceToHost;
  CHECK(cudaMemcpy3D(&p));
  return out;
}

int main() {
  CHECK(cudaSetDevice(0));
  const cudaExtent vol = make_cudaExtent(148, 19, 7);  // bytes, rows, slices

  // cudaMalloc3D: a pitched volume, rows at least as wide as asked, ysize the slice height
  cudaPitchedPtr a, b;
  CHECK(cudaMalloc3D(&a, vol));
  CHECK(cudaMalloc3D(&b, vol));
  EXPECT(a.ptr != nullptr && a.pitch >= vol.width && a.xsize == vol.width &&
         a.ysize == vol.height);
  printf("malloc3d: pitched volumes\n");

  // cudaMemset3D of the whole volume
  Model ma(vol.width, vol.height, vol.depth), mb(vol.width, vol.height, vol.depth);
  CHECK(cudaMemset3D(b, 0x5a, vol));
  memset(mb.b.data(), 0x5a, mb.b.size());
  EXPECT(read_back(b, vol) == mb.b);
  printf("memset3d: whole volume equal\n");

  // cudaMemcpy3D host to device, the whole volume (its slices back to back on both sides)
  for (auto& c : ma.b) c = rnd();
  {
    cudaMemcpy3DParms p = {};
    p.srcPtr = make_cudaPitchedPtr(ma.b.data(), vol.width, vol.width, vol.height);
    p.dstPtr = a;
    p.extent = vol;
    p.kind = cudaMemcpyHostToDevice;
    CHECK(cudaMemcpy3D(&p));
  }
  EXPECT(read_back(a, vol) == ma.b);
  printf("memcpy3d: host to device and back equal\n");

  // A box with offsets on both sides, device to device: slice by slice
  {
    const cudaExtent box = make_cudaExtent(40, 9, 3);
    const cudaPos from = make_cudaPos(12, 3, 2), to = make_cudaPos(4, 5, 1);
    cudaMemcpy3DParms p = {};
    p.srcPtr = a;
    p.srcPos = from;
    p.dstPtr = b;
    p.dstPos = to;
    p.extent = box;
    p.kind = cudaMemcpyDeviceToDevice;
    CHECK(cudaMemcpy3D(&p));
    for (size_t z = 0; z < box.depth; z++)
      for (size_t y = 0; y < box.height; y++)
        for (size_t x = 0; x < box.width; x++)
          mb.at(to.x + x, to.y + y, to.z + z) = ma.at(from.x + x, from.y + y, from.z + z);
  }
  EXPECT(read_back(b, vol) == mb.b);
  printf("memcpy3d: box device to device equal\n");

  // cudaMemcpy3DAsync from pinned memory with its own pitch and slice height, on a stream
  {
    const size_t hpitch = 64, hys = 11;
    const cudaExtent box = make_cudaExtent(50, 9, 4);
    const cudaPos to = make_cudaPos(90, 8, 3);
    unsigned char* host;
    CHECK(cudaMallocHost(&host, hpitch * hys * box.depth));
    for (size_t i = 0; i < hpitch * hys * box.depth; i++) host[i] = rnd();
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    cudaMemcpy3DParms p = {};
    p.srcPtr = make_cudaPitchedPtr(host, hpitch, box.width, hys);
    p.srcPos = make_cudaPos(7, 1, 0);
    p.dstPtr = b;
    p.dstPos = to;
    p.extent = box;
    p.kind = cudaMemcpyHostToDevice;
    CHECK(cudaMemcpy3DAsync(&p, s));
    CHECK(cudaStreamSynchronize(s));
    for (size_t z = 0; z < box.depth; z++)
      for (size_t y = 0; y < box.height; y++)
        for (size_t x = 0; x < box.width; x++)
          mb.at(to.x + x, to.y + y, to.z + z) = host[(z * hys + 1 + y) * hpitch + 7 + x];
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFreeHost(host));
  }
  EXPECT(read_back(b, vol) == mb.b);
  printf("memcpy3d async: pinned box equal\n");

  // cudaMemset3DAsync of the first slices' upper rows (not back to back: slice by slice)
  {
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    const cudaExtent box = make_cudaExtent(100, 6, 2);
    CHECK(cudaMemset3DAsync(b, 0xc3, box, s));
    CHECK(cudaStreamSynchronize(s));
    for (size_t z = 0; z < box.depth; z++)
      for (size_t y = 0; y < box.height; y++)
        for (size_t x = 0; x < box.width; x++) mb.at(x, y, z) = 0xc3;
    CHECK(cudaStreamDestroy(s));
  }
  EXPECT(read_back(b, vol) == mb.b);
  printf("memset3d async: box equal\n");

  // cudaMemcpyDefault: the direction from the pointers, device to host
  {
    std::vector<unsigned char> out(vol.width * vol.height * vol.depth);
    cudaMemcpy3DParms p = {};
    p.srcPtr = b;
    p.dstPtr = make_cudaPitchedPtr(out.data(), vol.width, vol.width, vol.height);
    p.extent = vol;
    p.kind = cudaMemcpyDefault;
    CHECK(cudaMemcpy3D(&p));
    EXPECT(out == mb.b);
  }
  printf("memcpy3d default: equal\n");

  // no parameter block
  cudaError_t e = cudaMemcpy3D(nullptr);
  printf("memcpy3d(NULL): %s\n", cudaGetErrorName(e));
  EXPECT(e == cudaErrorInvalidValue);
  cudaGetLastError();

  CHECK(cudaFree(a.ptr));
  CHECK(cudaFree(b.ptr));
  CHECK(cudaDeviceSynchronize());
  if (g_failures) {
    printf("FAILED (%d)\n", g_failures);
    return 1;
  }
  printf("PASSED\n");
  return 0;
}
