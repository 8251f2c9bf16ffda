"""A worker process: serves exactly one client session, then exits.

Started by the daemon's front process ahead of need (so that Python's start and the CUDA
driver's initialization are not on the client's path), it waits on its control socket for a
client connection (passed as a file descriptor) and runs the session on uvloop. Its contexts,
memory and modules die with it: a client's crash, fault or hostile input stays in here.

Device printf output, which the CUDA driver writes to the process's stdout, is captured
through a pipe and sent to the client before the reply of the synchronization that flushed it.

Control socket: first {"ready": ...} to the front once the backend is up, then the job and
the client's descriptor from it; from then on a control link (daemon/ctl.py). From the front:
"status" (answered with the session's figures and busy clocks), "shutdown" {grace}, "energy"
{joules} (the energy attributed so far). To the front, only when its job says the front keeps
tenant limits or energy: "reserve" {bytes} / "release" {bytes} against the tenant's memory
quota, "open_gpu" / "close_gpu" {gpu} against limits.tenants_per_gpu, "usage" (the tenant's
bytes), "energy" (attribute up to now and answer); and always, as the session ends, "final"
{the session's figures}, which the front's metrics keep. The front outlives every worker;
when the link ends anyway, the session ends in order (GOODBYE).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import struct
import sys
from typing import Any

from .backends import load_backend
from .ctl import CtlLink
from .logs import setup_logging
from .modcache import ModuleCache
from .session import Session

log = logging.getLogger("farcudad.worker")


def capture_stdout() -> int:
    """Point fd 1 (where the driver prints device printf) at a pipe; return its read end."""
    r, w = os.pipe()
    sys.stdout.flush()
    os.dup2(w, 1)
    os.close(w)
    os.set_blocking(r, False)
    try:
        libc = ctypes.CDLL(None)
        c_stdout = ctypes.c_void_p.in_dll(libc, "stdout")
        libc.setvbuf(c_stdout, None, 2, 0)  # _IONBF: the driver's output reaches us at once
    except (OSError, ValueError, AttributeError):
        pass
    sys.stdout = sys.stderr  # our own prints must not mix with the client's output
    return r


_poller = None


def drain(fd: int) -> bytes:
    """What the driver printed so far (cheap when nothing: one poll, no exception)."""
    global _poller
    if _poller is None:
        import select
        _poller = select.poll()
        _poller.register(fd, select.POLLIN)
    if not _poller.poll(0):
        return b""
    chunks = []
    while True:
        try:
            b = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


class FrontLink:
    """The session's view of the front: tenant limits and energy, over the control link.

    If the front cannot answer (it is gone, or stuck past the timeout), a reservation or an
    admission is refused: a limit is never bypassed by a failure."""

    TIMEOUT = 10.0

    def __init__(self, link: CtlLink, job: dict) -> None:
        self.link = link
        self.quota: int | None = job.get("tenant_quota")
        self.gpu_limit = bool(job.get("tenants_per_gpu"))
        self.energy = bool(job.get("energy"))

    @staticmethod
    def wanted(job: dict) -> bool:
        return (job.get("tenant_quota") is not None or bool(job.get("tenants_per_gpu"))
                or bool(job.get("energy")))

    async def _ask(self, op: str, **fields) -> dict | None:
        try:
            return await self.link.request(op, timeout=self.TIMEOUT, **fields)
        except (ConnectionError, TimeoutError):
            return None

    async def reserve(self, nbytes: int) -> str | None:
        rep = await self._ask("reserve", bytes=nbytes)
        return "the daemon did not answer" if rep is None else rep.get("refused")

    def release(self, nbytes: int) -> None:
        self.link.notify("release", bytes=nbytes)

    async def open_gpu(self, gpu: int) -> str | None:
        rep = await self._ask("open_gpu", gpu=gpu)
        return "the daemon did not answer" if rep is None else rep.get("refused")

    def close_gpu(self, gpu: int) -> None:
        self.link.notify("close_gpu", gpu=gpu)

    async def usage(self) -> int:
        rep = await self._ask("usage")
        return (self.quota or 0) if rep is None else int(rep.get("used", 0))

    async def energy_now(self) -> float | None:
        rep = await self._ask("energy")
        return None if rep is None else rep.get("joules")


def _recv_job(ctl: socket.socket) -> tuple[dict | None, list[int]]:
    """The front's hand-off: a length-prefixed JSON job and the client's descriptor. Exactly
    the job's bytes are read: the control link's lines that may follow stay in the socket."""
    head, fds, _flags, _addr = socket.recv_fds(ctl, 4, 1)
    data = bytearray(head)
    if not _fill(ctl, data, 4):
        return None, fds
    if not _fill(ctl, data, 4 + struct.unpack_from("<I", data)[0]):
        return None, fds
    return json.loads(data[4:]), fds


def _fill(sock: socket.socket, data: bytearray, n: int) -> bool:
    """Receive into ``data`` until it holds ``n`` bytes; False if the peer closed first."""
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 1 << 20))
        if not chunk:
            return False
        data += chunk
    return True


async def serve(ctl: socket.socket, backend, out_fd: int) -> int:
    loop = asyncio.get_running_loop()
    ready: dict[str, Any] = {"ready": True, "pid": os.getpid()}
    try:
        ready.update(gpus=backend.gpu_count(), driver=backend.driver_version(),
                     gpu_info=[backend.gpu_info(g) for g in range(backend.gpu_count())])
    except Exception as exc:  # report, do not die silently: the front decides
        ready = {"ready": False, "error": str(exc)}
    try:
        ctl.sendall(json.dumps(ready).encode() + b"\n")
    except OSError:  # the front let go of us before we were ready: it is shutting down
        return 0
    if not ready["ready"]:
        return 1
    ctl.setblocking(True)
    try:
        job, fds = _recv_job(ctl)
    except OSError:  # (a reset) the front let go of its idle worker: it is shutting down
        return 0
    if job is None or not fds:
        return 0  # the front closed us before use
    client = socket.socket(fileno=fds[0])
    client.setblocking(False)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):  # bulk copies: fewer, larger reads
        client.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
    session: Session | None = None

    def on_front(req: dict):
        assert session is not None  # made before the front can ask anything
        op = req.get("op")
        if op == "status":
            return _status(session)
        if op == "shutdown":
            loop.create_task(_shutdown(session, float(req.get("grace", 10.0))))
        elif op == "energy":
            session.energy_j = req.get("joules")
        return None
    link = await CtlLink.over(ctl, on_front, name=f"worker of session {job['session']}")
    session = Session(backend, session_id=job["session"], identity=job.get("identity", {}),
                      heartbeat_ms=job.get("heartbeat_ms", 1000),
                      client_timeout=job.get("client_timeout", 60.0),
                      quota_bytes=job.get("quota_bytes"), drain_output=lambda: drain(out_fd),
                      output_fd=out_fd,
                      front=FrontLink(link, job) if FrontLink.wanted(job) else None,
                      module_cache=ModuleCache(job.get("module_cache"),
                                               job.get("module_cache_bytes", 4 << 30)))

    def forward_output() -> None:
        data = drain(out_fd)
        if data and session.transport is not None:
            session._write(_stdout_frame(data))
    loop.add_reader(out_fd, forward_output)
    await loop.connect_accepted_socket(lambda: session, client)
    log.info("session %d: serving %s (%s)", job["session"], job.get("peer", "?"),
             job.get("identity", {}).get("exe", "?"))

    async def control() -> None:
        await link.run()
        session.goodbye("the daemon is shutting down")  # the front went away: end in order
    ctl_task = loop.create_task(control())
    await session.closed
    ctl_task.cancel()
    link.notify("final", **_status(session))  # what the front's metrics keep of this session
    link.close()
    log.info("session %d: ended; counts=%s", job["session"], dict(session.counts))
    backend.close()
    return 0


def _status(session: Session) -> dict:
    # pending: requests still being worked on (the session's queue depth, for the metrics)
    return dict(session.status(), pid=os.getpid(), pending=len(session._tasks))


def _stdout_frame(data: bytes) -> bytes:
    from farcuda.wire import BY_NAME, encode
    return encode(BY_NAME["STDOUT"], None, data)


async def _shutdown(session: Session, grace: float) -> None:
    """Let running calls finish (up to ``grace`` seconds), then end the session."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while session._tasks and loop.time() < deadline:
        await asyncio.sleep(0.05)
    session.goodbye("the daemon is shutting down")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="farcudad-worker")
    ap.add_argument("--ctl-fd", type=int, required=True)
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--backend-options", default="{}")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when we stop
    out_fd = capture_stdout()
    ctl = socket.socket(fileno=args.ctl_fd)
    backend = None
    try:
        backend = load_backend(args.backend, json.loads(args.backend_options))
    except Exception as exc:
        ctl.sendall(json.dumps({"ready": False, "error": str(exc)}).encode() + b"\n")
        return 1
    profile_dir = os.environ.get("FARCUDAD_PROFILE")  # a folder: profile each session there
    prof = None
    if profile_dir:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    try:
        try:
            import uvloop
            return uvloop.run(serve(ctl, backend, out_fd))
        except ImportError:
            return asyncio.run(serve(ctl, backend, out_fd))
    finally:
        if prof is not None and profile_dir:
            prof.disable()
            prof.dump_stats(os.path.join(profile_dir, f"worker-{os.getpid()}.prof"))


if __name__ == "__main__":
    sys.exit(main())
