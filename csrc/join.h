/* One session per process (join.c, core/session.c): when the runtime shim and the driver
 * layer are both loaded, the shim lends the driver layer's client core its session: its
 * configuration, its connection to each server and each virtual device it opened, so that
 * both layers' requests travel on one connection per server and reach one context per
 * virtual device, and a pointer either layer allocated is valid in the other's launches.
 *
 * The shim offers its session once it is loaded (an ELF constructor: before the program's
 * first call), by calling the core's fcc_join_shim with the table below; the core takes it
 * unless it already made a session of its own. The table's layouts are those of fc.h, which
 * both libraries are built from. */
#ifndef FARCUDA_JOIN_H
#define FARCUDA_JOIN_H

#include "fc.h"
#include "conn.h"

#define FC_JOIN_VERSION 1

typedef struct fc_join {
    uint32_t version;        /* FC_JOIN_VERSION */
    uint32_t size;           /* sizeof(fc_join) */
    /* the shim's state: servers, virtual devices (read only by the core) */
    const fc_server *servers;
    const fc_device *devices;
    const int *nservers, *ndevices;
    int (*init)(void);                               /* the configuration, once */
    int (*server_conn)(int server, fc_conn **out);   /* connect on first use */
    int (*device_ready)(int dev);                    /* open the virtual device once */
    int (*device_status)(int dev);                   /* sticky or pending error */
    /* the shim's device and host memory: a pointer the core does not know */
    int (*range_find)(uint64_t p, int want_device, fc_range *out);
    /* the core's notices (host functions, captured host memory), heard on the shim's
     * connections */
    void (*join_notices)(const fc_conn_notices *n);
    /* the shim asks the core about pointers it does not know (set by the core) */
    void (*set_other_ranges)(int (*find)(uint64_t p, int want_device, fc_range *out));
} fc_join;

/* in libfarcuda.so.1: 0 when the core takes the shim's session */
typedef int (*fc_join_fn)(const fc_join *shim);

#endif
