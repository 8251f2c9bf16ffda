"""The C client core reads the environment exactly as interposer/config.py does: the same
devices, server, token, timeouts and flags, and the same message for every malformed value.

Both parsers run over one table of environments: the Python one directly, the C one through
libfarcuda.so.1's fcc_config_explain (which answers in JSON). The core's SHA-256, HMAC and
MD2 are checked here too, against Python's and RFC 1319's.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import random

import pytest
from farcuda.interposer import config as configmod


@pytest.fixture(scope="module")
def core():
    from farcuda.interposer.cli import driver_dir
    return ctypes.CDLL(str(driver_dir() / "libfarcuda.so.1"))


def _c(core, env: dict) -> dict:
    block = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()) + b"\0"
    out = ctypes.create_string_buffer(1 << 16)
    assert core.fcc_config_explain(block, out, len(out)) == 0
    return json.loads(out.value)


def _py(env: dict) -> dict:
    try:
        cfg = configmod.from_env(env)
    except configmod.ConfigError as exc:
        return {"error": str(exc)}
    return {"configured": cfg.configured, "source": cfg.source,
            "devices": None if cfg.devices is None else
            [[d.host, d.port, d.gpu, d.sm] for d in cfg.devices],
            "server": None if cfg.server is None else list(cfg.server),
            "token": cfg.token, "connect_timeout": cfg.connect_timeout,
            "liveness_timeout": cfg.liveness_timeout, "spin_us": cfg.spin_us,
            "report": cfg.report, "tls": cfg.tls, "tls_ca": cfg.tls_ca,
            "tls_cert": cfg.tls_cert, "tls_key": cfg.tls_key}


def _envs(tmp: str) -> list[dict]:
    pem = os.path.join(tmp, "ca.pem")
    open(pem, "w").close()
    many = {f"FARCUDA_DEVICE_{i}": f"h{i}" for i in range(66)}
    return [
        {},
        {"FARCUDA_SERVER": "gpuhost"},
        {"FARCUDA_SERVER": "gpuhost:7000"},
        {"FARCUDA_SERVER": " gpuhost:7000 "},
        {"FARCUDA_SERVER": "[::1]:9000"},
        {"FARCUDA_SERVER": "[::1]"},
        {"FARCUDA_SERVER": "gpuhost:"},
        {"FARCUDA_SERVER": "gpuhost:0"},
        {"FARCUDA_SERVER": "gpuhost:65536"},
        {"FARCUDA_SERVER": "gpuhost:12a"},
        {"FARCUDA_SERVER": "gpu/host"},
        {"FARCUDA_SERVER": "a:b:c"},
        {"FARCUDA_SERVER": "   "},
        {"FARCUDA_DEVICES": "a:1/0,a:1/1,b/2@sm=16"},
        {"FARCUDA_DEVICES": "a:1/0, ,b"},
        {"FARCUDA_DEVICES": " , "},
        {"FARCUDA_DEVICES": "a/x"},
        {"FARCUDA_DEVICES": "a/ 3 "},
        {"FARCUDA_DEVICES": "a@sm=0"},
        {"FARCUDA_DEVICES": "a@sm=4@sm=8"},
        {"FARCUDA_DEVICES": "a@gpu=1"},
        {"FARCUDA_DEVICES": "a@sm"},
        {"FARCUDA_DEVICES": "host's:1"},
        {"FARCUDA_DEVICES": ",".join(["h"] * 65)},
        {"FARCUDA_DEVICES": "a", "FARCUDA_SERVER": "b"},
        {"FARCUDA_DEVICE_COUNT": "2", "FARCUDA_DEVICE_0": "a", "FARCUDA_DEVICE_1": "b:9/1"},
        {"FARCUDA_DEVICE_COUNT": "2", "FARCUDA_DEVICE_0": "a"},
        {"FARCUDA_DEVICE_COUNT": "0"},
        {"FARCUDA_DEVICE_COUNT": "two"},
        {"FARCUDA_DEVICE_COUNT": "66", **many},
        {"FARCUDA_DEVICE_COUNT": "70", **many},
        {"FARCUDA_DEVICE_COUNT": "1", "FARCUDA_DEVICE_0": "a/1@sm=8",
         "FARCUDA_SERVER": "ignored"},
        {"FARCUDA_SERVER": "h", "FARCUDA_TOKEN": "s3cr3t"},
        {"FARCUDA_SERVER": "h", "FARCUDA_SERVER_ORIGIN": " --server of farcuda run "},
        {"FARCUDA_SERVER": "h", "FARCUDA_SERVER_ORIGIN": ""},
        {"FARCUDA_SERVER": "h", "FARCUDA_TOKEN": ""},
        {"FARCUDA_SERVER": "h", "FARCUDA_CONNECT_TIMEOUT": "1.5",
         "FARCUDA_LIVENESS_TIMEOUT": "30"},
        {"FARCUDA_SERVER": "h", "FARCUDA_CONNECT_TIMEOUT": "soon"},
        {"FARCUDA_SERVER": "h", "FARCUDA_CONNECT_TIMEOUT": "0"},
        {"FARCUDA_SERVER": "h", "FARCUDA_LIVENESS_TIMEOUT": "-1"},
        {"FARCUDA_SERVER": "h", "FARCUDA_LIVENESS_TIMEOUT": " 2e1 "},
        {"FARCUDA_SERVER": "h", "FARCUDA_CONNECT_TIMEOUT": ""},
        {"FARCUDA_SERVER": "h", "FARCUDA_SPIN_US": "0"},
        {"FARCUDA_SERVER": "h", "FARCUDA_SPIN_US": " 50 "},
        {"FARCUDA_SERVER": "h", "FARCUDA_SPIN_US": "lots"},
        {"FARCUDA_SERVER": "h", "FARCUDA_SPIN_US": "2000000"},
        {"FARCUDA_SERVER": "h", "FARCUDA_REPORT": "1"},
        {"FARCUDA_SERVER": "h", "FARCUDA_REPORT": "0"},
        {"FARCUDA_SERVER": "h", "FARCUDA_REPORT": "yes"},
        {"FARCUDA_SERVER": "h", "FARCUDA_SUBALLOC": "0"},
        {"FARCUDA_SERVER": "h", "FARCUDA_SUBALLOC": " 1 "},
        {"FARCUDA_SERVER": "h", "FARCUDA_SUBALLOC": ""},
        {"FARCUDA_SERVER": "h", "FARCUDA_SUBALLOC": "off"},
        {"FARCUDA_SERVER": "h", "FARCUDA_COMPRESS": "on"},
        {"FARCUDA_SERVER": "h", "FARCUDA_COMPRESS": " OFF "},
        {"FARCUDA_SERVER": "h", "FARCUDA_COMPRESS": "  "},
        {"FARCUDA_SERVER": "h", "FARCUDA_COMPRESS": " lz4 "},
        {"FARCUDA_SERVER": "h", "FARCUDA_COMPRESS": "automatically"},
        {"FARCUDA_SERVER": "h", "FARCUDA_COMPRESS": "maybe", "FARCUDA_TLS": "maybe"},
        {"FARCUDA_SERVER": "h", "FARCUDA_TLS": "1"},
        {"FARCUDA_SERVER": "h", "FARCUDA_TLS": " On "},
        {"FARCUDA_SERVER": "h", "FARCUDA_TLS": "maybe"},
        {"FARCUDA_SERVER": "h", "FARCUDA_TLS": "1", "FARCUDA_TLS_CA": pem},
        {"FARCUDA_SERVER": "h", "FARCUDA_TLS_CA": pem},
        {"FARCUDA_SERVER": "h", "FARCUDA_TLS": "1", "FARCUDA_TLS_CA": pem + ".missing"},
        {"FARCUDA_SERVER": "h", "FARCUDA_TLS": "1", "FARCUDA_TLS_KEY": pem},
        {"FARCUDA_SERVER": "h", "FARCUDA_TLS": "1", "FARCUDA_TLS_CERT": pem,
         "FARCUDA_TLS_KEY": pem},
    ]


def test_same_configuration_as_python(core, tmp_path):
    for env in _envs(str(tmp_path)):
        assert _c(core, env) == _py(env), env


def test_hmac_and_sha256_match_python(core):
    rng = random.Random(7)
    out = ctypes.create_string_buffer(32)
    for n in (0, 1, 55, 56, 63, 64, 65, 127, 1000, 4096):
        data = bytes(rng.randrange(256) for _ in range(n))
        core.fcc_sha256_digest(data, len(data), out)
        assert out.raw == hashlib.sha256(data).digest(), n
        for klen in (0, 1, 32, 64, 65, 200):
            key = bytes(rng.randrange(256) for _ in range(klen))
            core.fcc_hmac_sha256(key, len(key), data, len(data), out)
            assert out.raw == hmac.new(key, data, hashlib.sha256).digest(), (n, klen)


def test_handshake_mac(core):
    """The proof the C client sends is the one the daemon checks
    (wire/_handshake.py)."""
    from farcuda.wire import handshake
    challenge = bytes(range(32))
    identity = b'{"exe": "prog", "host": "edge", "pid": 1, "user": "u"}'
    msg = b"farcuda-hello-v1" + challenge + identity
    out = ctypes.create_string_buffer(32)
    core.fcc_hmac_sha256(b"token", 5, msg, len(msg), out)
    assert out.raw == handshake.hello_mac("token", challenge, identity)


@pytest.mark.parametrize("text,digest", [  # RFC 1319, appendix A.5
    (b"", "8350e5a3e24c153df2275c9f80692773"),
    (b"a", "32ec01ec4a6dac72c0ab96fb34c0b5d1"),
    (b"abc", "da853b0d3f88d99b30283a69e6ded6bb"),
    (b"message digest", "ab4f496bfb2a530b219ff33031fe06b0"),
    (b"abcdefghijklmnopqrstuvwxyz", "4e8ddff3650292ab5a4108c3aa47940b"),
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
     "da33def2a42df13975352846c30338cd"),
    (b"1234567890" * 8, "d5976f79d83d3a0dc9806c3c66f3efd8"),
])
def test_md2(core, text, digest):
    out = ctypes.create_string_buffer(16)
    core.fcc_md2_digest(text, len(text), out)
    assert out.raw.hex() == digest
