#!/usr/bin/env python3
"""Generate cluster/deviceplugin/api_pb2.py and api_pb2_grpc.py from api.proto (the kubelet's
device-plugin API, v1beta1) with grpcio-tools.

    python tools/gen_deviceplugin.py [--out DIR]

The generated files are committed, so that installing farcuda needs no protobuf compiler;
tests/unit/test_deviceplugin_proto.py checks that they still describe api.proto. protoc
writes the gRPC module to import its messages as a top-level module (``import api_pb2``):
here it is a package's module, so that import is made relative.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "cluster" / "deviceplugin"
PROTO = "api.proto"


def generate(out: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc
    try:
        from importlib.metadata import version
        tools_version = version("grpcio-tools")
    except Exception:  # noqa: BLE001 - the header only names it
        tools_version = "?"
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    out.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(["grpc_tools.protoc", f"-I{SRC}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(SRC / PROTO)])
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    header = (f"# GENERATED FROM cluster/deviceplugin/{PROTO} by tools/gen_deviceplugin.py "
              f"(grpcio-tools {tools_version}). DO NOT MODIFY.\n")
    paths = []
    for name in ("api_pb2.py", "api_pb2_grpc.py"):
        p = out / name
        text = p.read_text()
        text = text.replace("import api_pb2 as api__pb2", "from . import api_pb2 as api__pb2")
        p.write_text(header + text)
        paths.append(p)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=SRC)
    args = ap.parse_args()
    for p in generate(args.out):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
