/* Replays a corpus of byte streams through daemon/fastpath.c, for a build with sanitizers.
 *
 * The fuzzer (tests/integration/test_fuzz_protocol.py, layer d) writes the corpus: records of
 * a one-byte kind and little-endian fields. 'C' vdev: a context; 'K' vdev kid size: a kernel;
 * 'S' vdev sid flags: a stream; 'E' vdev eid: an event; 'R' vdev base size: session memory;
 * 'B' len bytes: a stream of frames, fed as the session feeds it (fp_run from where the last
 * run stopped; a frame it leaves is skipped, as Python would take it). Handles are made-up
 * addresses: only the parsing and the checks of the C path run, against the recording driver.
 * Exit status 0 when everything was replayed; the sanitizers abort on anything else.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastpath.h"

static unsigned char small[64][64 << 10];

static int get(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

int main(int argc, char **argv) {
    FILE *f = argc > 1 ? fopen(argv[1], "rb") : NULL;
    if (!f || fp_init() != 0) return 2;
    static unsigned char out[24 + (64 << 10)];
    unsigned long streams = 0, launches = 0, records = 0, waits = 0, replies = 0;
    int kind;
    while ((kind = fgetc(f)) != EOF) {
        uint32_t v, a, b;
        uint64_t base, size;
        if (kind == 'C') {
            if (get(f, &v, 4)) return 3;
            fp_set_context(v, (void *)(uintptr_t)(0xC000 + 0x100 * v));
            if (v < 64) fp_set_small(v, small[v], sizeof small[v]);
        } else if (kind == 'K') {
            if (get(f, &v, 4) || get(f, &a, 4) || get(f, &b, 4)) return 3;
            fp_set_kernel(v, a, (void *)(uintptr_t)(0x900000 + a), b);
        } else if (kind == 'S') {
            if (get(f, &v, 4) || get(f, &a, 4) || get(f, &b, 4)) return 3;
            fp_set_stream(v, a, (void *)(uintptr_t)(0x50000 + a), b);
        } else if (kind == 'E') {
            if (get(f, &v, 4) || get(f, &a, 4)) return 3;
            fp_set_event(v, a, (void *)(uintptr_t)(0x60000 + a));
        } else if (kind == 'R') {
            if (get(f, &v, 4) || get(f, &base, 8) || get(f, &size, 8)) return 3;
            fp_range_add(v, base, size);
        } else if (kind == 'B') {
            if (get(f, &size, 8)) return 3;
            /* exactly the stream's bytes, so that a read past its end is caught */
            unsigned char *buf = malloc(size ? size : 1);
            if (!buf || get(f, buf, size)) return 3;
            uint64_t off = 0;
            while (off < size) {
                fp_result res;
                fp_run(buf + off, size - off, out, sizeof out, -1, -1, &res);
                launches += res.launches;
                records += res.records;
                waits += res.waits;
                replies += res.out_len != 0;
                off += res.consumed;
                if (res.consumed && !res.error && !res.out_len) continue;
                if (res.consumed) continue; /* the session goes on after an error or reply */
                /* a frame the C path left: Python takes it (or closes the session) */
                if (size - off < 16) break;
                uint32_t len;
                memcpy(&len, buf + off, 4);
                if (size - off - 16 < len) break;
                off += 16 + (uint64_t)len;
            }
            free(buf);
            streams++;
        } else {
            return 4;
        }
    }
    fclose(f);
    printf("streams %lu launches %lu records %lu waits %lu replies %lu\n", streams, launches,
           records, waits, replies);
    return 0;
}
