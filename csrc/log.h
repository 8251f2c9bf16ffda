/* The shim's lines on stderr (log.c): one line each, "farcuda: " first, whole even when
 * threads write at once. Everything below the exports may say something; this needs
 * nothing of the rest. */
#ifndef FARCUDA_LOG_H
#define FARCUDA_LOG_H

void fc_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
