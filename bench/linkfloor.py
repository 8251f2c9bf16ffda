"""The raw speed of the link between two processes: what farcuda's overhead is measured against.

    python bench/linkfloor.py pingpong [--n N] [--size BYTES]   # median round trip, us
    python bench/linkfloor.py bulk [--bytes N]                    # one-way throughput, GB/s

Two processes on loopback, plain Python sockets, TCP_NODELAY; bulk data is sent from one
buffer holding the whole payload and received with recv_into into a ring of 4 MiB buffers:
the same kind of code path farcuda's client and daemon use, without any CUDA.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import statistics
import time


def _echo(port: int, size: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(size)
    view = memoryview(buf)
    while True:
        got = 0
        while got < size:
            k = s.recv_into(view[got:])
            if not k:
                return
            got += k
        s.sendall(view)


def pingpong(n: int = 20000, size: int = 4) -> dict:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    p = mp.get_context("spawn").Process(target=_echo, args=(ls.getsockname()[1], size))
    p.start()
    s, _ = ls.accept()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * size
    buf = bytearray(size)
    view = memoryview(buf)
    times = []
    for i in range(n + 500):
        t0 = time.perf_counter()
        s.sendall(msg)
        got = 0
        while got < size:
            got += s.recv_into(view[got:])
        if i >= 500:
            times.append((time.perf_counter() - t0) * 1e6)
    s.close()
    p.join()
    times.sort()
    return {"n": n, "bytes": size, "median_us": statistics.median(times),
            "p99_us": times[int(len(times) * 0.99)]}


def _sink(port: int, total: int, reps: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    # a ring of 4 MiB buffers, as a receiver that stages data for a GPU has
    ring = [memoryview(bytearray(4 << 20)) for _ in range(8)]
    i = 0
    for _ in range(reps):
        got = 0
        while got < total:
            view = ring[i % 8]
            k = s.recv_into(view[:min(len(view), total - got)])
            if not k:
                return
            got += k
            i += 1
        s.sendall(b"k")  # this round is in: the sender's clock stops


def bulk(total: int = 1 << 30, reps: int = 3) -> dict:
    """One-way throughput: the best of ``reps`` transfers of ``total`` bytes (as the farcuda
    bandwidth benchmark takes the best of its repetitions)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    p = mp.get_context("spawn").Process(target=_sink, args=(ls.getsockname()[1], total, reps))
    p.start()
    s, _ = ls.accept()
    # the whole payload in memory, touched, as an application's buffer is
    data = memoryview(bytearray(b"\x5a" * total))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        sent = 0
        while sent < total:
            k = min(4 << 20, total - sent)
            s.sendall(data[sent:sent + k])
            sent += k
        s.recv(1)
        best = min(best, time.perf_counter() - t0)
    s.close()
    p.join()
    return {"bytes": total, "reps": reps, "GBps": total / best / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["pingpong", "bulk"])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    a = ap.parse_args()
    r = pingpong(a.n, a.size) if a.what == "pingpong" else bulk(a.bytes)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
