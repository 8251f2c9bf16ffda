"""farcudad's front process: accept, shake hands, hand each client to a worker of its own.

The front never touches CUDA: it owns the listening sockets, authenticates clients, keeps a
few workers started ahead of need, passes each accepted connection's file descriptor to one,
and watches them. A worker's death (whatever the client did) frees everything that client
held and takes nothing else with it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from farcuda.interposer.protocol import BY_NAME, HEADER, HEADER_SIZE, VERSION, handshake

from .config import DaemonConfig
from .errors import E

__all__ = ["Daemon", "DaemonError"]

log = logging.getLogger("farcudad")

HELLO = BY_NAME["HELLO"]
MAX_HELLO_TAIL = 64 << 10
HANDSHAKE_TIMEOUT = 10.0


class DaemonError(Exception):
    """The daemon cannot start or run (the message says why)."""


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    ctl: socket.socket
    ready: dict = field(default_factory=dict)
    session: int = 0
    peer: str = ""
    identity: dict = field(default_factory=dict)
    tenant: str = ""
    since: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def _recv_exact(loop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return bytes(buf)


class Daemon:
    def __init__(self, config: DaemonConfig, backend: str = "cuda",
                 backend_options: dict | None = None) -> None:
        self.config = config
        self.backend = backend
        self.backend_options = backend_options or {}
        self.workers: dict[int, Worker] = {}  # session id -> worker serving it
        self.idle: list[Worker] = []
        self.gpus = 0
        self.driver = 0
        self.gpu_info: list[dict] = []
        self.addresses: list[tuple[str, int]] = []
        self._sessions = itertools.count(1)
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._spawning = 0
        self.stopped: asyncio.Future | None = None

    # ------------------------------------------------------------ workers
    async def _spawn(self) -> Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        for var in ("LD_PRELOAD",):  # never run the daemon's workers through the shim
            env.pop(var, None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "farcuda.daemon.worker", "--ctl-fd", str(child.fileno()),
            "--backend", self.backend, "--backend-options", json.dumps(self.backend_options),
            "--log-level", self.config.log_level, pass_fds=(child.fileno(),), env=env,
            stdin=asyncio.subprocess.DEVNULL)
        child.close()
        parent.setblocking(False)
        w = Worker(proc, parent)
        loop = asyncio.get_running_loop()
        line = b""
        try:
            while not line.endswith(b"\n"):
                chunk = await asyncio.wait_for(loop.sock_recv(parent, 1 << 16), 120)
                if not chunk:
                    break
                line += chunk
            w.ready = json.loads(line or b'{"ready": false, "error": "worker died at start"}')
        except (asyncio.TimeoutError, ValueError, OSError) as exc:
            w.ready = {"ready": False, "error": f"worker did not start: {exc}"}
        if not w.ready.get("ready"):
            parent.close()
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            await proc.wait()
        return w

    async def _refill(self) -> None:
        while (not self._stopping
               and len(self.idle) + self._spawning < max(self.config.prestart, 0)):
            self._spawning += 1
            try:
                w = await self._spawn()
            finally:
                self._spawning -= 1
            if not w.ready.get("ready"):
                log.error("a worker failed to start: %s", w.ready.get("error"))
                return
            if self._stopping:
                w.ctl.close()
                return
            self.idle.append(w)

    async def _take_worker(self) -> Worker:
        if self.idle:
            w = self.idle.pop()
        else:
            w = await self._spawn()
            if not w.ready.get("ready"):
                raise DaemonError(w.ready.get("error", "worker failed"))
        self._task(self._refill())
        return w

    def _task(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # ------------------------------------------------------------ start / stop
    async def start(self) -> list[tuple[str, int]]:
        """Start a first worker (proving the backend works), then listen."""
        self.stopped = asyncio.get_running_loop().create_future()
        w = await self._spawn()
        if not w.ready.get("ready"):
            raise DaemonError(w.ready.get("error", "the GPU backend did not start"))
        self.gpus = w.ready["gpus"]
        self.driver = w.ready["driver"]
        self.gpu_info = w.ready.get("gpu_info", [])
        if self.gpus == 0:
            raise DaemonError("no GPU found")
        if self.config.prestart > 0:
            self.idle.append(w)
        else:
            w.ctl.close()
            await w.proc.wait()
        for host, port in self.config.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                s.close()
                raise DaemonError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            s.listen(128)
            s.setblocking(False)
            self._listeners.append(s)
            self.addresses.append(s.getsockname()[:2])
            self._task(self._accept_loop(s))
        self._task(self._refill())
        log.info("listening on %s; %d GPU(s), driver %d",
                 ", ".join(f"{h}:{p}" for h, p in self.addresses), self.gpus, self.driver)
        return self.addresses

    async def _accept_loop(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                conn, addr = await loop.sock_accept(lsock)
            except OSError:
                if self._stopping:
                    return
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            self._task(self._handle(conn, addr))

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let running calls finish within ``grace``, then end everything."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.config.shutdown_grace if grace is None else grace
        for s in self._listeners:
            s.close()
        log.info("shutting down: %d session(s), %.0f s grace", len(self.workers), grace)
        loop = asyncio.get_running_loop()
        for w in list(self.workers.values()):
            try:
                await loop.sock_sendall(w.ctl, json.dumps({"op": "shutdown",
                                                           "grace": grace}).encode() + b"\n")
            except OSError:
                pass
        deadline = loop.time() + grace + 2.0
        while self.workers and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for w in list(self.workers.values()) + self.idle:
            try:
                w.proc.kill()
            except ProcessLookupError:
                pass
            w.ctl.close()
        for w in list(self.workers.values()) + self.idle:
            await w.proc.wait()
        self.idle.clear()
        for t in list(self._tasks):
            if t is not asyncio.current_task():
                t.cancel()
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(None)

    # ------------------------------------------------------------ clients
    def _tenant_of(self, identity: dict, token_name: str | None, peer: str) -> str:
        if token_name is not None:
            return token_name
        return f"{identity.get('host', peer)}:{identity.get('pid', 0)}"

    async def _handle(self, conn: socket.socket, addr) -> None:
        loop = asyncio.get_running_loop()
        peer = f"{addr[0]}:{addr[1]}"
        rid = 0
        try:
            challenge = handshake.new_challenge()
            await loop.sock_sendall(conn, handshake.server_hello(challenge,
                                                                 bool(self.config.tokens)))
            head = await asyncio.wait_for(_recv_exact(loop, conn, HEADER_SIZE), HANDSHAKE_TIMEOUT)
            length, op, _flags, rid, _vdev, _aux = HEADER.unpack(head)
            if op != HELLO.op or not HELLO.size <= length <= HELLO.size + MAX_HELLO_TAIL:
                raise ValueError("expected a HELLO frame")
            body = await asyncio.wait_for(_recv_exact(loop, conn, length), HANDSHAKE_TIMEOUT)
            fixed, tail = body[:HELLO.size], body[HELLO.size:]
            version, _cflags, mac, identity = handshake.parse_client_hello(fixed, tail)
        except (asyncio.TimeoutError, ConnectionError, OSError, ValueError, struct.error) as exc:
            log.warning("client %s: handshake failed: %s", peer, exc)
            conn.close()
            return
        token_name = None
        if version != VERSION:
            await self._refuse(conn, rid, peer, E["cudaErrorInsufficientDriver"],
                               f"protocol version {version} is not this server's {VERSION}; "
                               "use matching farcuda versions")
            return
        if self.config.tokens:
            token_name = handshake.check_mac(self.config.tokens, challenge, tail, mac)
            if token_name is None:
                await self._refuse(conn, rid, peer, E["cudaErrorDevicesUnavailable"],
                                   "authentication failed: this server requires a valid "
                                   "FARCUDA_TOKEN")
                return
        tenant = self._tenant_of(identity, token_name, peer)
        if identity.get("purpose") == "status":
            await self._answer_status(conn, rid)
            return
        if self._stopping:
            await self._refuse(conn, rid, peer, E["cudaErrorDevicesUnavailable"],
                               "the server is shutting down")
            return
        try:
            w = await self._take_worker()
        except DaemonError as exc:
            await self._refuse(conn, rid, peer, E["cudaErrorDevicesUnavailable"], str(exc))
            return
        session = next(self._sessions)
        w.session, w.peer, w.identity, w.tenant, w.since = session, peer, identity, tenant, \
            time.time()
        job = {"session": session, "identity": identity, "peer": peer, "tenant": tenant,
               "heartbeat_ms": self.config.heartbeat_ms,
               "client_timeout": self.config.client_timeout,
               "quota_bytes": self.config.memory_per_tenant}
        try:
            await loop.sock_sendall(conn, handshake.welcome(rid, session, self.gpus, self.driver,
                                                            self.config.heartbeat_ms))
            socket.send_fds(w.ctl, [json.dumps(job).encode()], [conn.fileno()])
        except OSError as exc:
            log.warning("client %s: lost during hand-off: %s", peer, exc)
            w.ctl.close()
            conn.close()
            return
        conn.close()
        self.workers[session] = w
        log.info("session %d: client %s tenant=%s exe=%s pid=%s", session, peer, tenant,
                 identity.get("exe", "?"), identity.get("pid", "?"))
        self._task(self._watch(w))

    async def _refuse(self, conn: socket.socket, rid: int, peer: str, status: int,
                      reason: str) -> None:
        log.warning("client %s refused: %s", peer, reason)
        try:
            await asyncio.get_running_loop().sock_sendall(conn, handshake.refusal(rid, status,
                                                                                  reason))
        except OSError:
            pass
        conn.close()

    async def _watch(self, w: Worker) -> None:
        rc = await w.proc.wait()
        self.workers.pop(w.session, None)
        w.ctl.close()
        if rc != 0:
            log.warning("session %d: worker exited with status %d", w.session, rc)
        else:
            log.info("session %d: ended", w.session)

    # ------------------------------------------------------------ status
    async def _worker_status(self, w: Worker) -> dict | None:
        loop = asyncio.get_running_loop()
        async with w.lock:
            try:
                await loop.sock_sendall(w.ctl, b'{"op": "status"}\n')
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = await asyncio.wait_for(loop.sock_recv(w.ctl, 1 << 20), 2.0)
                    if not chunk:
                        return None
                    buf += chunk
                return json.loads(buf)
            except (OSError, asyncio.TimeoutError, ValueError):
                return None

    async def status(self) -> dict:
        tenants = []
        for w in list(self.workers.values()):
            st = await self._worker_status(w)
            if st is None:
                continue
            st.update(peer=w.peer, tenant=w.tenant)
            tenants.append(st)
        gpus = []
        for g in range(self.gpus):
            info = self.gpu_info[g] if g < len(self.gpu_info) else {}
            gpus.append({"gpu": g, "name": info.get("name", "?"),
                         "memory_total": info.get("total_mem", 0)})
        return {"server": [f"{h}:{p}" for h, p in self.addresses], "driver": self.driver,
                "gpus": gpus, "tenants": tenants}

    async def _answer_status(self, conn: socket.socket, rid: int) -> None:
        st = await self.status()
        try:
            await asyncio.get_running_loop().sock_sendall(
                conn, handshake.refusal(rid, 0, json.dumps(st)))
        except OSError:
            pass
        conn.close()
