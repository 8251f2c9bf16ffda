"""The client side of farcuda: the libcudart.so.13 shim (with csrc/), its embedded Python
runtime, the client configuration and the command line. What it says to the daemon is
defined in farcuda.wire."""
