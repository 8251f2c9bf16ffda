/* The raw link floor in C: a two-process TCP ping-pong of MSG bytes on loopback. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static int full(int fd, char *b, int n, int rd) {
  for (int k = 0; k < n;) {
    int r = rd ? recv(fd, b + k, n - k, 0) : send(fd, b + k, n - k, 0);
    if (r <= 0) return -1;
    k += r;
  }
  return 0;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000, msg = argc > 2 ? atoi(argv[2]) : 4, one = 1;
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(ls, (struct sockaddr *)&a, sizeof a);
  socklen_t al = sizeof a;
  getsockname(ls, (struct sockaddr *)&a, &al);
  listen(ls, 1);
  char buf[65536];
  if (fork() == 0) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    connect(c, (struct sockaddr *)&a, sizeof a);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
      if (full(c, buf, msg, 1) || full(c, buf, msg, 0)) break;
    }
    _exit(0);
  }
  int s = accept(ls, 0, 0);
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  double *t = malloc(sizeof(double) * n);
  for (int i = 0; i < n + 200; i++) {
    double t0 = now();
    full(s, buf, msg, 0);
    full(s, buf, msg, 1);
    if (i >= 200) t[i - 200] = (now() - t0) * 1e6;
  }
  close(s);
  wait(NULL);
  qsort(t, n, sizeof *t, cmp);
  printf("c_pingpong n=%d bytes=%d median_us=%.2f p99_us=%.2f\n", n, msg, t[n / 2], t[(int)(n * 0.99)]);
  return 0;
}
