"""The CUDA driver as this backend calls it.

Most calls go through cuda-bindings (``cu``; ``check`` unwraps its result tuples). The few that
run per launch or take the client's raw bytes go straight to libcuda.so.1 through ctypes: a
launch through cuda-bindings costs several microseconds of Python, and these take the packed
parameter buffer, launch attributes and stream attribute values exactly as the client sent
them.
"""

from __future__ import annotations

import ctypes

try:
    from cuda.bindings import driver as cu
except ImportError as exc:
    raise RuntimeError(f"cuda-bindings is not installed ({exc})") from None

from ...errors import CudaError

__all__ = ["cu", "check", "SUCCESS", "NOT_READY", "LaunchConfig", "HOSTFN", "param_array",
           "cbuf"]

SUCCESS = cu.CUresult.CUDA_SUCCESS
NOT_READY = cu.CUresult.CUDA_ERROR_NOT_READY


def check(res):
    """Unwrap a cuda-bindings result tuple, raising CudaError on failure."""
    if isinstance(res, tuple):
        err = res[0]
        if err != SUCCESS:
            raise CudaError(int(err))
        if len(res) == 1:
            return None
        return res[1] if len(res) == 2 else res[1:]
    if res != SUCCESS:
        raise CudaError(int(res))
    return None



try:
    _libcuda = ctypes.CDLL("libcuda.so.1")
except OSError:
    raise RuntimeError("no CUDA driver on this machine (libcuda.so.1 not found)") from None
launch_kernel = _libcuda.cuLaunchKernel
launch_kernel.restype = ctypes.c_int
launch_kernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
launch_cooperative = _libcuda.cuLaunchCooperativeKernel
launch_cooperative.restype = ctypes.c_int
launch_cooperative.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 2
launch_ex = _libcuda.cuLaunchKernelEx
launch_ex.restype = ctypes.c_int
launch_ex.argtypes = [ctypes.c_void_p] * 4
stream_set_attribute = _libcuda.cuStreamSetAttribute
stream_set_attribute.restype = ctypes.c_int
stream_set_attribute.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
occupancy_max_active_clusters = _libcuda.cuOccupancyMaxActiveClusters
occupancy_max_cluster_size = _libcuda.cuOccupancyMaxPotentialClusterSize
for _f in (occupancy_max_active_clusters, occupancy_max_cluster_size):
    _f.restype = ctypes.c_int
    _f.argtypes = [ctypes.c_void_p] * 3
graph_instantiate = _libcuda.cuGraphInstantiateWithFlags
graph_instantiate.restype = ctypes.c_int
graph_instantiate.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_ulonglong]
graph_launch = _libcuda.cuGraphLaunch
graph_launch.restype = ctypes.c_int
graph_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
graph_exec_destroy = _libcuda.cuGraphExecDestroy
graph_exec_destroy.restype = ctypes.c_int
graph_exec_destroy.argtypes = [ctypes.c_void_p]
tensor_map_tiled = _libcuda.cuTensorMapEncodeTiled
tensor_map_tiled.restype = ctypes.c_int
tensor_map_tiled.argtypes = ([ctypes.c_void_p, ctypes.c_int, ctypes.c_uint] + [ctypes.c_void_p] * 5
                             + [ctypes.c_int] * 4)
tensor_map_im2col = _libcuda.cuTensorMapEncodeIm2col
tensor_map_im2col.restype = ctypes.c_int
tensor_map_im2col.argtypes = ([ctypes.c_void_p, ctypes.c_int, ctypes.c_uint] + [ctypes.c_void_p] * 5
                              + [ctypes.c_uint] * 2 + [ctypes.c_void_p] + [ctypes.c_int] * 4)
tensor_map_replace = _libcuda.cuTensorMapReplaceAddress
tensor_map_replace.restype = ctypes.c_int
tensor_map_replace.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
HOSTFN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
launch_host_func = _libcuda.cuLaunchHostFunc
launch_host_func.restype = ctypes.c_int
launch_host_func.argtypes = [ctypes.c_void_p, HOSTFN, ctypes.c_void_p]


class LaunchConfig(ctypes.Structure):
    """CUlaunchConfig, for cuLaunchKernelEx and the cluster occupancy queries."""

    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint),
                ("gridDimZ", ctypes.c_uint), ("blockDimX", ctypes.c_uint),
                ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.c_void_p), ("numAttrs", ctypes.c_uint)]


def param_array(buf, params) -> ctypes.Array:
    """kernelParams for cuLaunchKernel: a pointer to each parameter in the packed buffer."""
    base = ctypes.addressof(buf)
    arr = (ctypes.c_void_p * max(1, len(params)))()
    for i, (off, _size) in enumerate(params):
        arr[i] = base + off
    return arr


def cbuf(data) -> ctypes.Array:
    """A ctypes buffer of data: its own memory when writable, else a copy."""
    n = len(data)
    if n == 0:
        return (ctypes.c_char * 1)()
    if isinstance(data, memoryview) and not data.readonly:
        return (ctypes.c_char * n).from_buffer(data)
    return (ctypes.c_char * n).from_buffer_copy(data)
