"""The process side of bench/test_micro.py: loads a CUDA runtime and microlib, then runs
timed loops on request (one command per line on stdin, 'ok ...' per line on stdout)."""

import ctypes
import os
import sys

shim = os.environ.get("FARCUDA_BENCH_SHIM")
if shim:  # farcuda's libcudart.so.13 first: microlib's dependency binds to it
    ctypes.CDLL(shim, mode=ctypes.RTLD_GLOBAL)
lib = ctypes.CDLL(sys.argv[1])
lib.mb_init.argtypes = [ctypes.c_size_t]
lib.mb_h2d.argtypes = lib.mb_d2h.argtypes = [ctypes.c_size_t]
lib.mb_count.restype = ctypes.c_ulonglong
for line in sys.stdin:
    cmd, *a = line.split()
    if cmd == "init":
        rc = lib.mb_init(64 << 20)
    elif cmd == "rtt":
        rc = max(lib.mb_rtt() for _ in range(int(a[0])))
    elif cmd == "launch":
        rc = lib.mb_launches(int(a[0]))
    elif cmd == "count":
        print(f"ok {lib.mb_count()}", flush=True)
        continue
    elif cmd in ("h2d", "d2h"):
        f = lib.mb_h2d if cmd == "h2d" else lib.mb_d2h
        rc = max(f(int(a[0])) for _ in range(int(a[1])))
    else:
        rc = -1
    print("ok" if rc == 0 else f"error {rc}", flush=True)
