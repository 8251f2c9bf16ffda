"""CUDA status codes the daemon answers with (cudaError_t values; the driver's CUresult
values coincide with them for every error the daemon reports)."""

from __future__ import annotations

from farcuda.wire.abi import ERRORS

__all__ = ["CudaError", "E", "name_of"]

E: dict[str, int] = {name: code for code, (name, _text) in ERRORS.items()}


def name_of(status: int) -> str:
    return ERRORS.get(status, (f"error {status}", ""))[0]


class CudaError(Exception):
    """A call failed with a CUDA status: answered to the client, never fatal to the daemon."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"{name_of(status)}{': ' + detail if detail else ''}")
        self.status = int(status)
