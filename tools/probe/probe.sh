#!/bin/bash
# One call on the GPU machine: facts about the machine, the native runtime and the driver bindings.
cd "$(dirname "$0")"
nvidia-smi -L; nvcc --version | tail -1; which systemd-analyze; python3 -c "import uvloop, numpy; print('uvloop', uvloop.__version__, 'numpy', numpy.__version__)"
nproc; free -g | head -2
/usr/local/cuda/bin/nvcc -cudart shared -O2 -gencode arch=compute_90,code=sm_90 probe_native.cu -o /tmp/probe_native && /tmp/probe_native > $OUT/native.txt; tail -12 $OUT/native.txt
PYTHONUNBUFFERED=1 python3 probe_driver.py 2>&1 | tee $OUT/driver.txt
ls /usr/lib/x86_64-linux-gnu/libpython3* /usr/local/cuda/lib64/libcudart* 2>&1 | head
python3 - <<'PY'
import socket, time, os, threading
# Python loopback ping-pong, 4 bytes, two threads in one process as a rough lead (the bench does two processes)
a, b = socket.socketpair()
PY
