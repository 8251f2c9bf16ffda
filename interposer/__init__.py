"""The client side of farcuda: the libcudart.so.13 shim (with csrc/), its embedded Python
runtime, the client configuration and the wire protocol shared with the daemon."""
