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

Before any of that, admission (daemon/admission.py): a peer's new connections per second and
handshakes at once are bounded, and every handshake must end within ``handshake_timeout``;
after it, sessions in all and per tenant (daemon/tenants.py). A refusal reaches the client as
cudaErrorDevicesUnavailable with one line naming the limit, and the log says it once per peer
and interval. With [metrics], the front serves Prometheus text (daemon/metrics.py).

On SIGTERM (``shutdown``) listening stops at once (new connections are refused), sessions get
``shutdown_grace`` seconds to finish the calls they are running, then a GOODBYE; then every
worker is gone and the front returns.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from farcuda.wire import BY_NAME, HEADER, HEADER_SIZE, VERSION, handshake
from farcuda.wire import tls as tlsmod

from .admission import Admission, LogThrottle, peer_key
from .config import DaemonConfig
from .ctl import CtlLink
from .energy import EnergyLedger, GpuMeter
from .errors import E
from .metrics import MetricsLedger, serve_http
from .mps import Mps, MpsError
from .tenants import TenantLedger

__all__ = ["Daemon", "DaemonError"]

log = logging.getLogger("farcudad")

HELLO = BY_NAME["HELLO"]
MAX_HELLO_TAIL = 64 << 10
ENERGY_INTERVAL = 1.0  # seconds between NVML samples (and energy attributions)
CTL_TIMEOUT = 2.0
REFUSAL_TIMEOUT = 2.0  # seconds a refused client gets to send its HELLO and hear why
ACCEPT_BATCH = 256  # connections taken from a listening socket's backlog at one wake-up
LOG_INTERVAL = 60.0  # refusals and failed handshakes: a few lines per peer per interval
LOG_BURST = 5  # lines per peer and interval for failed handshakes and authentication


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("farcuda")
    except Exception:  # not installed as a distribution (a source tree on sys.path)
        return "unknown"


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
    label: str = ""  # the tenant as the metrics count it (daemon/metrics.py)
    since: float = 0.0
    link: CtlLink | None = None  # the control link, once the worker serves a session
    last: dict | None = None  # its latest status (what the metrics keep when it ends)

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
        self.backend_options = dict(backend_options or {})
        if backend == "cuda" and not config.shared_contexts:  # ([gpu] shared_contexts)
            self.backend_options.setdefault("share", False)
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
        self._serving = False
        self._spawning = 0
        self.stopped: asyncio.Future | None = None
        self.ledger = TenantLedger(config.memory_per_tenant, config.tenants_per_gpu,
                                   config.sessions_total, config.sessions_per_tenant)
        self.admission = Admission(config.connections_per_second_per_peer,
                                   config.handshakes_per_peer, config.handshakes_total)
        self.throttle = LogThrottle(LOG_INTERVAL)
        self.metrics = MetricsLedger()
        self.metrics_address: tuple[str, int] | None = None
        self._metrics_server: asyncio.Server | None = None
        self._scrapes = asyncio.Semaphore(4)  # scrapes at once (each asks every worker)
        self.refused: Counter[str] = Counter()  # by limit or reason
        self.handshake_failures: Counter[str] = Counter()  # by reason
        self.worker_failures = 0
        self.sessions_started = 0
        self.meter: GpuMeter | None = None
        self.mps: Mps | None = None  # [gpu] mps: the workers are MPS clients
        self.energy = EnergyLedger(0)
        self._energy_lock = asyncio.Lock()
        self._tls = (tlsmod.server_context(config.tls_cert, config.tls_key, config.tls_client_ca)
                     if config.tls_cert is not None else None)  # (config.tls)
        self._own_cache: str | None = None  # the module cache folder made for this daemon

    # ------------------------------------------------------------ workers
    async def _spawn(self) -> Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        for var in ("LD_PRELOAD",):  # never run the daemon's workers through the shim
            env.pop(var, None)
        if self.mps is not None:
            env.update(self.mps.env)
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
                self.worker_failures += 1
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
                self.worker_failures += 1
                raise DaemonError(w.ready.get("error", "worker failed"))
        self._task(self._refill())
        return w

    def _task(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # ------------------------------------------------------------ start / stop
    def module_cache(self) -> str | None:
        """The module cache folder workers share (daemon/modcache.py), None when off."""
        if self.config.module_cache == "off":
            return None
        if self.config.module_cache:
            return self.config.module_cache
        if self._own_cache is None:
            self._own_cache = tempfile.mkdtemp(prefix="farcudad-modules-")
        return self._own_cache

    async def start(self) -> list[tuple[str, int]]:
        """Bind the addresses, start a first worker (proving the backend works), then
        accept. Binding comes first: an address in use is said at once, not after the
        seconds a GPU's initialization takes (connections made meanwhile wait in the
        backlog)."""
        self.stopped = asyncio.get_running_loop().create_future()
        for host, port in self.config.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                s.close()
                raise DaemonError(f"cannot listen on {host}:{port}: "
                                  f"{exc.strerror or exc}") from None
            # a deep backlog: under a flood, the other peers' connections wait there while
            # the accept loop sheds the flood's
            s.listen(socket.SOMAXCONN)
            s.setblocking(False)
            self._listeners.append(s)
            self.addresses.append(s.getsockname()[:2])
        if self.config.metrics_listen is not None:
            await self._start_metrics(*self.config.metrics_listen)
        if self.config.mps:
            try:
                self.mps = await asyncio.to_thread(Mps.open, self.config)
            except MpsError as exc:
                raise DaemonError(str(exc)) from None
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
        for s in self._listeners:
            self._task(self._accept_loop(s))
        self._serving = True
        self._task(self._refill())
        self._task(self._flush_log_loop())
        log.info("listening on %s%s; %d GPU(s), driver %d",
                 ", ".join(f"{h}:{p}" for h, p in self.addresses),
                 " (TLS)" if self._tls is not None else "", self.gpus, self.driver)
        exposed = [f"{h}:{p}" for h, p in self.addresses if not is_loopback(h)]
        if exposed and not self.authenticates:
            log.warning("listening on %s with no authentication: anyone who can reach it may "
                        "use the GPUs and see who else does; set [auth] tokens (or [tls] "
                        "client_ca) in the configuration file", ", ".join(exposed))
        return self.addresses

    @property
    def authenticates(self) -> bool:
        """Must a client prove who it is (a token, or a certificate of the client CA)?"""
        return bool(self.config.tokens) or self.config.tls_client_ca is not None

    async def _start_metrics(self, host: str, port: int) -> None:
        async def scrape(reader, writer):
            await serve_http(reader, writer, self.metrics_text)
        try:
            self._metrics_server = await asyncio.start_server(scrape, host, port,
                                                              limit=8 << 10)
        except OSError as exc:
            raise DaemonError(f"cannot serve metrics on {host}:{port}: "
                              f"{exc.strerror or exc}") from None
        self.metrics_address = self._metrics_server.sockets[0].getsockname()[:2]
        h, p = self.metrics_address
        log.info("metrics at http://%s:%d/metrics", h if ":" not in h else f"[{h}]", p)
        if not is_loopback(h):
            log.warning("metrics on %s:%d are open to anyone who can reach them (they name "
                        "tenants); keep them on loopback or a monitoring network", h, p)

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
            # and what else waits in the backlog, without a trip through the event loop for
            # each: under a flood, the backlog must empty faster than the flood fills it, or
            # the kernel drops the other peers' connection requests too
            batch = [(conn, addr)]
            while len(batch) < ACCEPT_BATCH:
                try:
                    batch.append(lsock.accept())
                except OSError:  # (BlockingIOError: nothing more waits)
                    break
            for conn, addr in batch:
                conn.setblocking(False)
                key = peer_key(addr[0])
                why = self.admission.connect(key)
                if why is None:
                    self._task(self._handle(conn, addr, key))
                else:
                    self._refuse_at_door(conn, addr, key, why)

    def _refuse_at_door(self, conn: socket.socket, addr, key: str, why: tuple[str, str]) -> None:
        """A connection over a per-peer or handshake limit: told why, if this peer is not
        being told already (see daemon/admission.py), else closed at once."""
        limit, reason = why
        self.refused[limit] += 1
        self._log_refusal(f"{addr[0]}:{addr[1]}", key, limit, reason, burst=1)
        if self.admission.may_speak(key):
            self._task(self._tell_refusal(conn, key, reason))
        else:
            conn.close()

    async def _tell_refusal(self, conn: socket.socket, key: str, reason: str) -> None:
        """The refusal as a client understands it: a SERVER_HELLO, its HELLO, a REPLY."""
        io: _PlainIO | _TlsIO = _PlainIO(conn)
        try:
            async with asyncio.timeout(REFUSAL_TIMEOUT):
                if self._tls is not None:
                    io = await self._start_tls(conn, REFUSAL_TIMEOUT)
                await io.send(handshake.server_hello(handshake.new_challenge(),
                                                     bool(self.config.tokens)))
                length, op, _flags, rid, _vdev, _aux = HEADER.unpack(
                    await io.recv_exact(HEADER_SIZE))
                if op == HELLO.op and length <= HELLO.size + MAX_HELLO_TAIL:
                    await io.recv_exact(length)
                    await io.send(handshake.refusal(rid, E["cudaErrorDevicesUnavailable"],
                                                    reason))
        except (TimeoutError, ConnectionError, OSError, struct.error):
            pass
        finally:
            io.close()
            self.admission.spoken(key)

    def _log_refusal(self, peer: str, key: str, kind: str, reason: str, burst: int) -> None:
        ok, held = self.throttle.allow((key, kind), burst)
        if held:
            self._say_held(key, kind, held)
        if ok:
            log.warning("client %s refused: %s%s", peer, reason,
                        f" (logged once per peer and {LOG_INTERVAL:.0f} s)" if burst == 1
                        else "")

    async def _flush_log_loop(self) -> None:
        """Say what the log throttle held back, once each interval ends."""
        while not self._stopping:
            await asyncio.sleep(min(5.0, LOG_INTERVAL))
            for (key, kind), held in self.throttle.flush():
                self._say_held(key, kind, held)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let running calls finish within ``grace``, then end everything."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.config.shutdown_grace if grace is None else grace
        for s in self._listeners:
            s.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._serving:  # (a daemon that never served has nothing to drain)
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
        if self.mps is not None:
            await asyncio.to_thread(self.mps.close)
        for t in list(self._tasks):
            if t is not asyncio.current_task():
                t.cancel()
        if self._own_cache is not None:
            shutil.rmtree(self._own_cache, ignore_errors=True)
            self._own_cache = None
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(None)

    # ------------------------------------------------------------ clients
    def _tenant_of(self, identity: dict, token_name: str | None, peer: str) -> str:
        if token_name is not None:
            return token_name
        return f"{identity.get('host', peer)}:{identity.get('pid', 0)}"

    async def _start_tls(self, conn: socket.socket, timeout: float) -> _TlsIO:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 18)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol, sock=conn, ssl=self._tls, ssl_handshake_timeout=timeout)
        return _TlsIO(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    def _handshake_failed(self, peer: str, key: str, kind: str, why: str) -> None:
        self.handshake_failures[kind] += 1
        ok, held = self.throttle.allow((key, "handshake"), LOG_BURST)
        if held:
            self._say_held(key, "handshake", held)
        if ok:
            log.warning("client %s: %s", peer, why)

    def _say_held(self, key: str, kind: str, held: int) -> None:
        log.warning("peer %s: %d more %s in the last %.0f s, not logged one by one", key, held,
                    "failed handshakes" if kind == "handshake" else f"refusals ({kind})",
                    LOG_INTERVAL)

    async def _handle(self, conn: socket.socket, addr, key: str) -> None:
        """A connection admitted at the door: its handshake (holding one of the peer's
        handshake places until the HELLO is in), then a session, or a refusal."""
        peer = f"{addr[0]}:{addr[1]}"
        rid = 0
        io: _PlainIO | _TlsIO = _PlainIO(conn)
        cert_name = None
        limit = self.config.handshake_timeout
        stage = "during the TLS handshake" if self._tls is not None else "before its HELLO"
        try:
            async with asyncio.timeout(limit):
                if self._tls is not None:
                    try:
                        io = await self._start_tls(conn, limit)
                    except (ConnectionError, OSError) as exc:
                        why = (getattr(exc, "reason", None) or str(exc)
                               or f"{type(exc).__name__} (not a TLS client?)")
                        self._handshake_failed(peer, key, "tls", f"TLS handshake failed: {why}")
                        conn.close()
                        return
                    cert_name = tlsmod.peer_name(io.writer)
                    stage = "before its HELLO"
                challenge = handshake.new_challenge()
                await io.send(handshake.server_hello(challenge, bool(self.config.tokens)))
                head = await io.recv_exact(HEADER_SIZE)
                length, op, _flags, rid, _vdev, _aux = HEADER.unpack(head)
                if op != HELLO.op or not HELLO.size <= length <= HELLO.size + MAX_HELLO_TAIL:
                    raise ValueError("expected a HELLO frame")
                stage = f"in the middle of its HELLO ({length} bytes announced)"
                body = await io.recv_exact(length)
            fixed, tail = body[:HELLO.size], body[HELLO.size:]
            version, _cflags, mac, identity = handshake.parse_client_hello(fixed, tail)
        except TimeoutError:
            # (asyncio.timeout's TimeoutError says nothing: the reason is ours to give)
            self._handshake_failed(peer, key, "timeout", f"handshake failed: timed out "
                                   f"{stage}, after {limit:g} s (limits.handshake_timeout)")
            io.close()
            return
        # RecursionError: an identity of deeply nested JSON ("[[[[..."), which json.loads
        # does not report as a ValueError; uncaught, it left the task dead and the socket open.
        except (ConnectionError, OSError, ValueError, struct.error, RecursionError) as exc:
            kind = "closed" if isinstance(exc, (ConnectionError, OSError)) else "malformed"
            self._handshake_failed(peer, key, kind, f"handshake failed {stage}: "
                                   f"{exc or type(exc).__name__}")
            io.close()
            return
        finally:
            self.admission.handshake_done(key)
        token_name = None
        unavailable = E["cudaErrorDevicesUnavailable"]
        if version != VERSION:
            await self._refuse(io, rid, peer, key, E["cudaErrorInsufficientDriver"], "version",
                               f"protocol version {version} is not this server's {VERSION}; "
                               "use matching farcuda versions")
            return
        if self.config.tokens:
            token_name = handshake.check_mac(self.config.tokens, challenge, tail, mac)
            if token_name is None:
                await self._refuse(io, rid, peer, key, unavailable, "auth",
                                   "authentication failed: this server requires a valid "
                                   "FARCUDA_TOKEN")
                return
        tenant = self._tenant_of(identity, token_name, peer)
        if identity.get("purpose") == "status":
            await self._answer_status(io, rid)
            return
        if self._stopping:
            await self._refuse(io, rid, peer, key, unavailable, "shutting_down",
                               "the server is shutting down")
            return
        why = self.ledger.admit(tenant)
        if why is not None:
            await self._refuse(io, rid, peer, key, unavailable, why[0], why[1], burst=1)
            return
        try:
            w = await self._take_worker()
        except (DaemonError, OSError) as exc:  # OSError: no process could be started
            self.ledger.withdraw(tenant)
            await self._refuse(io, rid, peer, key, unavailable, "worker",
                               f"the server could not start a worker: {exc}")
            return
        if self._stopping:  # (it began while a worker was started for this client)
            self.ledger.withdraw(tenant)
            w.ctl.close()
            await self._refuse(io, rid, peer, key, unavailable, "shutting_down",
                               "the server is shutting down")
            return
        session = next(self._sessions)
        w.session, w.peer, w.identity, w.tenant, w.since = session, peer, identity, tenant, \
            time.time()
        # Without tokens every process is a tenant: the metrics count those by peer address.
        w.label = self.metrics.label(token_name if token_name is not None else key)
        job = {"session": session, "identity": identity, "peer": peer, "tenant": tenant,
               "heartbeat_ms": self.config.heartbeat_ms,
               "client_timeout": self.config.client_timeout,
               # What the worker asks the front for (when none: it decides alone, at once).
               # The quota is the tenant's, over all its sessions: only the front can keep it.
               "tenant_quota": self.config.memory_per_tenant,
               "tenants_per_gpu": self.config.tenants_per_gpu,
               "energy": self.meter is not None,
               "module_cache": self.module_cache(),
               "module_cache_bytes": self.config.module_cache_bytes}
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
            self.ledger.withdraw(tenant)
            w.ctl.close()
            io.close()
            return
        if relay is None:
            conn.close()
        else:
            assert isinstance(io, _TlsIO)  # only a TLS client is relayed
            self._task(tlsmod.pump((io.reader, io.writer), relay))
        # Registered before any await, so that a shutdown starting now sees (and ends) it.
        self.ledger.join(session, tenant)
        self.sessions_started += 1
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

    async def _refuse(self, io: _PlainIO | _TlsIO, rid: int, peer: str, key: str, status: int,
                      kind: str, reason: str, burst: int = LOG_BURST) -> None:
        """Tell the client why (one line) and close. A limit's refusal is logged once per
        peer and interval (``burst`` 1), the others a few times."""
        self.refused[kind] += 1
        self._log_refusal(peer, key, kind, reason, burst)
        try:
            await io.send(handshake.refusal(rid, status, reason))
        except OSError:
            pass
        io.close()

    async def _watch(self, w: Worker) -> None:
        rc = await w.proc.wait()
        # Whatever the worker held goes back to its tenant now: its process, and with it
        # every allocation and context, is gone.
        self.ledger.forget(w.session)
        if w.link is not None:  # its last word (the "final" figures) may still be in flight
            try:
                await asyncio.wait_for(asyncio.shield(w.link.closed), 1.0)
                await asyncio.sleep(0)  # (the handler of that last line runs first)
            except TimeoutError:
                pass
        self.workers.pop(w.session, None)
        w.close_ctl()
        self.metrics.retire(w.label, w.last, self.energy.of(w.session))
        self.energy.forget(w.session)
        if rc != 0:
            self.worker_failures += 1
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
        if op == "final":  # the session's figures as it ended (kept by the metrics)
            msg.pop("op", None)
            w.last = msg
            return None
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
            for w, a in zip(workers, answers, strict=True):
                if a is not None:
                    w.last = dict(a)
            self.energy.update(samples, busy)
            for w in workers:
                if w.session in busy and w.link is not None:
                    w.link.notify("energy", joules=self.energy.of(w.session))
            return samples

    async def _energy_now(self, w: Worker) -> dict:
        if self.meter is not None:
            await self._energy_tick()
        return {"joules": self.energy.of(w.session)}

    # ------------------------------------------------------------ status
    async def _ask(self, w: Worker, op: str) -> dict | None:
        if w.link is None:  # (not serving yet)
            return None
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
            w.last = dict(st)
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
                         # multiProcessorCount: what the SM budgets of its devices divide
                         "sm_count": info.get("attrs", {}).get("16"),
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
                # open: no client must prove who it is (no tokens, no client certificates)
                "open": not self.authenticates,
                "version": _version(),
                "limits": self.limits(),
                "energy": {"available": self.meter is not None,
                           "source": "nvml" if self.meter is not None else None,
                           "interval_s": ENERGY_INTERVAL,
                           "unattributed_j": self.energy.unattributed_j
                           if self.meter is not None else None}}

    def limits(self) -> dict:
        c = self.config
        return {"memory_per_tenant": c.memory_per_tenant, "tenants_per_gpu": c.tenants_per_gpu,
                "sessions_total": c.sessions_total, "sessions_per_tenant": c.sessions_per_tenant,
                "handshakes_total": c.handshakes_total,
                "handshakes_per_peer": c.handshakes_per_peer,
                "connections_per_second_per_peer": c.connections_per_second_per_peer,
                "handshake_timeout": c.handshake_timeout}

    async def metrics_text(self) -> str:
        """A scrape (daemon/metrics.py): the status of now, and what ended sessions left."""
        async with self._scrapes:
            st = await self.status()
            by_session = {t["session"]: t for t in st["tenants"]}
            # A session that did not answer (ending, its worker gone) counts with its last
            # figures until _watch hands them to the ended ones: never in neither place.
            live = [(w.label, t) for w in list(self.workers.values())
                    if (t := by_session.get(w.session, w.last)) is not None]
            front = {"version": st["version"], "limits": st["limits"],
                     "sessions_started": self.sessions_started, "refused": self.refused,
                     "handshake_failures": self.handshake_failures,
                     "worker_failures": self.worker_failures,
                     "handshakes": self.admission.shaking, "idle": len(self.idle)}
            return self.metrics.render(live, st, front)

    async def _answer_status(self, io: _PlainIO | _TlsIO, rid: int) -> None:
        st = await self.status()
        try:
            await io.send(handshake.refusal(rid, 0, json.dumps(st)))
        except OSError:
            pass
        io.close()
