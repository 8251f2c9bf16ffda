"""The session handshake, sans-io.

daemon -> client  SERVER_HELLO  magic, protocol version, flags (bit 0: a token is required),
                                32 random bytes (the challenge)
client -> daemon  HELLO         magic, version, pid, mac, identity (JSON tail)
daemon -> client  REPLY         status 0 and the session's numbers, or an error status and a
                                one-line reason in the tail

The mac is HMAC-SHA256(token, "farcuda-hello-v1" | challenge | identity): the token never
crosses the wire, a recorded HELLO is useless against a fresh challenge, and the identity
(which names the tenant) cannot be altered without the token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct

from ._framing import MAGIC, VERSION, encode, encode_reply
from ._messages import BY_NAME

__all__ = ["FLAG_AUTH", "new_challenge", "server_hello", "parse_server_hello", "hello_mac",
           "client_hello", "parse_client_hello", "check_mac", "welcome", "refusal"]


def _const(message: str, name: str) -> int:
    return next(c.value for c in BY_NAME[message].consts if c.name == name)


FLAG_AUTH = _const("SERVER_HELLO", "AUTH")  # the daemon requires a token
HELLO_TOKEN = _const("HELLO", "TOKEN")  # the client proves one
_LABEL = b"farcuda-hello-v1"


def new_challenge() -> bytes:
    return os.urandom(32)


def server_hello(challenge: bytes, auth_required: bool) -> bytes:
    return encode(BY_NAME["SERVER_HELLO"], {"magic": MAGIC, "version": VERSION,
                                            "flags": FLAG_AUTH if auth_required else 0,
                                            "nonce": tuple(challenge)})


def parse_server_hello(fixed: bytes) -> tuple[int, int, bytes]:
    vals = struct.unpack(BY_NAME["SERVER_HELLO"].fmt, fixed)
    magic, version, flags = vals[:3]
    if magic != MAGIC:
        raise ValueError("not a farcuda server (bad magic)")
    return version, flags, bytes(vals[3:])


def hello_mac(token: str | bytes, challenge: bytes, identity: bytes) -> bytes:
    key = token.encode() if isinstance(token, str) else token
    return hmac.new(key, _LABEL + challenge + identity, hashlib.sha256).digest()


def client_hello(challenge: bytes, identity: dict, token: str | None, rid: int = 1) -> bytes:
    ident = json.dumps(identity, sort_keys=True).encode()
    mac = hello_mac(token, challenge, ident) if token else bytes(32)
    return encode(BY_NAME["HELLO"], {"magic": MAGIC, "version": VERSION,
                                     "flags": HELLO_TOKEN if token else 0,
                                     "pid": identity.get("pid", 0),
                                     "mac": tuple(mac)}, ident, rid=rid)


def parse_client_hello(fixed: bytes, tail: bytes) -> tuple[int, int, bytes, dict]:
    vals = struct.unpack(BY_NAME["HELLO"].fmt, fixed)
    magic, version, flags, _pid = vals[:4]
    if magic != MAGIC:
        raise ValueError("not a farcuda client (bad magic)")
    try:
        identity = json.loads(bytes(tail) or b"{}")
        if not isinstance(identity, dict):
            raise ValueError
    except ValueError:
        raise ValueError("malformed client identity") from None
    return version, flags, bytes(vals[4:]), identity


def check_mac(tokens: dict[str, str], challenge: bytes, identity_raw: bytes,
              mac: bytes) -> str | None:
    """The name of the token that produced ``mac``, or None. Every token is tried, in
    constant time each, so timing says nothing about which one was close."""
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(hello_mac(token, challenge, identity_raw), mac):
            found = name
    return found


def welcome(rid: int, session: int, ngpus: int, driver: int, heartbeat_ms: int) -> bytes:
    return encode_reply(rid, 0, BY_NAME["HELLO"], {"session": session, "ngpus": ngpus,
                                                   "driver": driver,
                                                   "heartbeat_ms": heartbeat_ms})


def refusal(rid: int, status: int, reason: str) -> bytes:
    return encode_reply(rid, status, None, None, reason.encode())
