"""The device plugin's gRPC code speaks the kubelet's API: api.proto declares the v1beta1
package, services, methods and the field numbers and types the kubelet uses, and the
committed api_pb2*.py still describe it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

# (packages of the test extra are not on the offline GPU machine: skipped there)
protoc = pytest.importorskip("grpc_tools.protoc")
descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
api_pb2 = pytest.importorskip("farcuda.cluster.deviceplugin.api_pb2")
api_pb2_grpc = pytest.importorskip("farcuda.cluster.deviceplugin.api_pb2_grpc")

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "cluster" / "deviceplugin"
def _gen():
    spec = importlib.util.spec_from_file_location("farcuda_gen_deviceplugin",
                                                  ROOT / "tools" / "gen_deviceplugin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# The kubelet's v1beta1 messages on the wire: message -> {field: (number, type, repeated)}.
_T = descriptor_pb2.FieldDescriptorProto
WIRE = {
    "RegisterRequest": {"version": (1, _T.TYPE_STRING, False),
                        "endpoint": (2, _T.TYPE_STRING, False),
                        "resource_name": (3, _T.TYPE_STRING, False),
                        "options": (4, _T.TYPE_MESSAGE, False)},
    "DevicePluginOptions": {"pre_start_required": (1, _T.TYPE_BOOL, False),
                            "get_preferred_allocation_available": (2, _T.TYPE_BOOL, False)},
    "ListAndWatchResponse": {"devices": (1, _T.TYPE_MESSAGE, True)},
    "Device": {"ID": (1, _T.TYPE_STRING, False), "health": (2, _T.TYPE_STRING, False),
               "topology": (3, _T.TYPE_MESSAGE, False)},
    "TopologyInfo": {"nodes": (1, _T.TYPE_MESSAGE, True)},
    "NUMANode": {"ID": (1, _T.TYPE_INT64, False)},
    "PreferredAllocationRequest": {"container_requests": (1, _T.TYPE_MESSAGE, True)},
    "ContainerPreferredAllocationRequest": {
        "available_deviceIDs": (1, _T.TYPE_STRING, True),
        "must_include_deviceIDs": (2, _T.TYPE_STRING, True),
        "allocation_size": (3, _T.TYPE_INT32, False)},
    "PreferredAllocationResponse": {"container_responses": (1, _T.TYPE_MESSAGE, True)},
    "ContainerPreferredAllocationResponse": {"deviceIDs": (1, _T.TYPE_STRING, True)},
    "AllocateRequest": {"container_requests": (1, _T.TYPE_MESSAGE, True)},
    "ContainerAllocateRequest": {"devices_ids": (1, _T.TYPE_STRING, True)},
    "AllocateResponse": {"container_responses": (1, _T.TYPE_MESSAGE, True)},
    "ContainerAllocateResponse": {"envs": (1, _T.TYPE_MESSAGE, True),
                                  "mounts": (2, _T.TYPE_MESSAGE, True),
                                  "devices": (3, _T.TYPE_MESSAGE, True),
                                  "annotations": (4, _T.TYPE_MESSAGE, True),
                                  "cdi_devices": (5, _T.TYPE_MESSAGE, True)},
    "Mount": {"container_path": (1, _T.TYPE_STRING, False),
              "host_path": (2, _T.TYPE_STRING, False), "read_only": (3, _T.TYPE_BOOL, False)},
    "DeviceSpec": {"container_path": (1, _T.TYPE_STRING, False),
                   "host_path": (2, _T.TYPE_STRING, False),
                   "permissions": (3, _T.TYPE_STRING, False)},
    "CDIDevice": {"name": (1, _T.TYPE_STRING, False)},
    "PreStartContainerRequest": {"devices_ids": (1, _T.TYPE_STRING, True)},
    "PreStartContainerResponse": {},
    "Empty": {},
}


def test_messages_are_the_kubelets():
    proto = descriptor_pb2.FileDescriptorProto.FromString(api_pb2.DESCRIPTOR.serialized_pb)
    got = {m.name: {f.name: (f.number, f.type, f.label == _T.LABEL_REPEATED) for f in m.field}
           for m in proto.message_type}
    assert got == WIRE


def test_generated_messages_describe_the_proto(tmp_path):
    out = tmp_path / "api.pb"
    assert protoc.main(["protoc", f"-I{SRC}", f"--descriptor_set_out={out}",
                        str(SRC / "api.proto")]) == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]

    def strip(messages):  # --descriptor_set_out adds json names; the python code has none
        for m in messages:
            for f in m.field:
                f.ClearField("json_name")
            strip(m.nested_type)
    strip(fresh.message_type)
    committed = descriptor_pb2.FileDescriptorProto.FromString(api_pb2.DESCRIPTOR.serialized_pb)
    assert committed == fresh


def test_generated_code_is_what_the_generator_writes(tmp_path):
    committed = (SRC / "api_pb2_grpc.py").read_text()
    m = re.search(r"\(grpcio-tools ([^)]+)\)", committed.splitlines()[0])
    assert m, "the generated file names the generator's version in its first line"
    paths = _gen().generate(tmp_path)
    fresh = {p.name: p.read_text() for p in paths}
    from importlib.metadata import version
    if version("grpcio-tools") == m.group(1):  # same generator: the very same text
        for name, text in fresh.items():
            assert (SRC / name).read_text() == text, f"{name} is stale: tools/gen_deviceplugin.py"
    else:  # another generator: the same services and methods
        methods = re.findall(r"'(/v1beta1\.\w+/\w+)'", committed)
        assert methods == re.findall(r"'(/v1beta1\.\w+/\w+)'", fresh["api_pb2_grpc.py"])


def test_the_services_are_the_kubelets():
    services = {s.full_name: [m.name for m in s.methods]
                for s in api_pb2.DESCRIPTOR.services_by_name.values()}
    assert services == {
        "v1beta1.Registration": ["Register"],
        "v1beta1.DevicePlugin": ["GetDevicePluginOptions", "ListAndWatch",
                                 "GetPreferredAllocation", "Allocate", "PreStartContainer"]}
    assert api_pb2.DESCRIPTOR.package == "v1beta1"
    assert hasattr(api_pb2_grpc, "add_DevicePluginServicer_to_server")
    assert hasattr(api_pb2_grpc, "RegistrationStub")
