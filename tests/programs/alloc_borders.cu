// alloc_borders: kernels read (and discard) a little before and after allocations made in
// the orders real programs make them: the first allocation of the program, the last one, one
// between two frees, small ones packed together, large ones of an odd size, and memory of a
// size the allocator rounds up. The values read outside are never used; natively every read
// lands in mapped memory. Prints the status of each case and a checksum of what the kernels
// computed from memory inside the allocations.
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(call)                                                                 \
  do {                                                                              \
    cudaError_t e_ = (call);                                                        \
    if (e_ != cudaSuccess) {                                                        \
      printf("FAIL line %d: %s -> %s\n", __LINE__, #call, cudaGetErrorName(e_));    \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

// out[t] = p[t] (inside) + (p[off + t] * 0 via a select): the read at p + off happens, the value
// is dropped. off counts bytes, may be negative; the inside read is at p[t] for t < n.
__global__ void border(const unsigned char* p, long off, int n, unsigned* out) {
  int t = threadIdx.x;
  volatile const unsigned char* q = p;
  unsigned outside = q[off + t];
  unsigned inside = t < n ? q[t] : 0u;
  out[t] = inside + (outside == 0x1234u ? 1u : 0u);  // a byte is never 0x1234
}

static int cases = 0;
static unsigned long long total = 0;

static void probe(const char* what, const unsigned char* p, long off, unsigned* d_out) {
  border<<<1, 64>>>(p, off, 64, d_out);
  cudaError_t e = cudaDeviceSynchronize();
  unsigned h[64] = {0};
  if (e == cudaSuccess) e = cudaMemcpy(h, d_out, sizeof h, cudaMemcpyDeviceToHost);
  unsigned long long s = 0;
  for (int i = 0; i < 64; i++) s += h[i];
  total += s;
  cases++;
  printf("%-44s offset %8ld: %s sum %llu\n", what, off, cudaGetErrorName(e), s);
  if (e != cudaSuccess) {
    printf("FAILED\n");
    exit(2);
  }
}

static unsigned char* filled(size_t n, int seed) {
  unsigned char* p;
  CHECK(cudaMalloc(&p, n));
  std::vector<unsigned char> h(n);
  for (size_t i = 0; i < n; i++) h[i] = (unsigned char)(i * 13 + seed);
  CHECK(cudaMemcpy(p, h.data(), n, cudaMemcpyHostToDevice));
  return p;
}

int main() {
  // the very first allocation: reads before it
  unsigned char* first = filled(4096, 1);
  unsigned* d_out;
  CHECK(cudaMalloc(&d_out, 64 * sizeof(unsigned)));
  for (long off : {-1L, -64L, -256L, -1024L, -4096L}) probe("first allocation, before", first, off, d_out);
  for (long off : {4096L - 32, 4096L + 64, 4096L + 1024}) probe("first allocation, after", first, off, d_out);
  // small ones packed together, and one freed between two others
  unsigned char* a = filled(1000, 2);
  unsigned char* b = filled(3000, 3);
  unsigned char* c = filled(700, 4);
  CHECK(cudaFree(b));
  probe("before a freed neighbour", a, 1000 + 256, d_out);
  probe("after a freed neighbour", c, -512, d_out);
  // a large allocation of an odd size: reads past its end stay in its last granule natively
  size_t big_n = (3u << 20) + 100;
  unsigned char* big = filled(big_n, 5);
  for (long off : {(long)big_n, (long)big_n + 256, (long)big_n + 4096}) probe("large allocation, after", big, off, d_out);
  // large ones with one freed between them
  size_t mid_n = (4u << 20) + 4096;
  unsigned char* x = filled(mid_n, 6);
  unsigned char* y = filled(mid_n, 7);
  unsigned char* z = filled(mid_n, 8);
  CHECK(cudaFree(y));
  probe("large, before a freed neighbour", x, (long)mid_n + 512, d_out);
  probe("large, the last allocation", z, (long)mid_n + 512, d_out);
  // the last allocation made: small, past its end
  unsigned char* last = filled(512, 9);
  for (long off : {512L, 512L + 256, 512L + 1024}) probe("last allocation, after", last, off, d_out);
  CHECK(cudaFree(first)); CHECK(cudaFree(a)); CHECK(cudaFree(c)); CHECK(cudaFree(big));
  CHECK(cudaFree(x)); CHECK(cudaFree(z)); CHECK(cudaFree(last)); CHECK(cudaFree(d_out));
  printf("%d cases, total %llu\n", cases, total);
  printf("PASSED\n");
  return 0;
}
