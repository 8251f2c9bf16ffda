"""`farcuda-device-plugin`: a farcuda pool's remote GPUs as extended resources of a node.

    farcuda-device-plugin --pool FILE [--node-name NAME] [--kubelet-dir DIR]
                          [--token-file FILE] [--interval S] [--client-dir DIR]

On a node with no GPU, it serves the kubelet's device-plugin API (v1beta1, api.proto) for
each kind of unit the pool offers this node: ``<domain>/gpu`` (whole remote GPUs) and
``<domain>/vgpu`` (SM-budgeted slices), each on its own unix socket in the kubelet's
device-plugin folder, and registers each with the kubelet.

- ``ListAndWatch``: the node's units, Healthy while their server answers ``farcuda status``
  and still has their GPU; a new list goes out whenever that changes (one poll of every
  server each ``--interval`` seconds, shared by both resources).
- ``Allocate``: the container's device map (FARCUDA_DEVICES, in the order the kubelet gave
  the devices), the pool's token (FARCUDA_TOKEN, read from ``--token-file``: a Secret's
  file, read at every Allocate so that a rotated Secret takes effect), FARCUDA_JOB, and the
  client: the farcuda installation this plugin runs from, mounted read-only from the host
  (``--client-host-dir``) at the same path, with the shim's folder on LD_LIBRARY_PATH.
- ``GetPreferredAllocation``: as few servers (GPUs, for slices) as will do.

Which node offers which units is the pool file's ``nodes`` (cluster/pool.py): the kubelet
allocates among the pods of one node only, so a unit offered by two nodes could be given
twice. A kubelet that restarts deletes the plugins' sockets; the plugin notices, serves anew
and registers again.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

from farcuda.cluster.pool import KINDS, Pool, PoolError, Unit, load, survey, unit_health

__all__ = ["main", "build_parser", "device_id", "PoolWatch", "ResourcePlugin", "preferred"]

log = logging.getLogger("farcuda-device-plugin")

API_VERSION = "v1beta1"
KUBELET_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"


def _api():
    try:
        from . import api_pb2, api_pb2_grpc
    except ImportError as exc:
        raise SystemExit(f"farcuda-device-plugin needs the cluster extra (pip install "
                         f"'farcuda[cluster]'): {exc}") from None
    return api_pb2, api_pb2_grpc


def device_id(u: Unit) -> str:
    """The kubelet's name for a unit: the ledger's, or a digest of it past the 63 characters
    the API allows."""
    if len(u.id) <= 63:
        return u.id
    return f"{u.kind}-{hashlib.sha256(u.id.encode()).hexdigest()[:24]}"


class PoolWatch:
    """Health of every unit, from one survey of the pool's servers per interval."""

    def __init__(self, pool: Pool, token_file: str | None, interval: float) -> None:
        self.pool = pool
        self.token_file = token_file
        self.interval = interval
        self.cond = threading.Condition()
        self.health: dict[str, bool] = {}
        self.version = 0  # bumped on every change of health
        self.stopping = False
        self._thread: threading.Thread | None = None

    def token(self) -> str | None:
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip() or None
            except OSError as exc:
                log.error("token file %s: %s", self.token_file, exc.strerror)
                return None
        return self.pool.read_token()

    def poll(self) -> None:
        statuses = survey(self.pool.servers, self.token(), timeout=min(5.0, self.interval))
        health = unit_health(self.pool, statuses)
        with self.cond:
            if health != self.health:
                for server, st in statuses.items():
                    if "error" in st:
                        log.warning("server %s: %s", server, st["error"])
                self.health = health
                self.version += 1
                self.cond.notify_all()

    def start(self) -> None:
        self.poll()  # the first list the kubelet gets is already a real one

        def run() -> None:
            while not self.stopping:
                with self.cond:
                    self.cond.wait(self.interval)
                if not self.stopping:
                    try:
                        self.poll()
                    except Exception:  # a poll that failed must not end the watch
                        log.exception("polling the pool")
        self._thread = threading.Thread(target=run, name="pool-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


def preferred(available: list[Unit], must: list[Unit], size: int) -> list[Unit]:
    """``size`` units including ``must``: the rest from the groups (server, or GPU for slices)
    that already hold the most of the choice, then from the fullest groups."""
    chosen = list(dict.fromkeys(must))[:size]

    def group(u: Unit) -> tuple:
        return (u.server,) if u.kind == "gpu" else (u.server, u.gpu)
    rest = [u for u in available if u not in chosen]
    counts: dict[tuple, int] = {}
    for u in rest:
        counts[group(u)] = counts.get(group(u), 0) + 1
    while len(chosen) < size and rest:
        mine = {group(u) for u in chosen}
        rest.sort(key=lambda u: (group(u) not in mine, -counts[group(u)], u.server, u.gpu,
                                 u.index))
        chosen.append(rest.pop(0))
    return chosen


class ResourcePlugin:
    """One extended resource: its gRPC server on its socket, and its registration."""

    def __init__(self, kind: str, units: list[Unit], pool: Pool, watch: PoolWatch,
                 kubelet_dir: Path, node: str, client_dir: str | None,
                 client_host_dir: str | None, shim_dir: str) -> None:
        self.kind = kind
        self.units = units
        self.by_id = {device_id(u): u for u in units}
        self.pool = pool
        self.watch = watch
        self.kubelet_dir = kubelet_dir
        self.node = node
        self.client_dir = client_dir
        self.client_host_dir = client_host_dir
        self.shim_dir = shim_dir
        self.resource = pool.resource(kind)
        self.endpoint = f"farcuda-{pool.name}-{kind}.sock"
        self.socket = kubelet_dir / self.endpoint
        self.server = None
        self.stopping = False
        self._kubelet_ino: int | None = None

    # ------------------------------------------------------------ the service
    def GetDevicePluginOptions(self, request, context):
        api, _ = _api()
        return api.DevicePluginOptions(pre_start_required=False,
                                       get_preferred_allocation_available=True)

    def _list(self, health: dict[str, bool]):
        api, _ = _api()
        return api.ListAndWatchResponse(devices=[
            api.Device(ID=device_id(u), health=HEALTHY if health.get(u.id) else UNHEALTHY)
            for u in self.units])

    def ListAndWatch(self, request, context):
        seen = -1
        while context.is_active() and not self.stopping:
            with self.watch.cond:
                if self.watch.version == seen:
                    self.watch.cond.wait(1.0)  # and look at the stream now and then
                if self.watch.version == seen:
                    continue
                seen, health = self.watch.version, dict(self.watch.health)
            yield self._list(health)

    def GetPreferredAllocation(self, request, context):
        api, _ = _api()
        out = []
        for req in request.container_requests:
            avail = [self.by_id[i] for i in req.available_deviceIDs if i in self.by_id]
            must = [self.by_id[i] for i in req.must_include_deviceIDs if i in self.by_id]
            pick = preferred(avail, must, req.allocation_size)
            out.append(api.ContainerPreferredAllocationResponse(
                deviceIDs=[device_id(u) for u in pick]))
        return api.PreferredAllocationResponse(container_responses=out)

    def Allocate(self, request, context):
        import grpc
        api, _ = _api()
        token = self.watch.token()
        out = []
        for req in request.container_requests:
            unknown = [i for i in req.devices_ids if i not in self.by_id]
            if unknown:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{self.resource}: no such device(s) {', '.join(unknown)}")
            units = [self.by_id[i] for i in req.devices_ids]
            envs = {"FARCUDA_DEVICES": ",".join(u.device for u in units),
                    "FARCUDA_JOB": f"k8s:{self.node}",
                    "LD_LIBRARY_PATH": self.shim_dir}
            if token:
                envs["FARCUDA_TOKEN"] = token
            mounts = []
            if self.client_host_dir and self.client_dir:
                mounts.append(api.Mount(container_path=self.client_dir,
                                        host_path=self.client_host_dir, read_only=True))
            out.append(api.ContainerAllocateResponse(envs=envs, mounts=mounts))
            log.info("%s: allocated %s", self.resource, envs["FARCUDA_DEVICES"])
        return api.AllocateResponse(container_responses=out)

    def PreStartContainer(self, request, context):
        api, _ = _api()
        return api.PreStartContainerResponse()

    # ------------------------------------------------------------ life
    def serve(self) -> None:
        import grpc
        _, rpc = _api()
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        rpc.add_DevicePluginServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.server.start()

    def register(self) -> None:
        import grpc
        api, rpc = _api()
        kubelet = self.kubelet_dir / KUBELET_SOCKET
        with grpc.insecure_channel(f"unix://{kubelet}") as ch:
            rpc.RegistrationStub(ch).Register(api.RegisterRequest(
                version=API_VERSION, endpoint=self.endpoint, resource_name=self.resource,
                options=self.GetDevicePluginOptions(None, None)), timeout=10)
        self._kubelet_ino = kubelet.stat().st_ino
        log.info("registered %s (%d device(s)) at %s", self.resource, len(self.units),
                 self.socket)

    def stale(self) -> bool:
        """The kubelet restarted: it deleted our socket, or its own is a new one."""
        try:
            ino = (self.kubelet_dir / KUBELET_SOCKET).stat().st_ino
        except FileNotFoundError:
            ino = None
        return not self.socket.exists() or ino != self._kubelet_ino

    def stop(self) -> None:
        self.stopping = True
        if self.server is not None:
            self.server.stop(grace=1).wait()
            self.server = None


def _serve_and_register(p: ResourcePlugin, stop: threading.Event) -> bool:
    p.stopping = False
    p.serve()
    while not stop.is_set():
        try:
            p.register()
            return True
        except Exception as exc:  # the kubelet is not (yet) there: try again
            log.warning("registering %s: %s", p.resource, exc)
            stop.wait(2.0)
    return False


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="farcuda-device-plugin",
                                 description="a farcuda pool's remote GPUs for the kubelet")
    ap.add_argument("--pool", required=True, metavar="FILE", help="the pool file")
    ap.add_argument("--node-name", default=os.environ.get("NODE_NAME", ""),
                    help="this node (default $NODE_NAME): picks its units from the pool")
    ap.add_argument("--kubelet-dir", default=KUBELET_DIR, type=Path)
    ap.add_argument("--token-file", metavar="FILE",
                    help="the pool's token (a Secret's file); default: the pool's token_file")
    ap.add_argument("--interval", type=float, default=10.0, metavar="S",
                    help="seconds between health polls of the servers")
    ap.add_argument("--client-dir", metavar="DIR",
                    help="the farcuda installation, as containers see it (default: the prefix "
                         "this plugin runs from)")
    ap.add_argument("--client-host-dir", metavar="DIR",
                    help="the same installation on the host, mounted read-only at "
                         "--client-dir in every container given a device (default: no mount)")
    ap.add_argument("--log-level", default="info",
                    choices=["debug", "info", "warning", "error"])
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _api()  # the extra is there, or say so now
    try:
        pool = load(args.pool)
    except PoolError as exc:
        print(f"farcuda-device-plugin: {exc}", file=sys.stderr)
        return 2
    from farcuda.interposer.cli import shim_path
    node = args.node_name
    mine = [u for u in pool.units if not u.nodes or node in u.nodes]
    if not mine:
        print(f"farcuda-device-plugin: the pool {pool.name} offers node {node or '(unnamed)'} "
              "no unit", file=sys.stderr)
        return 2
    watch = PoolWatch(pool, args.token_file, args.interval)
    watch.start()
    plugins = [ResourcePlugin(k, [u for u in mine if u.kind == k], pool, watch,
                              args.kubelet_dir, node, args.client_dir or sys.prefix,
                              args.client_host_dir, str(shim_path().parent))
               for k in KINDS if any(u.kind == k for u in mine)]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for p in plugins:
        _serve_and_register(p, stop)
    while not stop.wait(1.0):
        for p in plugins:
            if p.stale():
                log.info("%s: the kubelet restarted; serving and registering again",
                         p.resource)
                p.stop()
                _serve_and_register(p, stop)
    for p in plugins:
        p.stop()
    watch.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
