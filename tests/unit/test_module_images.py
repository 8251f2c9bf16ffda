"""Module images for the driver layer: the daemon's module cache, and what the in-memory
backend reads from an image of each kind (fat binary, cubin, PTX)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from farcuda.daemon.modcache import ModuleCache
from farcuda.wire import fatbin

KERNELS = Path(__file__).resolve().parents[1] / "programs" / "driver" / "kernels.cu"


def test_cache_keeps_images_by_their_own_hash(tmp_path):
    c = ModuleCache(tmp_path / "cache", limit=1 << 20)
    data = os.urandom(1000)
    digest = c.put(data)
    assert digest == hashlib.sha256(data).digest()
    assert c.get(digest) == data
    assert c.get(hashlib.sha256(b"other").digest()) is None
    assert c.get(b"short") is None


def test_cache_forgets_a_damaged_file(tmp_path):
    c = ModuleCache(tmp_path / "cache")
    digest = c.put(b"image")
    (tmp_path / "cache" / (digest.hex() + ".img")).write_bytes(b"something else")
    assert c.get(digest) is None
    assert not (tmp_path / "cache" / (digest.hex() + ".img")).exists()


def test_cache_evicts_the_least_recently_used(tmp_path):
    c = ModuleCache(tmp_path / "cache", limit=2500)
    a, b, d = (bytes([i]) * 1000 for i in (1, 2, 3))
    da = c.put(a)
    db = c.put(b)
    os.utime(tmp_path / "cache" / (db.hex() + ".img"), (1, 1))  # b is the oldest used
    os.utime(tmp_path / "cache" / (da.hex() + ".img"), (2, 2))
    c.put(d)
    assert c.get(db) is None and c.get(da) == a


def test_cache_off():
    c = ModuleCache(None)
    digest = c.put(b"x")
    assert c.get(digest) is None


PTX = b"""//
.version 8.0
.target sm_90
.address_size 64
.visible .entry k1(
\t.param .u64 .ptr .global .align 4 k1_param_0,
\t.param .u32 k1_param_1,
\t.param .align 8 .b8 k1_param_2[12],
\t.param .f64 k1_param_3,
\t.param .u8 k1_param_4
)
{ ret; }
.visible .entry k2()
{ ret; }
\x00"""


def test_ptx_layouts():
    k = fatbin.ptx_kernels(PTX)
    assert [(p.offset, p.size) for p in k["k1"].params] == [(0, 8), (8, 4), (16, 12), (32, 8),
                                                            (40, 1)]
    assert k["k1"].param_size == 41
    assert k["k2"].params == () and k["k2"].param_size == 0
    assert fatbin.image_kind(PTX) == fatbin.IMAGE_PTX
    with pytest.raises(fatbin.FatbinError):
        fatbin.image_kind(b"\x00\x01 not an image")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    nvcc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    if not nvcc.exists():
        pytest.skip("nvcc not found")
    d = tmp_path_factory.mktemp("images")
    out = {}
    for kind in ("cubin", "fatbin", "ptx"):
        path = d / f"kernels.{kind}"
        subprocess.run([str(nvcc), f"-{kind}", "-arch=sm_90", "-o", str(path), str(KERNELS)],
                       check=True)
        out[kind] = path.read_bytes()
    return out


@pytest.mark.parametrize("kind", ["cubin", "fatbin", "ptx"])
def test_images_of_every_kind(built, kind):
    image = built[kind]
    kernels, glob, init = fatbin.image_contents(image)
    assert [(p.offset, p.size) for p in kernels["fill"].params] == [(0, 8), (8, 4), (16, 8)]
    assert kernels["fill"].param_size == 24
    if kind != "ptx":  # the driver places PTX globals: nothing to read here
        assert glob["table"].size == 16
        assert init["table"] == b"".join(v.to_bytes(4, "little") for v in (11, 22, 33, 44))
