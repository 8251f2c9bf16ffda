"""The raw speed of the link between two processes: what farcuda's overhead is measured against.

    python bench/linkfloor.py pingpong [--n N] [--size BYTES]   # median round trip, us
    python bench/linkfloor.py bulk [--bytes N]                    # one-way throughput, GB/s
    python bench/linkfloor.py c [--n N] [--bytes N] [--edge]      # both, in C (edge: through
                                                                  # the emulated edge link)

Two processes on loopback, plain Python sockets, TCP_NODELAY; bulk data is sent from one
buffer holding the whole payload and received with recv_into into a ring of 4 MiB buffers:
the same kind of code path farcuda's client and daemon use, without any CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import socket
import statistics
import subprocess
import time
from pathlib import Path


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


EDGE = {"delay": 0.0005, "rate": 1e9}  # the project's emulated edge link: 1 Gbit/s, 0.5 ms


def build_c(out: Path) -> Path:
    """bench/programs/linkfloor.c, built with gcc into out."""
    exe = out / "linkfloor"
    src = Path(__file__).resolve().parent / "programs" / "linkfloor.c"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def c_link(exe: Path, n: int = 20000, total: int = 1 << 30, reps: int = 3,
           link: dict | None = None) -> dict:
    """The floor in C between two processes: n ping-pongs of 4 bytes (median us) and the best
    of reps one-way transfers of total bytes (GB/s); through an emulated link when ``link``
    gives its delay (s, each way) and rate (bit/s) (farcuda.daemon.linkproxy)."""
    listener = subprocess.Popen([str(exe), "listen"], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline().strip().split("=")[1])
        with contextlib.ExitStack() as stack:
            if link:
                from farcuda.daemon.linkproxy import ProxyThread
                proxy = stack.enter_context(ProxyThread(f"127.0.0.1:{port}", **link))
                host, _, pport = proxy.address.rpartition(":")
            else:
                host, pport = "127.0.0.1", str(port)
            out = subprocess.run([str(exe), "send", host, pport, str(n), str(total), str(reps)],
                                 capture_output=True, text=True, check=True, timeout=3600)
    finally:
        listener.wait(timeout=60)
    fields = dict(kv.split("=") for kv in out.stdout.split()[1:])
    return {"n": n, "median_us": float(fields["median_us"]), "bytes": total, "reps": reps,
            "GBps": float(fields["GBps"]), "link": link or "loopback"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["pingpong", "bulk", "c"])
    ap.add_argument("--edge", action="store_true", help="(c) through the emulated edge link")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    a = ap.parse_args()
    if a.what == "c":
        import tempfile
        r = c_link(build_c(Path(tempfile.mkdtemp())), a.n, a.bytes, 3, EDGE if a.edge else None)
    else:
        r = pingpong(a.n, a.size) if a.what == "pingpong" else bulk(a.bytes)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
