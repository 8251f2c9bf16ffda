"""SM budgets: a virtual device limited to a number of SMs is a green context.

The GPU's SMs are split into groups of GRANULE; a budget takes as many groups as it needs, and
each group is claimed with a byte-range lock on a per-GPU file, so claims are disjoint across
all workers and daemons of the host and a dead worker's groups are free again at once (the
kernel drops its locks).
"""

from __future__ import annotations

import fcntl
import logging
import os

from ...errors import CudaError, E
from .driver import check, cu

__all__ = ["GRANULE", "claim", "release"]

log = logging.getLogger("farcudad.cuda")

GRANULE = 8  # SMs per partition group (the H100's granularity for green contexts)
_SM_FILES: dict[str, tuple[int, set]] = {}  # lock file -> (descriptor, groups held here)


def claim(cudev, gpu: int, budget: int):
    """(green context, its context, its SM count, the lock of its SM groups): a context
    limited to `budget` SMs (rounded up to the partition granularity) made of
    SM groups no other budgeted device on this host holds.

    The GPU's SMs are split into groups of the granularity (8 on an H100); a budget takes
    as many groups as it needs, and each group is claimed with a byte-range lock on a
    per-GPU file, so claims are disjoint across all workers and daemons of the host and a
    dead worker's groups are free again at once (the kernel drops its locks)."""
    whole = check(cu.cuDeviceGetDevResource(
        cudev, cu.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM))
    res = cu.cuDevSmResourceSplitByCount(0, whole, 0, GRANULE)
    check(res[0])
    # (err, groups, nbGroups, remaining): ask for all groups the split can give
    ngroups = int(res[2]) if len(res) > 2 else 0
    res = cu.cuDevSmResourceSplitByCount(ngroups, whole, 0, GRANULE)
    check(res[0])
    groups = list(res[1])[:int(res[2])]
    if not groups:
        raise CudaError(E["cudaErrorNotSupported"], "this GPU cannot be partitioned")
    per = groups[0].sm.smCount
    need = -(-budget // per)
    if need > len(groups):
        raise CudaError(E["cudaErrorInvalidValue"],
                        f"an SM budget of {budget} exceeds the GPU's {per * len(groups)}")
    uuid = check(cu.cuDeviceGetUuid(cudev))
    tag = bytes(uuid.bytes if hasattr(uuid, "bytes") else b"").hex() or str(gpu)
    path = os.path.join(os.environ.get("FARCUDA_RUN_DIR", "/dev/shm"),
                        f"farcuda-sm-{tag}.lock")
    # POSIX record locks belong to the process (and all go when any descriptor of the
    # file is closed): one descriptor per file per process, and a set of the groups this
    # process's own devices hold
    if path not in _SM_FILES:
        _SM_FILES[path] = (os.open(path, os.O_RDWR | os.O_CREAT, 0o666), set())
    fd, mine = _SM_FILES[path]
    taken: list[int] = []
    for i in range(len(groups)):
        if len(taken) == need:
            break
        if i in mine:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, i)
        except OSError:
            continue
        taken.append(i)
        mine.add(i)
    if len(taken) < need:
        release(path, taken)
        raise CudaError(E["cudaErrorDevicesUnavailable"],
                        f"only {len(taken)} free groups of {per} SMs on GPU {gpu}, "
                        f"{need} needed")
    lock = (path, taken)
    chosen = [groups[i] for i in taken]
    desc = check(cu.cuDevResourceGenerateDesc(chosen, len(chosen)))
    green = check(cu.cuGreenCtxCreate(
        desc, cudev, cu.CUgreenCtxCreate_flags.CU_GREEN_CTX_DEFAULT_STREAM))
    ctx = check(cu.cuCtxFromGreenCtx(green))
    log.info("gpu %d: green context of %d SMs (groups %s)", gpu, need * per, taken)
    return green, ctx, need * per, lock


def release(path: str, groups: list[int]) -> None:
    fd, mine = _SM_FILES[path]
    for i in groups:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, i)
        mine.discard(i)
