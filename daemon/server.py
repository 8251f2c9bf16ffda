"""farcudad's front process: accept, shake hands, hand each client to a worker of its own.

The front never touches CUDA: it owns the listening sockets, authenticates clients, keeps a
few workers started ahead of need, passes each accepted connection's file descriptor to one,
and watches them. A worker's death (whatever the client did) frees everything that client
held and takes nothing else with it.

After the hand-off the front and each worker talk over a control link (daemon/ctl.py, JSON
lines both ways): the front asks for status and busy time, pushes attributed energy and the
order to shut down; the worker asks the front to reserve and release device memory against
its tenant's quota and to admit its tenant to a GPU (daemon/tenants.py). All tenant
accounting lives here, in one thread, so it is exact under concurrency, and a worker's end
(however it ends) returns everything its session held in one step.

With [tls] configured, the front terminates TLS: the handshake runs inside it, and the worker
gets one end of a socketpair that the front pumps to and from the client's TLS stream
(wire/tls.py), so workers only ever see plain descriptors.

On SIGTERM (``shutdown``) listening stops at once (new connections are refused), sessions get
``shutdown_grace`` seconds to finish the calls they are running, then a GOODBYE; then every
worker is gone and the front returns.
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

from farcuda.wire import BY_NAME, HEADER, HEADER_SIZE, VERSION, handshake
from farcuda.wire import tls as tlsmod

from .config import DaemonConfig
from .ctl import CtlLink
from .energy import EnergyLedger, GpuMeter
from .errors import E
from .tenants import TenantLedger

__all__ = ["Daemon", "DaemonError"]

log = logging.getLogger("farcudad")

HELLO = BY_NAME["HELLO"]
MAX_HELLO_TAIL = 64 << 10
HANDSHAKE_TIMEOUT = 10.0
ENERGY_INTERVAL = 1.0  # seconds between NVML samples (and energy attributions)
CTL_TIMEOUT = 2.0


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
    link: CtlLink | None = None  # the control link, once the worker serves a session

    def close_ctl(self) -> None:
        if self.link is not None:
            self.link.close()
        else:
            self.ctl.close()


class _PlainIO:
    """The handshake on an accepted TCP socket, which is then handed to the worker as is."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()

    async def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self.loop.sock_recv(self.conn, n - len(buf))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            buf += chunk
        return bytes(buf)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.conn, data)

    def close(self) -> None:
        self.conn.close()


