"""farcudad: the daemon that runs forwarded CUDA calls on a real GPU.

The front process (server.py) accepts connections, shakes hands and hands each client to a
worker process of its own (worker.py), where a Session (session.py) executes the client's
frames on a backend: the CUDA driver (backends/cuda.py) or, for the test suite only, an
in-memory fake (backends/memory.py).
"""
