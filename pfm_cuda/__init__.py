"""farcuda.pfm: the FM/PFM workload (CUDA program in this folder) and its numpy reference.

The folder ``pfm_cuda/`` is installed as the package ``farcuda.pfm``; modules import each other
relatively. ``reference`` defines the answer, ``datagen`` makes test data, ``data`` reads and
writes data files, ``runner`` builds and runs the CUDA program.
"""

from .data import DataError, load, load_binary, load_text, write_binary, write_text
from .datagen import Blobs, blobs
from .reference import FMError, FMResult, fm, r_factor, scale, start_indices

__all__ = [
    "Blobs",
    "DataError",
    "FMError",
    "FMResult",
    "blobs",
    "fm",
    "load",
    "load_binary",
    "load_text",
    "r_factor",
    "scale",
    "start_indices",
    "write_binary",
    "write_text",
]
