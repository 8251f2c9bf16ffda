/* Starting the embedded Python interpreter of the shim.
 *
 * The app's environment must not leak into the shim's Python (PYTHONHOME, PYTHONPATH, a
 * virtualenv of the app's): the interpreter is started isolated, with the home the shim was
 * built for and a module path made of that Python's standard library and the site-packages
 * folder the shim is installed in (found from the shim's own location), plus the folders the
 * build recorded. cffi then finds Python running and only runs its init code.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc.h"
#include "log.h"
#include "pyhost.h"

#ifndef FC_PYTHON_HOME
#define FC_PYTHON_HOME ""
#endif
#ifndef FC_PYTHON_PATHS
#define FC_PYTHON_PATHS ""
#endif
#ifndef FC_LIBPYTHON
#define FC_LIBPYTHON ""
#endif

static pthread_once_t py_once = PTHREAD_ONCE_INIT;
static int py_status;

/* A host that dlopen()s the shim with RTLD_LOCAL would hide libpython's symbols from Python's
 * extension modules: promote the already-loaded libpython to global visibility. */
__attribute__((constructor)) static void promote_libpython(void) {
    if (FC_LIBPYTHON[0]) dlopen(FC_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

static int append_path(PyConfig *cfg, const char *path) {
    if (!path[0]) return 0;
    wchar_t *w = Py_DecodeLocale(path, NULL);
    if (!w) return -1;
    PyStatus st = PyWideStringList_Append(&cfg->module_search_paths, w);
    PyMem_RawFree(w);
    return PyStatus_Exception(st) ? -1 : 0;
}

static void py_start(void) {
    if (Py_IsInitialized()) return; /* the host program is Python itself */
    PyConfig cfg;
    PyConfig_InitIsolatedConfig(&cfg);
    cfg.install_signal_handlers = 0; /* the app's signal handlers stay the app's */
    cfg.site_import = 0;
    cfg.write_bytecode = 0;
    PyStatus st = PyConfig_SetBytesString(&cfg, &cfg.home, FC_PYTHON_HOME);
    if (PyStatus_Exception(st)) goto fail;
    st = PyConfig_SetBytesString(&cfg, &cfg.program_name, "farcuda-shim");
    if (PyStatus_Exception(st)) goto fail;
    cfg.module_search_paths_set = 1;
    /* the site-packages folder holding farcuda/interposer/lib/libcudart.so.13 */
    Dl_info info;
    if (dladdr((void *)py_start, &info) && info.dli_fname) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", info.dli_fname);
        char *d = buf;
        for (int i = 0; i < 4; i++) d = dirname(d);
        if (append_path(&cfg, d)) goto fail;
    }
    const char *extra = getenv("FARCUDA_SHIM_PYTHONPATH");
    char *paths = strdup(extra && extra[0] ? extra : "");
    for (char *save = NULL, *p = strtok_r(paths, ":", &save); p; p = strtok_r(NULL, ":", &save))
        append_path(&cfg, p);
    free(paths);
    paths = strdup(FC_PYTHON_PATHS);
    for (char *save = NULL, *p = strtok_r(paths, ":", &save); p; p = strtok_r(NULL, ":", &save))
        append_path(&cfg, p);
    free(paths);
    st = Py_InitializeFromConfig(&cfg);
    PyConfig_Clear(&cfg);
    if (PyStatus_Exception(st)) {
        fc_log("cannot start the shim's embedded Python (%s); every CUDA call fails",
               st.err_msg ? st.err_msg : "unknown error");
        py_status = cudaErrorInitializationError;
        return;
    }
    PyEval_SaveThread(); /* the GIL is taken per call by cffi */
    return;
fail:
    PyConfig_Clear(&cfg);
    fc_log("cannot configure the shim's embedded Python; every CUDA call fails");
    py_status = cudaErrorInitializationError;
}

void fc_python_ensure(void) { pthread_once(&py_once, py_start); }

int fc_python_status(void) {
    fc_python_ensure();
    return py_status;
}
