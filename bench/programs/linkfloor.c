/* The raw link floor in C between two endpoints, possibly through an emulated link:
 *
 *   linkfloor listen                      prints "port=P", serves one connection, exits
 *   linkfloor send HOST PORT N BYTES REPS  N ping-pongs of 4 bytes (median), then REPS
 *                                         transfers of BYTES (best), each acknowledged
 *
 * The sender writes from one buffer holding the whole payload, the receiver reads into a
 * ring of 4 MiB buffers: the copies a remoting layer cannot avoid, with nothing else. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int full(int fd, void *p, size_t n, int rd) {
    char *b = p;
    for (size_t k = 0; k < n;) {
        ssize_t r = rd ? recv(fd, b + k, n - k, 0) : send(fd, b + k, n - k, MSG_NOSIGNAL);
        if (r <= 0) return -1;
        k += (size_t)r;
    }
    return 0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct { uint32_t n, reps; uint64_t bytes; } plan;

static int serve(void) {
    int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) ||
        getsockname(ls, (struct sockaddr *)&a, &al))
        return 1;
    printf("port=%d\n", ntohs(a.sin_port));
    fflush(stdout);
    int s = accept(ls, 0, 0);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    plan p;
    if (full(s, &p, sizeof p, 1)) return 1;
    char msg[4];
    for (uint32_t i = 0; i < p.n; i++)
        if (full(s, msg, 4, 1) || full(s, msg, 4, 0)) return 1;
    size_t ring = 4 << 20;
    char *buf = malloc(8 * ring);
    for (uint32_t r = 0; r < p.reps; r++) {
        uint64_t got = 0;
        for (int i = 0; got < p.bytes; i++) {
            size_t want = p.bytes - got < ring ? p.bytes - got : ring;
            ssize_t k = recv(s, buf + (i % 8) * ring, want, 0);
            if (k <= 0) return 1;
            got += (uint64_t)k;
        }
        if (full(s, "k", 1, 0)) return 1;
    }
    return 0;
}

static int sender(const char *host, const char *port, uint32_t n, uint64_t bytes, uint32_t reps) {
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai)) return 1;
    int one = 1, s = socket(ai->ai_family, SOCK_STREAM, 0);
    if (connect(s, ai->ai_addr, ai->ai_addrlen)) return 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    plan p = {n, reps, bytes};
    if (full(s, &p, sizeof p, 0)) return 1;
    double *t = malloc(sizeof(double) * (n ? n : 1));
    char msg[4] = "ping";
    for (uint32_t i = 0; i < n; i++) {
        double t0 = now();
        if (full(s, msg, 4, 0) || full(s, msg, 4, 1)) return 1;
        t[i] = (now() - t0) * 1e6;
    }
    qsort(t, n, sizeof *t, cmp);
    char *data = malloc(bytes);
    memset(data, 0x5a, bytes); /* touched, as an application's buffer is */
    double best = 1e30;
    for (uint32_t r = 0; r < reps; r++) {
        double t0 = now();
        for (uint64_t off = 0; off < bytes;) {
            size_t k = bytes - off < (4u << 20) ? bytes - off : (4u << 20);
            if (full(s, data + off, k, 0)) return 1;
            off += k;
        }
        char ack;
        if (full(s, &ack, 1, 1)) return 1;
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    printf("c_link n=%u median_us=%.2f bytes=%llu reps=%u GBps=%.4f\n", n, n ? t[n / 2] : 0.0,
           (unsigned long long)bytes, reps, bytes / best / 1e9);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "listen")) return serve();
    if (argc > 6 && !strcmp(argv[1], "send"))
        return sender(argv[2], argv[3], (uint32_t)atoi(argv[4]), strtoull(argv[5], 0, 0),
                      (uint32_t)atoi(argv[6]));
    fprintf(stderr, "usage: linkfloor listen | linkfloor send HOST PORT N BYTES REPS\n");
    return 2;
}
