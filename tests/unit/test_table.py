"""The call tables: fixed unique opcodes, every export covered, generated files current."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from farcuda.wire import BY_NAME, MESSAGES, abi, calls

ROOT = Path(__file__).resolve().parents[2]

# What issue 2 names (the runtime core), all of which must be implemented.
CORE = """
cudaGetDeviceCount cudaSetDevice cudaGetDevice cudaGetDeviceProperties cudaDeviceGetAttribute
cudaDeviceSynchronize cudaDeviceReset cudaDriverGetVersion cudaRuntimeGetVersion
cudaSetDeviceFlags cudaDeviceSetLimit cudaDeviceGetLimit cudaMemGetInfo
cudaGetLastError cudaPeekAtLastError cudaGetErrorString cudaGetErrorName
cudaMalloc cudaFree cudaMallocPitch cudaMemcpy cudaMemcpy2D cudaMemset cudaPointerGetAttributes
cudaMallocHost cudaHostAlloc cudaFreeHost cudaHostRegister
__cudaRegisterFatBinary __cudaRegisterFunction __cudaRegisterVar __cudaGetKernel
__cudaLaunchKernel __cudaLaunchKernel_ptsz __cudaPushCallConfiguration
__cudaPopCallConfiguration cudaLaunchKernel cudaFuncGetAttributes cudaFuncSetAttribute
cudaOccupancyMaxActiveBlocksPerMultiprocessor cudaMemcpyToSymbol cudaMemcpyFromSymbol
cudaGetSymbolAddress cudaGetSymbolSize
""".split()


def test_opcodes_unique_and_stable():
    ops = [m.op for m in MESSAGES]
    assert len(ops) == len(set(ops))
    assert len({m.name for m in MESSAGES}) == len(MESSAGES)
    # opcodes are part of the wire format: a few anchors that must never move
    assert BY_NAME["HELLO"].op == 0x0002
    assert BY_NAME["LAUNCH"].op == 0x0310
    assert BY_NAME["REPLY"].op == 0x8001
    for m in MESSAGES:
        if m.name != "SERVER_HELLO":  # the handshake frames live in 0x00xx
            assert (m.op >= 0x8000) == (m.direction == "s2c"), m.name


def test_every_export_is_covered():
    assert len(abi.EXPORTS) == 422
    kinds = {calls.C: [], calls.PY: [], calls.UNSUPPORTED: []}
    for name in abi.EXPORTS:
        kinds[calls.CALLS[name]].append(name)
    implemented = len(kinds[calls.C]) + len(kinds[calls.PY])
    print(f"\nexports: {len(abi.EXPORTS)}; implemented {implemented} "
          f"(C {len(kinds[calls.C])}, Python {len(kinds[calls.PY])}); "
          f"unsupported {len(kinds[calls.UNSUPPORTED])}")
    missing = [n for n in CORE if calls.CALLS[n] == calls.UNSUPPORTED]
    assert not missing


def test_out_of_scope_calls_say_why():
    assert "managed memory" in calls.reason("cudaMallocManaged")
    assert "IPC" in calls.reason("cudaIpcGetMemHandle")
    assert "not implemented" in calls.reason("cudaDeviceFlushGPUDirectRDMAWrites")
    # what is left of the graph API says which part it is
    assert "host" in calls.reason("cudaGraphAddHostNode")
    assert calls.CALLS["cudaGraphAddKernelNode"] == calls.C


def test_generated_files_are_current():
    r = subprocess.run([sys.executable, str(ROOT / "tools/gen_calls.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_abi_record_matches_toolkit():
    """abi.py was generated from the CUDA 13.0 toolkit installed here, if one is."""
    lib = Path("/usr/local/cuda/lib64/libcudart.so.13")
    if not lib.exists():
        import pytest
        pytest.skip("no CUDA toolkit to compare with")
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True,
                         text=True, check=True).stdout
    names = sorted({ln.split()[2].split("@")[0] for ln in out.splitlines()
                    if ln.split()[1] == "T"})
    assert names == list(abi.EXPORTS)


def test_rows_name_what_exists():
    """Every row's messages, fields, reply fields and parameters exist; a STUB row fills
    every field of its message but the reserved ones; twins are exported by the real library."""
    for row in calls.ROWS:
        names = {n for _, n in calls.params(row.sig)}
        for m in row.msgs:  # requests, and the notices the daemon sends back for them
            assert m in BY_NAME, (row.name, m)
        assert not row.msgs or BY_NAME[row.msgs[0]].direction == "c2s", row.name
        msg = BY_NAME[row.msgs[0]] if row.msgs else None
        for f in row.fields:
            assert msg and f in {x.name for x in msg.fields}, (row.name, f)
        for p, f in row.reply.items():
            assert p in names, (row.name, p)
            assert msg and f in {x.name for x in msg.reply}, (row.name, f)
        for p in (*row.ins, *row.outs):
            assert p in names, (row.name, p)
        assert row.how in (calls.MANUAL, calls.C, calls.STUB, calls.PY), row.name
        assert (row.how == calls.C) == bool(row.impl), row.name
        if row.how == calls.STUB:
            wanted = {x.name for x in msg.fields if not x.name.startswith("rsv")} if msg else None
            assert set(row.fields) == wanted, row.name  # reserved fields go as zeros
        assert row.errors in ("last", "query"), row.name
    for name, row in calls.BY_EXPORT.items():
        assert name in abi.EXPORTS and calls.base_of(name) == row.name, name


def test_c_calls_defined_by_hand():
    """Every export marked MANUAL is defined in csrc/ (not by the generated stubs)."""
    text = "\n".join(p.read_text() for p in (ROOT / "csrc").glob("*.c"))
    for name in calls.C_CALLS:
        assert re.search(r"[ *]" + re.escape(name) + r"\(", text), name


def test_shim_exports_exactly_the_runtime(shim):
    out = subprocess.run(["nm", "-D", "--defined-only", str(shim)], capture_output=True,
                         text=True, check=True).stdout
    syms = {}
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) == 3:
            syms[parts[2]] = parts[1]
    versioned = sorted(n.split("@")[0] for n, t in syms.items() if t == "T")
    assert versioned == list(abi.EXPORTS)
    assert all(n.endswith("@@libcudart.so.13") for n, t in syms.items() if t == "T")
    dyn = subprocess.run(["readelf", "-d", str(shim)], capture_output=True, text=True).stdout
    assert "Library soname: [libcudart.so.13]" in dyn


def test_wire_table_drives_the_daemon():
    spec = importlib.util.find_spec("farcuda.daemon.session")
    assert spec is not None
    from farcuda.daemon.session import HANDLERS
    for m in MESSAGES:
        if m.direction == "c2s" and m.name != "HELLO":
            assert m.op in HANDLERS and HANDLERS[m.op][1].__name__ == m.name, m.name
