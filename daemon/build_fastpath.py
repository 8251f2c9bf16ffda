"""Build farcuda.daemon._fastpath (cffi, API mode) from daemon/fastpath.c; used by setup.py."""

from __future__ import annotations

from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent

CDEF = """
typedef struct {
    uint64_t consumed; uint32_t launches; uint32_t records; uint32_t waits;
    int32_t error; uint32_t error_op; uint32_t error_vdev;
    uint64_t out_len; uint64_t out_sent; uint32_t sync_op; uint32_t sync_vdev; uint64_t sync_ns;
    int32_t sync_status;
} fp_result;
int fp_init(void);
void fp_note_current(void *ctx);
int fp_set_context(uint32_t vdev, void *ctx);
int fp_set_kernel(uint32_t vdev, uint32_t kid, void *func, uint32_t param_size);
int fp_set_stream(uint32_t vdev, uint32_t sid, void *stream, uint32_t flags);
int fp_set_event(uint32_t vdev, uint32_t eid, void *event);
int fp_set_small(uint32_t vdev, void *buf, uint64_t size);
int fp_range_add(uint32_t vdev, uint64_t base, uint64_t size);
void fp_range_remove(uint32_t vdev, uint64_t base);
void fp_range_clear(uint32_t vdev);
void fp_drop_stream(uint32_t vdev, uint32_t sid);
void fp_drop_event(uint32_t vdev, uint32_t eid);
void fp_drop_device(uint32_t vdev);
void fp_note_launch(uint32_t vdev, uint32_t kid);
void fp_note_synced(uint32_t vdev);
void fp_launch_window(uint32_t vdev, uint64_t out[4]);
void fp_run(const unsigned char *buf, uint64_t len, unsigned char *out, uint64_t out_cap,
            int sock, int pipe_fd, fp_result *res);
"""


def make_ffi(module: str = "farcuda.daemon._fastpath", libcuda: str | None = None,
             extra_args: tuple[str, ...] = ()) -> cffi.FFI:
    """The extension module; ``libcuda`` replaces the driver it opens (the tests' recording
    stand-in), ``extra_args`` go to the compiler and the linker (sanitizers)."""
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    macros = [("FP_LIBCUDA", '"' + libcuda + '"')] if libcuda else []
    ffi.set_source(module, (HERE / "fastpath.c").read_text(), libraries=["dl"],
                   define_macros=macros, extra_compile_args=["-O2", "-Wall", *extra_args],
                   extra_link_args=list(extra_args))
    return ffi


def build(build_lib: str) -> str:
    """Compile in a scratch folder and place only the extension module in build_lib."""
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory(prefix="farcuda-fastpath-") as tmp:
        built = Path(make_ffi().compile(tmpdir=tmp))
        dest = Path(build_lib) / "farcuda" / "daemon" / built.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, dest)
    return str(dest)


if __name__ == "__main__":
    import sys
    print(build(sys.argv[1] if len(sys.argv) > 1 else "."))
