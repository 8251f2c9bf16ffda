"""farcuda-device-plugin against a kubelet stand-in: the stand-in serves the real
Registration service (api.proto) on kubelet.sock in a temporary device-plugin folder and
calls the plugin's services over its unix sockets as the kubelet does; the plugin is the
real program, and the pool two real daemons (in-memory backend).

The pool: server A's two GPUs whole, server B's GPU 0 whole but offered only by another node,
server B's GPU 1 as two slices of 64 SMs.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest
from farcuda.interposer.cli import query_status, shim_path

# (packages of the test extra are not on the offline GPU machine: skipped there)
grpc = pytest.importorskip("grpc")
api = pytest.importorskip("farcuda.cluster.deviceplugin.api_pb2")
rpc = pytest.importorskip("farcuda.cluster.deviceplugin.api_pb2_grpc")

pytestmark = pytest.mark.slow

TOKEN = "k8s-pool-secret"


class Kubelet:
    """The kubelet's side: Registration served on kubelet.sock, registrations queued."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.registered: queue.Queue = queue.Queue()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        kubelet = self

        class Registration(rpc.RegistrationServicer):
            def Register(self, request, context):
                kubelet.registered.put(request)
                return api.Empty()
        rpc.add_RegistrationServicer_to_server(Registration(), self.server)
        self.server.add_insecure_port(f"unix://{folder / 'kubelet.sock'}")
        self.server.start()

    def next_registration(self, timeout: float = 30):
        return self.registered.get(timeout=timeout)

    def stub(self, endpoint: str) -> rpc.DevicePluginStub:
        ch = grpc.insecure_channel(f"unix://{self.folder / endpoint}")
        grpc.channel_ready_future(ch).result(timeout=10)
        return rpc.DevicePluginStub(ch)

    def stop(self) -> None:
        self.server.stop(grace=0).wait()


