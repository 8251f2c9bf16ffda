"""farcuda's wire protocol: sans-io framing and the declarative message table.

Shared by the shim (client) and the daemon. Nothing here touches a socket: both sides feed
bytes in and take frames out, and tests pair them in memory.
"""

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
    pack_fixed,
    unpack_fixed,
)
from . import _handshake as handshake
from ._messages import BY_NAME, BY_OP, FTYPES, MESSAGES, RETIRED, Field, Message

__all__ = [
    "HEADER", "HEADER_SIZE", "INLINE_TAIL", "MAGIC", "MAX_TAIL", "VERSION", "Frame",
    "FrameReader", "ProtocolError", "encode", "encode_header", "encode_reply", "pack_fixed",
    "unpack_fixed", "handshake", "BY_NAME", "BY_OP", "FTYPES", "MESSAGES", "RETIRED", "Field", "Message",
]
