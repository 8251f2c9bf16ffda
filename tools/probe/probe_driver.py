"""Probe the CUDA driver through cuda-bindings: facts farcuda's daemon design relies on.

Run on a GPU host (tools/probe/probe.sh does): it prints what it finds, one fact a line.
"""
import sys
import sysconfig
import threading
import time

import cuda.bindings
from cuda.bindings import driver as cu

print("python", sys.version.split()[0], sysconfig.get_config_var("LIBDIR"), sys.prefix)
print("cuda.bindings", cuda.bindings.__version__)


def ck(res):
    err = res[0] if isinstance(res, tuple) else res
    if err != cu.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"{err}")
    if isinstance(res, tuple):
        return res[1] if len(res) == 2 else res[1:]
    return None


ck(cu.cuInit(0))
dev = ck(cu.cuDeviceGet(0))
print("name", ck(cu.cuDeviceGetName(256, dev)))
try:
    print("cuCtxCreate doc", cu.cuCtxCreate.__doc__.splitlines()[0:3])
except Exception as e:
    print("doc?", e)
try:
    ctx = ck(cu.cuCtxCreate(None, 0, dev))
    print("ctx via (None,0,dev)")
except Exception as e:
    print("cuCtxCreate(None,0,dev) failed", e)
    ctx = ck(cu.cuDevicePrimaryCtxRetain(dev))
    ck(cu.cuCtxSetCurrent(ctx))
print("ctx", int(ctx))

# VMM with an address hint
prop = cu.CUmemAllocationProp()
prop.type = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
prop.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
prop.location.id = 0
minimum = cu.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_MINIMUM
print("granularity", ck(cu.cuMemGetAllocationGranularity(prop, minimum)))
for hint in (0x200000000000, 0x100000000000, 0x7e0000000000, 0x20000000000):
    r = cu.cuMemAddressReserve(1 << 37, 0, hint, 0)
    print("reserve hint", hex(hint), r[0], hex(int(r[1])) if r[0] == 0 else None)
    if r[0] == 0 and int(r[1]) != hint:
        cu.cuMemAddressFree(r[1], 1 << 37)
r = cu.cuMemAddressReserve(1 << 37, 0, 0x200000000000, 0)
base = int(r[1])
h = ck(cu.cuMemCreate(2 << 20, prop, 0))
ck(cu.cuMemMap(base, 2 << 20, 0, h, 0))
acc = cu.CUmemAccessDesc()
acc.location = prop.location
acc.flags = cu.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
ck(cu.cuMemSetAccess(base, 2 << 20, [acc], 1))
buf = bytearray(b"x" * 4096)
ck(cu.cuMemcpyHtoD(base, buf, 4096))
out = bytearray(4096)
ck(cu.cuMemcpyDtoH(out, base, 4096))
print("vmm roundtrip", out == buf)
memory_type = cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_MEMORY_TYPE
print("ptr attr ctx", cu.cuPointerGetAttribute(memory_type, base))

# GIL release during a blocking driver call
s = ck(cu.cuStreamCreate(0))
spin = [0.0]


def waiter():
    t0 = time.perf_counter()
    ck(cu.cuCtxSetCurrent(ctx))
    # cuStreamSynchronize on an idle stream returns at once: a kernel-free proxy of a wait
    ck(cu.cuStreamSynchronize(s))
    spin.append(time.perf_counter() - t0)


th = threading.Thread(target=waiter)
th.start()
th.join()
print("thread sync ok", spin)

# timing of calls from Python
t0 = time.perf_counter()
for _ in range(10000):
    cu.cuStreamQuery(s)
print("cuStreamQuery us", (time.perf_counter() - t0) / 10000 * 1e6)
t0 = time.perf_counter()
for _ in range(10000):
    cu.cuCtxSetCurrent(ctx)
print("cuCtxSetCurrent us", (time.perf_counter() - t0) / 10000 * 1e6)
for nm in ("cuKernelGetParamInfo", "cuFuncGetParamInfo", "cuDevSmResourceSplitByCount",
           "cuGreenCtxCreate", "cuDevResourceGenerateDesc", "cuCtxCreate", "cuLibraryLoadData",
           "cuGetProcAddress", "cuStreamWaitValue32", "cuLaunchHostFunc", "cuLaunchKernelEx",
           "cuStreamBeginCapture", "cuMemHostAlloc", "cuDeviceGetDevResource",
           "cuGreenCtxStreamCreate", "cuCtxFromGreenCtx"):
    f = getattr(cu, nm, None)
    doc = (f.__doc__ or "").strip().splitlines()[0][:100] if f is not None and f.__doc__ else ""
    print("has", nm, f is not None, doc)
try:
    res = ck(cu.cuDeviceGetDevResource(dev, cu.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM))
    print("sm resource count", res.sm.smCount)
    print("split doc", cu.cuDevSmResourceSplitByCount.__doc__[:1500])
except Exception as e:
    print("green probe failed", repr(e))
wait_value = cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR
print("stream memops attr", ck(cu.cuDeviceGetAttribute(wait_value, dev)))
try:
    import pynvml

    pynvml.nvmlInit()
    hd = pynvml.nvmlDeviceGetHandleByIndex(0)
    print("nvml power mW", pynvml.nvmlDeviceGetPowerUsage(hd),
          "energy mJ", pynvml.nvmlDeviceGetTotalEnergyConsumption(hd))
except Exception as e:
    print("nvml failed", repr(e))
