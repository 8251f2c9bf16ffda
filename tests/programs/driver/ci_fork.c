/* A forked child gets a session of its own: the parent's memory is not its, its own works,
 * and the parent goes on with its session. */
#include <cuda.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
  CUdevice d; CUcontext c; CUdeviceptr p; unsigned v = 0;
  if (cuInit(0) || cuDeviceGet(&d, 0) || cuDevicePrimaryCtxRetain(&c, d) || cuCtxSetCurrent(c)) return 1;
  if (cuMemAlloc(&p, 64) || cuMemsetD32(p, 7, 16) || cuMemcpyDtoH(&v, p, 4)) return 2;
  printf("parent %u\n", v); fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    CUdeviceptr q; unsigned w = 0;
    CUresult r = cuMemcpyDtoH(&w, p, 4);
    printf("child: the parent's pointer -> %d\n", r);
    if (cuMemAlloc(&q, 64) || cuMemsetD32(q, 9, 16) || cuMemcpyDtoH(&w, q, 4)) { printf("child failed\n"); _exit(1); }
    printf("child %u\n", w); fflush(stdout);
    _exit(0);
  }
  int st; waitpid(pid, &st, 0);
  if (cuMemcpyDtoH(&v, p, 4)) return 3;
  printf("parent again %u, child exit %d\n", v, WEXITSTATUS(st));
  return 0;
}