class _TlsIO:
    """The handshake inside TLS; the front keeps the stream and pumps it to the worker."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def recv_exact(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise ConnectionError("peer closed the connection") from None

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


async def _send_job(ctl: socket.socket, job: dict, fd: int) -> None:
    """Hand a client's connection to a worker: its job, length-prefixed, with the descriptor.
    The worker reads exactly the job's bytes, so a job longer than one read (the identity may
    be 64 KiB) arrives whole and a control line sent right after it is not swallowed."""
    data = json.dumps(job).encode()
    data = struct.pack("<I", len(data)) + data
    sent = socket.send_fds(ctl, [data], [fd])
    if sent < len(data):
        await asyncio.get_running_loop().sock_sendall(ctl, data[sent:])


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
        self.ledger = TenantLedger(config.memory_per_tenant, config.tenants_per_gpu)
        self.meter: GpuMeter | None = None
        self.energy = EnergyLedger(0)
        self._energy_lock = asyncio.Lock()
        self._tls = (tlsmod.server_context(config.tls_cert, config.tls_key, config.tls_client_ca)
                     if config.tls else None)

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
        except (TimeoutError, ValueError, OSError) as exc:
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
        self.energy = EnergyLedger(self.gpus)
        self.meter = await asyncio.to_thread(GpuMeter.open,
                                             [g.get("uuid", "") for g in self.gpu_info])
        if self.meter is not None:
            self._task(self._energy_loop())
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
        log.info("listening on %s%s; %d GPU(s), driver %d",
                 ", ".join(f"{h}:{p}" for h, p in self.addresses),
                 " (TLS)" if self._tls is not None else "", self.gpus, self.driver)
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
            if w.link is not None:
                w.link.notify("shutdown", grace=grace)
        deadline = loop.time() + grace + 2.0
        while self.workers and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for w in list(self.workers.values()) + self.idle:
            try:
                w.proc.kill()
            except ProcessLookupError:
                pass
            w.close_ctl()
        for w in list(self.workers.values()) + self.idle:
            await w.proc.wait()
        self.idle.clear()
        if self.meter is not None:
            self.meter.close()
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

    async def _start_tls(self, conn: socket.socket) -> _TlsIO:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 18)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await asyncio.wait_for(
            loop.connect_accepted_socket(lambda: protocol, sock=conn, ssl=self._tls,
                                         ssl_handshake_timeout=HANDSHAKE_TIMEOUT),
            HANDSHAKE_TIMEOUT + 1.0)
        return _TlsIO(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    async def _handle(self, conn: socket.socket, addr) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        rid = 0
        io: _PlainIO | _TlsIO = _PlainIO(conn)
        cert_name = None
        if self._tls is not None:
            try:
                io = await self._start_tls(conn)
            except (TimeoutError, ConnectionError, OSError) as exc:
                why = (getattr(exc, "reason", None) or str(exc)
                       or ("timed out" if isinstance(exc, TimeoutError)
                           else f"{type(exc).__name__} (not a TLS client?)"))
                log.warning("client %s: TLS handshake failed: %s", peer, why)
                conn.close()
                return
            cert_name = tlsmod.peer_name(io.writer)
        try:
            challenge = handshake.new_challenge()
            await io.send(handshake.server_hello(challenge, bool(self.config.tokens)))
            head = await asyncio.wait_for(io.recv_exact(HEADER_SIZE), HANDSHAKE_TIMEOUT)
            length, op, _flags, rid, _vdev, _aux = HEADER.unpack(head)
            if op != HELLO.op or not HELLO.size <= length <= HELLO.size + MAX_HELLO_TAIL:
                raise ValueError("expected a HELLO frame")
            body = await asyncio.wait_for(io.recv_exact(length), HANDSHAKE_TIMEOUT)
            fixed, tail = body[:HELLO.size], body[HELLO.size:]
            version, _cflags, mac, identity = handshake.parse_client_hello(fixed, tail)
        # RecursionError: an identity of deeply nested JSON ("[[[[..."), which json.loads
        # does not report as a ValueError; uncaught, it left the task dead and the socket open.
        except (TimeoutError, ConnectionError, OSError, ValueError, struct.error,
                RecursionError) as exc:
            log.warning("client %s: handshake failed: %s", peer, exc or "timed out")
            io.close()
            return
        token_name = None
        if version != VERSION:
            await self._refuse(io, rid, peer, E["cudaErrorInsufficientDriver"],
                               f"protocol version {version} is not this server's {VERSION}; "
                               "use matching farcuda versions")
            return
        if self.config.tokens:
            token_name = handshake.check_mac(self.config.tokens, challenge, tail, mac)
            if token_name is None:
                await self._refuse(io, rid, peer, E["cudaErrorDevicesUnavailable"],
                                   "authentication failed: this server requires a valid "
                                   "FARCUDA_TOKEN")
                return
        tenant = self._tenant_of(identity, token_name, peer)
        if identity.get("purpose") == "status":
            await self._answer_status(io, rid)
            return
        if self._stopping:
            await self._refuse(io, rid, peer, E["cudaErrorDevicesUnavailable"],
                               "the server is shutting down")
            return
        try:
            w = await self._take_worker()
        except DaemonError as exc:
            await self._refuse(io, rid, peer, E["cudaErrorDevicesUnavailable"], str(exc))
            return
        session = next(self._sessions)
        w.session, w.peer, w.identity, w.tenant, w.since = session, peer, identity, tenant, \
            time.time()
        job = {"session": session, "identity": identity, "peer": peer, "tenant": tenant,
               "heartbeat_ms": self.config.heartbeat_ms,
               "client_timeout": self.config.client_timeout,
               # What the worker asks the front for (when none: it decides alone, at once).
               # The quota is the tenant's, over all its sessions: only the front can keep it.
               "tenant_quota": self.config.memory_per_tenant,
               "tenants_per_gpu": self.config.tenants_per_gpu,
               "energy": self.meter is not None}
        relay = None
        try:
            await io.send(handshake.welcome(rid, session, self.gpus, self.driver,
                                            self.config.heartbeat_ms))
            if isinstance(io, _PlainIO):
                await _send_job(w.ctl, job, conn.fileno())
            else:  # the worker gets a socketpair end; the front relays it to the TLS stream
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    await _send_job(w.ctl, job, theirs.fileno())
                finally:
                    theirs.close()
                relay = await asyncio.open_unix_connection(sock=mine, limit=1 << 18)
        except OSError as exc:
            log.warning("client %s: lost during hand-off: %s", peer, exc)
            w.ctl.close()
            io.close()
            return
        if relay is None:
            conn.close()
        else:
            self._task(tlsmod.pump((io.reader, io.writer), relay))
        # Registered before any await, so that a shutdown starting now sees (and ends) it.
        self.ledger.join(session, tenant)
        self.workers[session] = w
        self._task(self._watch(w))
        log.info("session %d: client %s tenant=%s exe=%s pid=%s%s", session, peer, tenant,
                 identity.get("exe", "?"), identity.get("pid", "?"),
                 f" tls cert={cert_name}" if cert_name else (" tls" if relay else ""))
        try:
            link = await CtlLink.over(w.ctl, lambda msg: self._on_worker(w, msg),
                                      name=f"session {session}")
        except (OSError, ValueError):  # closed by a shutdown meanwhile: the worker is killed
            return
        w.link = link
        self._task(link.run())
        if self._stopping:
            link.notify("shutdown", grace=self.config.shutdown_grace)

    async def _refuse(self, io: _PlainIO | _TlsIO, rid: int, peer: str, status: int,
                      reason: str) -> None:
        log.warning("client %s refused: %s", peer, reason)
        try:
            await io.send(handshake.refusal(rid, status, reason))
        except OSError:
            pass
        io.close()

    async def _watch(self, w: Worker) -> None:
        rc = await w.proc.wait()
        self.workers.pop(w.session, None)
        w.close_ctl()
        # Whatever the worker held goes back to its tenant now: its process, and with it
        # every allocation and context, is gone.
        self.ledger.forget(w.session)
        self.energy.forget(w.session)
        if rc != 0:
            log.warning("session %d: worker exited with status %d", w.session, rc)
        else:
            log.info("session %d: ended", w.session)

    # ------------------------------------------------------------ requests of workers
    def _on_worker(self, w: Worker, msg: dict):
        """A worker's request or notice on its control link (see daemon/worker.py)."""
        op = msg.get("op")
        if op == "reserve":
            return {"refused": self.ledger.reserve(w.session, int(msg.get("bytes", 0)))}
        if op == "release":
            self.ledger.release(w.session, int(msg.get("bytes", 0)))
            return None
        if op == "open_gpu":
            gpu = int(msg.get("gpu", -1))
            why = self.ledger.open_gpu(w.session, gpu)
            if why:
                log.warning("session %d: tenant %s refused GPU %d: %s", w.session, w.tenant,
                            gpu, why)
            return {"refused": why}
        if op == "close_gpu":
            self.ledger.close_gpu(w.session, int(msg.get("gpu", -1)))
            return None
        if op == "usage":
            return {"used": self.ledger.tenant_used(w.session)}
        if op == "energy":
            return self._energy_now(w)
        return {"error": f"unknown request {op!r}"}

    # ------------------------------------------------------------ energy
    async def _energy_loop(self) -> None:
        while not self._stopping:
            try:
                await self._energy_tick()
            except Exception:
                log.exception("energy sampling failed")
            await asyncio.sleep(ENERGY_INTERVAL)

    async def _energy_tick(self) -> list[dict]:
        """Sample the GPUs, read every session's busy clocks, attribute, push the figures."""
        async with self._energy_lock:
            samples = await asyncio.to_thread(self.meter.sample) if self.meter else []
            workers = [w for w in list(self.workers.values()) if w.link is not None]
            answers = await asyncio.gather(*(self._ask(w, "status") for w in workers))
            busy = {w.session: {int(g): float(b) for g, b in a.get("busy_s_by_gpu", {}).items()}
                    for w, a in zip(workers, answers, strict=True) if a is not None}
            self.energy.update(samples, busy)
            for w in workers:
                if w.session in busy:
                    w.link.notify("energy", joules=self.energy.of(w.session))
            return samples

    async def _energy_now(self, w: Worker) -> dict:
        if self.meter is not None:
            await self._energy_tick()
        return {"joules": self.energy.of(w.session)}

    # ------------------------------------------------------------ status
    async def _ask(self, w: Worker, op: str) -> dict | None:
        try:
            return await w.link.request(op, timeout=CTL_TIMEOUT)
        except (ConnectionError, TimeoutError):
            return None

    async def status(self) -> dict:
        """Servers, GPUs and connected sessions (each with its tenant), as `farcuda status`
        shows them. GPU readings come from NVML; without it, memory used is what the
        sessions hold and utilization, power and energy are None (unavailable)."""
        samples = await self._energy_tick() if self.meter else []  # figures up to now
        workers = [w for w in list(self.workers.values()) if w.link is not None]
        answers = await asyncio.gather(*(self._ask(w, "status") for w in workers))
        tenants = []
        for w, st in zip(workers, answers, strict=True):
            if st is None:
                continue
            st.update(peer=w.peer, tenant=w.tenant, energy_j=self.energy.of(w.session))
            if self.config.memory_per_tenant is not None:  # what the quota counts
                st["tenant_memory"] = self.ledger.tenant_used(w.session)
            tenants.append(st)
        gpus = []
        for g in range(self.gpus):
            info = self.gpu_info[g] if g < len(self.gpu_info) else {}
            nv = samples[g] if g < len(samples) else {}
            on = [t for t in tenants if any(d.get("gpu") == g
                                            for d in t.get("devices", {}).values())]
            held = sum(d.get("memory_held", 0) for t in on for d in t["devices"].values()
                       if d.get("gpu") == g)
            used = nv.get("memory_used")
            gpus.append({"gpu": g, "name": info.get("name", "?"),
                         "memory_total": nv.get("memory_total") or info.get("total_mem", 0),
                         "memory_used": used if used is not None else held,
                         "memory_source": "nvml" if used is not None else "tenants",
                         "utilization": nv.get("utilization"), "power_w": nv.get("power_w"),
                         "energy_j": self.energy.gpu_j[g] if g < len(self.energy.gpu_j)
                         else None,
                         "tenants": len({t["tenant"] for t in on})})
        return {"server": [f"{h}:{p}" for h, p in self.addresses], "driver": self.driver,
                "gpus": gpus, "tenants": tenants, "tls": self._tls is not None,
                "auth": bool(self.config.tokens),
                "limits": {"memory_per_tenant": self.config.memory_per_tenant,
                           "tenants_per_gpu": self.config.tenants_per_gpu},
                "energy": {"available": self.meter is not None,
                           "source": "nvml" if self.meter is not None else None,
                           "interval_s": ENERGY_INTERVAL,
                           "unattributed_j": self.energy.unattributed_j
                           if self.meter is not None else None}}

    async def _answer_status(self, io: _PlainIO | _TlsIO, rid: int) -> None:
        st = await self.status()
        try:
            await io.send(handshake.refusal(rid, 0, json.dumps(st)))
        except OSError:
            pass
        io.close()
