"""CUDA MPS for the daemon's workers (``[gpu] mps = true``).

Each session is a worker process with its own CUDA contexts, and contexts of different
processes on one GPU take turns on it (time-slicing). Under MPS the workers are clients of one
MPS server per GPU, and kernels of different sessions (tenants) run side by side. The daemon
joins the MPS control daemon of the pipe directory when one answers there, else starts one
(``nvidia-cuda-mps-control -d``) and stops it again when it stops. Workers inherit
CUDA_MPS_PIPE_DIRECTORY and CUDA_MPS_LOG_DIRECTORY, which makes them MPS clients, and the
per-session limits MPS offers its clients: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (a share of each
GPU's threads) and CUDA_MPS_PINNED_DEVICE_MEM_LIMIT (device memory on each GPU).

Nothing here touches CUDA; the control program is run as a subprocess (checked on an H100:
SHIM-NOTES.md, "Concurrency on the GPU machine").
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from .config import DaemonConfig

__all__ = ["Mps", "MpsError"]

log = logging.getLogger("farcudad.mps")

START_TIMEOUT = 10.0  # seconds for a started control daemon's pipe to appear


class MpsError(Exception):
    """MPS was asked for and cannot be had: the message says why and what to do."""


def _default_dir(name: str) -> str:
    base = os.environ.get("FARCUDA_RUN_DIR") or "/tmp"
    return os.path.join(base, f"farcuda-{name}-{os.getuid()}")


def _gpu_ordinals(cfg: DaemonConfig) -> list[int]:
    """The device ordinals a limit per GPU is written for: the GPUs served, else as many
    as the host has device nodes (at least one)."""
    if cfg.gpus:
        return list(range(len(cfg.gpus)))
    return list(range(max(1, len(glob.glob("/dev/nvidia[0-9]*")))))


@dataclass
class Mps:
    control: str  # the control program's path
    pipe_dir: str
    log_dir: str
    started: bool  # by this daemon (which stops it again)
    env: dict[str, str]  # what a worker inherits

    @classmethod
    def open(cls, cfg: DaemonConfig) -> Mps:
        """Join the control daemon of the pipe directory, or start one (blocking: seconds
        at most)."""
        control = shutil.which(cfg.mps_control)
        if control is None:
            raise MpsError(f"[gpu] mps = true, but the MPS control program {cfg.mps_control!r} "
                           "was not found (install the NVIDIA driver's MPS tools, give its path "
                           "as [gpu] mps_control, or set mps = false)")
        pipe_dir = cfg.mps_pipe_directory or _default_dir("mps")
        log_dir = cfg.mps_log_directory or _default_dir("mps-log")
        for d in (pipe_dir, log_dir):
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as exc:
                raise MpsError(f"[gpu] MPS directory {d}: {exc.strerror or exc}") from None
        env = {"CUDA_MPS_PIPE_DIRECTORY": pipe_dir, "CUDA_MPS_LOG_DIRECTORY": log_dir}
        started = False
        if _answers(control, env):
            log.info("MPS: joined the control daemon of %s", pipe_dir)
        else:
            started = True
            try:
                r = subprocess.run([control, "-d"], env={**os.environ, **env},
                                   capture_output=True, text=True, timeout=START_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise MpsError(f"MPS: {control} -d did not start: {exc}") from None
            if r.returncode != 0:
                raise MpsError(f"MPS: {control} -d failed ({r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()[:300]}")
            deadline = time.monotonic() + START_TIMEOUT
            while not _answers(control, env):
                if time.monotonic() > deadline:
                    raise MpsError(f"MPS: the control daemon started in {pipe_dir} does not "
                                   f"answer (its log: {log_dir}/control.log)")
                time.sleep(0.05)
            log.info("MPS: started a control daemon in %s (log %s)", pipe_dir, log_dir)
        client = dict(env)
        if cfg.mps_active_thread_percentage is not None:
            client["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(cfg.mps_active_thread_percentage)
        if cfg.mps_pinned_memory_limit is not None:
            n = cfg.mps_pinned_memory_limit  # (MPS's own notation: "0=1G,1=512MB")
            size = f"{n >> 30}G" if n % (1 << 30) == 0 else f"{max(1, n >> 20)}MB"
            client["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = ",".join(
                f"{i}={size}" for i in _gpu_ordinals(cfg))
        return cls(control, pipe_dir, log_dir, started, client)

    def close(self) -> None:
        """Stop the control daemon (and its servers) if this daemon started it."""
        if not self.started:
            return
        self.started = False
        try:
            subprocess.run([self.control], input="quit\n", env={**os.environ, **self.env},
                           capture_output=True, text=True, timeout=START_TIMEOUT)
            log.info("MPS: stopped the control daemon of %s", self.pipe_dir)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("MPS: stopping the control daemon of %s: %s", self.pipe_dir, exc)


def _answers(control: str, env: dict[str, str]) -> bool:
    """A control daemon listens in the pipe directory (it answers a harmless command)."""
    if not os.path.exists(os.path.join(env["CUDA_MPS_PIPE_DIRECTORY"], "control")):
        return False
    try:
        r = subprocess.run([control], input="get_server_list\n", env={**os.environ, **env},
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0