class Watch:
    """One ListAndWatch stream, read in the background: {id: health} per response."""

    def __init__(self, stub: rpc.DevicePluginStub) -> None:
        self.lists: queue.Queue = queue.Queue()
        self.call = stub.ListAndWatch(api.Empty())
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for r in self.call:
                self.lists.put({d.ID: d.health for d in r.devices})
        except grpc.RpcError:
            pass

    def until(self, pred, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.lists.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if pred(last):
                return last
        pytest.fail(f"no device list as expected in {timeout} s; last: {last}")


@pytest.fixture
def setup(tmp_path, fc):
    auth = {"auth": {"tokens": {"k8s": TOKEN}}}
    a = fc.start_daemon(tmp_path, "memory", config=auth, backend_options={"gpus": 2})
    b = fc.start_daemon(tmp_path, "memory", config=auth, backend_options={"gpus": 2})
    folder = tmp_path / "device-plugins"
    folder.mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "token").write_text(TOKEN + "\n")
    pool = tmp_path / "pool.toml"
    pool.write_text(f'[[servers]]\naddress = "{a.address}"\ngpus = 2\n'
                    f'[[servers]]\naddress = "{b.address}"\ngpus = [0]\nnodes = ["n2"]\n'
                    f'[[servers]]\naddress = "{b.address}"\ngpus = [1]\nslices = 2\nsm = 64\n')
    kubelet = Kubelet(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
           and k != "LD_PRELOAD"}
    log = open(tmp_path / "plugin.log", "w")
    plugin = subprocess.Popen(
        [sys.executable, "-m", "farcuda.cluster.deviceplugin.plugin", "--pool", str(pool),
         "--node-name", "n1", "--kubelet-dir", str(folder), "--interval", "0.3",
         "--token-file", str(tmp_path / "secret" / "token"),
         "--client-host-dir", sys.prefix, "--log-level", "debug"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    state = {"a": a, "b": b, "kubelet": kubelet, "plugin": plugin, "folder": folder,
             "log": tmp_path / "plugin.log", "tmp": tmp_path}
    try:
        yield state
    finally:
        if plugin.poll() is None:
            plugin.terminate()
            plugin.wait(30)
        state["kubelet"].stop()
        a.stop()
        state["b"].stop()


def _registrations(kubelet: Kubelet, log: Path) -> dict[str, api.RegisterRequest]:
    got = {}
    try:
        for _ in range(2):
            r = kubelet.next_registration()
            got[r.resource_name] = r
    except queue.Empty:
        pytest.fail(f"the plugin did not register: {log.read_text()}")
    return got


def test_register_list_allocate_and_health(setup, program, fc):
    a, b, kubelet = setup["a"], setup["b"], setup["kubelet"]
    regs = _registrations(kubelet, setup["log"])
    assert set(regs) == {"farcuda.io/gpu", "farcuda.io/vgpu"}
    for r in regs.values():
        assert r.version == "v1beta1" and (setup["folder"] / r.endpoint).is_socket()
        assert r.options.get_preferred_allocation_available and not r.options.pre_start_required
    gpu = kubelet.stub(regs["farcuda.io/gpu"].endpoint)
    vgpu = kubelet.stub(regs["farcuda.io/vgpu"].endpoint)
    opts = gpu.GetDevicePluginOptions(api.Empty())
    assert opts.get_preferred_allocation_available
    A0, A1, V0, V1 = f"{a.address}/0", f"{a.address}/1", f"{b.address}/1#0", f"{b.address}/1#1"
    wg, wv = Watch(gpu), Watch(vgpu)
    # B's GPU 0 belongs to node n2: n1 offers only what the pool gives it
    assert wg.until(lambda d: True) == {A0: "Healthy", A1: "Healthy"}
    assert wv.until(lambda d: True) == {V0: "Healthy", V1: "Healthy"}

    # Allocate: the device map in the kubelet's order, the token, the client mounted
    resp = gpu.Allocate(api.AllocateRequest(container_requests=[
        api.ContainerAllocateRequest(devices_ids=[A1, A0]),
        api.ContainerAllocateRequest(devices_ids=[A0])]))
    c1, c2 = resp.container_responses
    shim_dir = str(shim_path().parent)
    assert dict(c1.envs) == {"FARCUDA_DEVICES": f"{a.address}/1,{a.address}/0",
                             "FARCUDA_TOKEN": TOKEN, "FARCUDA_JOB": "k8s:n1",
                             "LD_LIBRARY_PATH": shim_dir}
    assert c2.envs["FARCUDA_DEVICES"] == f"{a.address}/0"
    assert [(m.container_path, m.host_path, m.read_only) for m in c1.mounts] == [
        (sys.prefix, sys.prefix, True)]
    (v,) = vgpu.Allocate(api.AllocateRequest(container_requests=[
        api.ContainerAllocateRequest(devices_ids=[V0, V1])])).container_responses
    assert v.envs["FARCUDA_DEVICES"] == f"{b.address}/1@sm=64,{b.address}/1@sm=64"
    with pytest.raises(grpc.RpcError) as e:
        gpu.Allocate(api.AllocateRequest(container_requests=[
            api.ContainerAllocateRequest(devices_ids=[V0])]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and V0 in e.value.details()
    pre = gpu.GetPreferredAllocation(api.PreferredAllocationRequest(container_requests=[
        api.ContainerPreferredAllocationRequest(available_deviceIDs=[A0, A1],
                                                must_include_deviceIDs=[A1],
                                                allocation_size=2)]))
    assert list(pre.container_responses[0].deviceIDs) == [A1, A0]
    assert gpu.PreStartContainer(api.PreStartContainerRequest(devices_ids=[A0])) is not None

    # a container started with just what Allocate said (no preload: the drop-in shim on
    # LD_LIBRARY_PATH) reaches its devices
    release = setup["tmp"] / "release"
    env = {"PATH": os.environ["PATH"], **dict(c1.envs)}
    holder = subprocess.Popen([str(program("ci_cluster")), str(release), "60"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        lines = [holder.stdout.readline() for _ in range(4)]  # until both devices are open
        assert lines == ["devices 2\n", "device 0 sms 132\n", "device 1 sms 132\n",
                         "holding\n"], lines
        (t,) = query_status(a.address, TOKEN)["tenants"]
        assert t["identity"]["job"] == "k8s:n1"
        assert sorted(d["gpu"] for d in t["devices"].values()) == [0, 1]
    finally:
        release.touch()
    assert holder.communicate(timeout=30)[0].endswith("PASSED\n")

    # B goes away: its slices turn Unhealthy; it comes back on its port: Healthy again
    port = b.port
    b.stop()
    assert wv.until(lambda d: set(d.values()) == {"Unhealthy"}) == {V0: "Unhealthy",
                                                                  V1: "Unhealthy"}
    assert wg.until(lambda d: True) == {A0: "Healthy", A1: "Healthy"}  # A is untouched
    setup["b"] = fc.start_daemon(setup["tmp"], "memory", backend_options={"gpus": 2},
                                 config={"listen": [f"127.0.0.1:{port}"],
                                         "auth": {"tokens": {"k8s": TOKEN}}})
    wv.until(lambda d: set(d.values()) == {"Healthy"})


def test_kubelet_restart_means_register_again(setup):
    kubelet, folder = setup["kubelet"], setup["folder"]
    regs = _registrations(kubelet, setup["log"])
    # a restarting kubelet removes every socket in its folder and serves a new kubelet.sock
    kubelet.stop()
    for p in list(folder.iterdir()):
        p.unlink()
    setup["kubelet"] = kubelet = Kubelet(folder)
    again = _registrations(kubelet, setup["log"])
    assert set(again) == set(regs)
    for r in again.values():
        # (a plugin that saw the folder half emptied serves and registers once more)
        deadline = time.monotonic() + 10
        while not (folder / r.endpoint).is_socket() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Watch(kubelet.stub(r.endpoint)).until(lambda d: True)
    p = setup["plugin"]
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 0
