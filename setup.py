"""Build of farcuda: the Python packages, plus the shim (libcudart.so.13) compiled with cffi
and the driver layer (libcuda.so.1 and the client core libfarcuda.so.1, plain C).

Everything else is declared in pyproject.toml. The shim is built for the Python that runs the
build and installed as farcuda/interposer/lib/libcudart.so.13; the driver layer goes to a
folder of its own, farcuda/interposer/lib/driver/.
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent


class BuildWithShim(build_py):
    def run(self):
        super().run()
        sys.path.insert(0, str(ROOT))  # the source tree: its folders are its packages
        try:
            from daemon import build_fastpath
            from interposer import build_driver, build_shim
        finally:
            sys.path.pop(0)
        out = Path(self.build_lib) / "farcuda" / "interposer" / "lib"
        path = build_shim.build(out, verbose=bool(self.verbose > 1))
        self.announce(f"built {path}", level=2)
        path = build_driver.build(out / "driver", verbose=bool(self.verbose > 1))
        self.announce(f"built {path}", level=2)
        self.announce(f"built {build_fastpath.build(self.build_lib)}", level=2)


class BinaryDistribution(Distribution):
    """The wheel holds a compiled library: tag it for this platform and Python."""

    def has_ext_modules(self):
        return True


PACKAGES = {
    "farcuda.wire": "wire",
    "farcuda.interposer": "interposer",
    "farcuda.daemon": "daemon",
    "farcuda.daemon.backends": "daemon/backends",
    "farcuda.daemon.backends.cuda": "daemon/backends/cuda",
    "farcuda.daemon.session": "daemon/session",
    "farcuda.pfm": "pfm_cuda",
    "farcuda.cluster": "cluster",
    "farcuda.cluster.deviceplugin": "cluster/deviceplugin",
}

setup(
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={
        "farcuda.wire": ["py.typed"],
        "farcuda.daemon": ["farcudad.service", "farcudad.toml", "py.typed"],
        "farcuda.pfm": ["*.cu", "*.h", "*.cuh", "Makefile", "data/*", "README.md"],
        "farcuda.cluster": ["README.md", "deploy/*", "deploy/*/*"],
        "farcuda.cluster.deviceplugin": ["api.proto"],
    },
    cmdclass={"build_py": BuildWithShim},
    distclass=BinaryDistribution,
    zip_safe=False,
)
