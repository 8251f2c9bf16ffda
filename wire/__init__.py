"""The contract between the shim and the daemon, owned by neither side.

What crosses the wire and what the CUDA runtime looks like to farcuda lives here and nowhere
else: the framing and the handshake (sans-io: nothing here touches a socket, both sides feed
bytes in and take frames out, and tests pair them in memory), the message table
(``_messages``), the call table of the runtime's exports (``calls``), the ABI record of the
CUDA 13 runtime (``abi``), the fat binary container a module load carries (``fatbin``), and the
pieces of TLS and addressing both ends share (``tls``, ``addresses``).

The client (interposer/, csrc/) and the daemon (daemon/) import this package; it imports
nothing of theirs, only the standard library, so its modules also load from a source tree
(``import wire``) where the build and the generators need them before anything is installed.
"""

from . import _handshake as handshake
from ._framing import (
    HEADER,
    HEADER_SIZE,
    INLINE_TAIL,
    MAGIC,
    MAX_TAIL,
    VERSION,
    Frame,
    FrameReader,
    ProtocolError,
    encode,
    encode_header,
    encode_reply,
    encode_value,
    pack_fixed,
    unpack_fixed,
)
from ._messages import BY_NAME, BY_OP, FTYPES, MESSAGES, RETIRED, Field, Message

__all__ = [
    "HEADER", "HEADER_SIZE", "INLINE_TAIL", "MAGIC", "MAX_TAIL", "VERSION", "Frame",
    "FrameReader", "ProtocolError", "encode", "encode_header", "encode_reply", "encode_value",
    "pack_fixed", "unpack_fixed", "handshake", "BY_NAME", "BY_OP", "FTYPES", "MESSAGES",
    "RETIRED", "Field", "Message",
]
