/* The shim's lines on stderr (see log.h). */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "api.h"
#include "log.h"

static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;

void fc_log(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mtx);
    fprintf(stderr, "farcuda: %s\n", buf);
    fflush(stderr);
    pthread_mutex_unlock(&log_mtx);
}

void fcx_log(const char *msg) { fc_log("%s", msg); }
