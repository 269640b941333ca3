"""The thread policy of the torch estimators.

Torch runs its operations on a pool of ``torch.get_num_threads()`` threads
(by default one per core). For the small problems these estimators are often
given, every operation costs less than waking and joining the pool, and when
another process holds a core the pool's threads wait on each other at every
operation: a few-millisecond step becomes a 50-millisecond one. Inside a
joblib worker (``GridSearchCV(n_jobs=2)``, ``cross_validate``), each worker's
pool competes with the others for the same cores.

So each torch ``fit`` and ``predict`` runs under :func:`torch_threads`, with
the estimator's ``n_threads`` resolved by :func:`resolve_n_threads`:

- ``n_threads=None`` (default): one thread when the problem is small (fewer
  than :data:`SMALL_PROBLEM` multiply-adds per step) or when running inside a
  joblib worker; otherwise torch's current setting;
- ``n_threads=k >= 1``: ``k`` threads; ``n_threads=-1``: one per core.

The previous count is restored when the call returns, even after an error.
"""

import contextlib
import numbers
import os
import threading

from sklearn.utils._param_validation import Interval, Options

__all__ = [
    "N_THREADS_CONSTRAINT",
    "SMALL_PROBLEM",
    "in_joblib_worker",
    "resolve_n_threads",
    "torch_threads",
]

#: The constraint of the estimators' ``n_threads`` parameter.
N_THREADS_CONSTRAINT = [
    Interval(numbers.Integral, 1, None, closed="left"),
    Options(numbers.Integral, {-1}),
    None,
]

#: Multiply-adds per training step below which one thread is used by default.
#: On a 2-core machine shared with other work, one thread was faster than two
#: for every size measured, up to 5.5e7 multiply-adds per step (2.9 times);
#: above this bound, torch's own setting is kept (see the user guide,
#: "Threads", and ``benchmarks/bench_threads.py``).
SMALL_PROBLEM = 100_000_000


def in_joblib_worker():
    """Whether this code runs inside a worker of a parallel joblib call.

    joblib raises the nesting level of the active backend in its workers
    (processes and threads alike), which is how scikit-learn's
    ``n_jobs`` parallelism reaches us.

    Returns
    -------
    inside : bool
    """
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    return getattr(backend, "nesting_level", 0) > 0


def resolve_n_threads(n_threads, work_per_step):
    """The number of torch threads for a call, following the module's policy.

    Parameters
    ----------
    n_threads : int or None
        The estimator's parameter: None for the automatic policy, a positive
        count, or -1 for one thread per core.
    work_per_step : float
        Multiply-adds of one training step (for a two-layer network,
        ``n_samples * n_hidden * (n_features + n_outputs)``).

    Returns
    -------
    n_threads : int or None
        The count to set, or None to leave torch's setting alone.
    """
    if n_threads is None:
        if work_per_step < SMALL_PROBLEM or in_joblib_worker():
            return 1
        return None
    if n_threads == -1:
        return os.cpu_count() or 1
    return int(n_threads)


# torch's thread count is one setting for the whole process: fits running in
# threads (joblib's threading backend) share it, so the first to enter saves it
# and the last to leave restores it.
_LOCK = threading.Lock()
_ACTIVE = {"depth": 0, "saved": None}


@contextlib.contextmanager
def torch_threads(n_threads):
    """Run the block with ``n_threads`` torch threads, then restore the previous count.

    Nested and concurrent blocks (fits in joblib threads) are counted: the
    count before the first block is restored when the last one ends.

    Parameters
    ----------
    n_threads : int or None
        None leaves torch's setting alone.

    Yields
    ------
    n_threads : int
        The count in effect inside the block.
    """
    import torch

    if n_threads is None:
        yield torch.get_num_threads()
        return
    with _LOCK:
        if _ACTIVE["depth"] == 0:
            _ACTIVE["saved"] = torch.get_num_threads()
        _ACTIVE["depth"] += 1
        torch.set_num_threads(n_threads)
    try:
        yield n_threads
    finally:
        with _LOCK:
            _ACTIVE["depth"] -= 1
            if _ACTIVE["depth"] == 0:
                torch.set_num_threads(_ACTIVE["saved"])
