#!/bin/bash
# The GPU machine's whole check in one call: offline install, the gpu tests, the benchmarks.
# Usage (from the repository root on the GPU machine): bash bench/gpu_check.sh [tests|bench|all] [pytest args]
# Logs go to $OUT (the device tool brings them back) or /tmp/farcuda-out.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/farcuda-out}
mkdir -p "$OUT"
what=${1:-all}; shift || true
export PYTHONUNBUFFERED=1
if ls .gpu/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps .gpu/*.whl || exit 1
fi
python3 -m pip install -q --no-build-isolation --no-deps --no-index . > "$OUT/install.log" 2>&1 \
  || { tail -30 "$OUT/install.log"; exit 1; }
export FARCUDA_TEST_BUILD=/tmp/farcuda-programs
python3 tests/programs/build.py --out "$FARCUDA_TEST_BUILD" -j 16 > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader
if [ "$what" = tests ] || [ "$what" = all ]; then
  python3 -m pytest -q -m gpu -p no:cacheprovider "$@" tests 2>&1 | tee "$OUT/gpu-tests.log" | tail -40
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 bench/e2e.py --out "$OUT/bench.txt" 2>&1 | tail -40
fi
