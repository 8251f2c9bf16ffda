"""farcuda's libnvidia-ml.so.1 answers what frameworks ask NVML at start-up from the servers:
the device map's devices, in its order, with their servers' names, UUIDs, PCI locations,
compute capability and memory, and the same count the driver layer shows.

Each case runs in a process of its own (the library reads the configuration once, at init),
through ctypes, as pynvml would call it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_PROBE = textwrap.dedent("""
    import ctypes, json, sys
    nv = ctypes.CDLL(sys.argv[1] + "/libnvidia-ml.so.1")
    cu = ctypes.CDLL(sys.argv[1] + "/libcuda.so.1")
    out = {"init": nv.nvmlInit_v2()}
    n = ctypes.c_uint(0)
    out["count_rc"] = nv.nvmlDeviceGetCount_v2(ctypes.byref(n))
    out["count"] = n.value
    out["cuInit"] = cu.cuInit(0)
    c = ctypes.c_int(0)
    cu.cuDeviceGetCount(ctypes.byref(c))
    out["cuda_count"] = c.value
    devs = []
    for i in range(n.value):
        h = ctypes.c_void_p()
        assert nv.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(h)) == 0
        name = ctypes.create_string_buffer(96)
        uuid = ctypes.create_string_buffer(96)
        pci = ctypes.create_string_buffer(68)
        mem = (ctypes.c_ulonglong * 3)()
        major, minor = ctypes.c_int(), ctypes.c_int()
        idx = ctypes.c_uint()
        d = {"name": nv.nvmlDeviceGetName(h, name, 96), "uuid": nv.nvmlDeviceGetUUID(h, uuid, 96),
             "pci": nv.nvmlDeviceGetPciInfo_v3(h, pci),
             "mem": nv.nvmlDeviceGetMemoryInfo(h, mem),
             "cc": nv.nvmlDeviceGetCudaComputeCapability(h, ctypes.byref(major),
                                                         ctypes.byref(minor)),
             "index": nv.nvmlDeviceGetIndex(h, ctypes.byref(idx))}
        d.update(name_v=name.value.decode(), uuid_v=uuid.value.decode(),
                 bus=pci.raw[36:68].split(b"\\0")[0].decode(), total=mem[0], used=mem[1],
                 free=mem[2], cc_v=[major.value, minor.value], index_v=idx.value)
        back = ctypes.c_void_p()
        d["by_uuid"] = nv.nvmlDeviceGetHandleByUUID(uuid, ctypes.byref(back))
        d["same"] = back.value == h.value
        cuuuid = ctypes.create_string_buffer(16)
        cu.cuDeviceGetUuid(cuuuid, i)
        d["cuda_uuid"] = cuuuid.raw.hex()
        devs.append(d)
    out["devices"] = devs
    bad = ctypes.c_void_p()
    out["bad_index"] = nv.nvmlDeviceGetHandleByIndex_v2(99, ctypes.byref(bad))
    nv.nvmlErrorString.restype = ctypes.c_char_p
    out["text"] = nv.nvmlErrorString(2).decode()
    out["shutdown"] = nv.nvmlShutdown()
    out["shutdown_again"] = nv.nvmlShutdown()
    print(json.dumps(out))
""")


def _probe(driver, env: dict) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")}
    e.update(env)
    r = subprocess.run([sys.executable, "-c", _PROBE, str(driver)], capture_output=True,
                       text=True, env=e, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_devices_from_the_server(driver, shared_memory_daemon):
    addr = shared_memory_daemon.address
    out = _probe(driver, {"FARCUDA_DEVICES": f"{addr}/0,{addr}/0@sm=8"})
    assert out["init"] == 0 and out["count_rc"] == 0
    assert out["count"] == out["cuda_count"] == 2  # NVML and the driver layer agree
    for i, d in enumerate(out["devices"]):
        assert all(d[k] == 0 for k in ("name", "uuid", "pci", "mem", "cc", "index")), d
        assert d["name_v"] == "farcuda in-memory test device"
        assert d["uuid_v"].startswith("GPU-") and len(d["uuid_v"]) == 40
        assert d["uuid_v"][4:].replace("-", "") == d["cuda_uuid"]  # the UUID CUDA shows
        assert d["cc_v"] == [9, 0] and d["index_v"] == i
        assert d["total"] == 8 << 30 and d["free"] + d["used"] == d["total"]
        assert d["bus"].count(":") == 2 and d["bus"].endswith(".0")
        assert d["by_uuid"] == 0
    assert out["devices"][0]["same"]  # two virtual devices of one GPU share its UUID
    assert out["bad_index"] == 2 and out["text"] == "Invalid Argument"
    assert (out["shutdown"], out["shutdown_again"]) == (0, 1)


def test_no_server(driver):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")}
    code = (f"import ctypes; nv = ctypes.CDLL({str(driver)!r} + '/libnvidia-ml.so.1'); "
            "print(nv.nvmlInit_v2())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                       timeout=60)
    assert r.stdout.strip() == "9"  # NVML_ERROR_DRIVER_NOT_LOADED
    assert "FARCUDA_SERVER" in r.stderr
