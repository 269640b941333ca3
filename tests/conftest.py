"""Shared test settings."""

import os

# One BLAS/torch thread: the tests run on small problems where threads only add
# noise, and parallel tests (n_jobs=2) must not oversubscribe a small machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch
except ImportError:  # the kernel tests need no torch
    torch = None
else:
    torch.set_num_threads(1)
