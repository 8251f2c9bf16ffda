// stencil_borders: an image-diffusion stencil shaped like the widely used benchmark codes
// (two kernels per iteration with pointer, int and float parameters; a synchronous H2D copy
// before them and a synchronous 64 KiB D2H copy after them, on the legacy stream). Its first
// kernel reads the neighbours of every pixel *without clamping the index*: at the borders
// it reads up to one row before the first allocation and past the end of the last one,
// and discards those values, as such codes do. The image is the program's first allocation.
// Every iteration prints a checksum and a few pixels; the host recomputes everything.
// (The shape of the report that the first allocation's border reads went wrong through
// an earlier farcuda: the kernel faulted and the unchecked program printed its input.)
#include <cstdio>
#include <cstdlib>
#include <cmath>
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

// Neighbours are read at j-cols, j+cols, j-1, j+1 unconditionally (out of the image at the
// borders: up to `cols` floats before the first pixel and after the last one); the border
// pixels then use their own value instead, so what was read there never matters.
__global__ void diffuse(const float* img, float* grad, int rows, int cols, float lambda) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= rows * cols) return;
  int r = j / cols, c = j % cols;
  float n = img[j - cols], s = img[j + cols], w = img[j - 1], e = img[j + 1];
  float v = img[j];
  if (r == 0) n = v;
  if (r == rows - 1) s = v;
  if (c == 0) w = v;
  if (c == cols - 1) e = v;
  grad[j] = lambda * (n + s + w + e - 4.0f * v);
}

// Reads the gradient one row below unconditionally: past the end of the last allocation for
// the last row, where the value is not used.
__global__ void update(float* img, const float* grad, int rows, int cols, float scale) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= rows * cols) return;
  float below = grad[j + cols];
  if (j / cols == rows - 1) below = 0.0f;
  img[j] = img[j] + scale * (grad[j] + 0.5f * below);
}

int main() {
  const int rows = 128, cols = 128, n = rows * cols;  // 64 KiB of floats
  float *d_img, *d_grad;
  CHECK(cudaMalloc(&d_img, n * sizeof(float)));   // first allocation of the program
  CHECK(cudaMalloc(&d_grad, n * sizeof(float)));  // last allocation: its end is read past
  std::vector<float> img(n), grad(n), ref(n), out(n);
  for (int i = 0; i < n; i++) ref[i] = img[i] = (float)((i * 7919) % 1000) / 10.0f;
  int bad = 0;
  for (int it = 0; it < 4; it++) {
    float lambda = 0.125f + 0.0625f * it, scale = 0.5f;
    // the host sends the image each iteration, as the benchmark does
    CHECK(cudaMemcpy(d_img, img.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    diffuse<<<(n + 255) / 256, 256>>>(d_img, d_grad, rows, cols, lambda);
    update<<<(n + 255) / 256, 256>>>(d_img, d_grad, rows, cols, scale);
    CHECK(cudaMemcpy(out.data(), d_img, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (int j = 0; j < n; j++) {
      int r = j / cols, c = j % cols;
      float v = ref[j];
      float nn = r ? ref[j - cols] : v, ss = r < rows - 1 ? ref[j + cols] : v;
      float ww = c ? ref[j - 1] : v, ee = c < cols - 1 ? ref[j + 1] : v;
      grad[j] = lambda * (nn + ss + ww + ee - 4.0f * v);
    }
    for (int j = 0; j < n; j++)
      ref[j] = ref[j] + scale * (grad[j] + 0.5f * (j / cols < rows - 1 ? grad[j + cols] : 0.0f));
    double sum = 0;
    int wrong = 0;
    for (int j = 0; j < n; j++) {
      sum += out[j];
      if (fabsf(out[j] - ref[j]) > 1e-3f * (1.0f + fabsf(ref[j]))) wrong++;
    }
    printf("iteration %d: checksum %.4f corner %.5f centre %.5f edge %.5f wrong %d\n", it, sum,
           out[0], out[n / 2 + cols / 2], out[cols - 1], wrong);
    bad += wrong;
    img = out;
  }
  CHECK(cudaFree(d_img));
  CHECK(cudaFree(d_grad));
  printf("%s\n", bad ? "FAILED" : "PASSED");
  return bad ? 1 : 0;
}
