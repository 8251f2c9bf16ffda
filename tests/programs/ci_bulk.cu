// Bulk copies of data that compresses well, not at all, or in parts, checked end to end.
// Usage: ci_bulk KIND MIB, KIND one of random, zeros, mixed (64 KiB blocks of zeros and of
// random bytes, alternating, and a run of a repeated pattern): copies MIB MiB to the device
// with cudaMemcpy, back into another buffer, and prints both checksums (FNV-1a).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

static uint64_t fnv(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

int main(int argc, char **argv) {
    const char *kind = argc > 1 ? argv[1] : "mixed";
    size_t n = (size_t)(argc > 2 ? atol(argv[2]) : 16) << 20;
    std::vector<unsigned char> src(n), back(n, 0xEE);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        unsigned char r = (unsigned char)x;
        if (!strcmp(kind, "zeros")) src[i] = 0;
        else if (!strcmp(kind, "random")) src[i] = r;
        else src[i] = (i / 65536) % 3 == 0 ? 0 : (i / 65536) % 3 == 1 ? r : "farcuda"[i % 7];
    }
    void *d;
    cudaError_t e = cudaMalloc(&d, n);
    if (!e) e = cudaMemcpy(d, src.data(), n, cudaMemcpyHostToDevice);
    if (!e) e = cudaMemcpy(back.data(), d, n, cudaMemcpyDeviceToHost);
    if (!e) e = cudaFree(d);
    if (e) {
        printf("%s\nFAILED\n", cudaGetErrorName(e));
        return 1;
    }
    uint64_t a = fnv(src.data(), n), b = fnv(back.data(), n);
    printf("%s %zu MiB: sent %016llx, back %016llx\n%s\n", kind, n >> 20, (unsigned long long)a,
           (unsigned long long)b, a == b ? "PASSED" : "FAILED");
    return a != b;
}
