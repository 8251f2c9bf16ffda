/* The shim's embedded Python (pyhost.c), started once, isolated from the application's. */
#ifndef FARCUDA_PYHOST_H
#define FARCUDA_PYHOST_H

void fc_python_ensure(void);
int fc_python_status(void); /* cudaSuccess, or why every call fails */

#endif
