"""Feature maps of the kernel regressor and the moments of its loss, streamed.

A model ``f(x) = phi(x)^T theta`` sees the data only through
``A = Phi^T W Phi / n``, ``b = Phi^T W Y / n`` and ``yy = sum_i w_i ||y_i||^2 / n``,
summed in one pass over row blocks by one per-block function
(:func:`block_moments`) on numpy arrays, torch tensors or the chunks of a dask
array. The user guide, :doc:`/kernel_scale`, derives them and the features
(:class:`NystroemMap`'s pivoted Cholesky cutoff is ``EIGEN_RTOL * M *
max_j k(c_j, c_j)``; :class:`LinearMap` is ``phi(x) = x``).
"""

import os

import numpy as np
from scipy import sparse

#: Relative pivot cutoff of the Cholesky factorization of ``K_CC`` (times ``M``).
EIGEN_RTOL = np.finfo(np.float64).eps

#: Bytes of one block of features (and of its kernel block): sets the block size.
BLOCK_BYTES = 32 * 2**20

#: Fraction of the available memory that a fit may plan to use.
MEMORY_FRACTION = 0.8


def _meminfo_available():
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else free pages, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _read_number(path):
    """The integer in a one-line file, None if absent, unreadable or ``max``."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:  # 'max': no limit
        return None


#: cgroup v2 and v1 files: (limit, usage). A container's limit is what the
#: kernel's OOM killer enforces, whatever ``MemAvailable`` says about the host.
CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
    ),
)

#: cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages).
_NO_CGROUP_LIMIT = 2**60


def _cgroup_available():
    """Bytes left under the cgroup memory limit (v2, else v1), or None."""
    for limit_path, usage_path in CGROUP_FILES:
        limit = _read_number(limit_path)
        if limit is None or limit >= _NO_CGROUP_LIMIT:
            continue
        usage = _read_number(usage_path) or 0
        return max(limit - usage, 0)
    return None


def _rlimit_available():
    """Bytes of address space left under ``RLIMIT_AS`` (``ulimit -v``), or None."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(soft - used, 0)


def _memory_limits():
    """``{source: bytes}`` of every limit that applies here."""
    limits = {
        "the machine's available memory": _meminfo_available(),
        "the cgroup (container) memory limit": _cgroup_available(),
        "the address-space limit (RLIMIT_AS, ulimit -v)": _rlimit_available(),
    }
    return {source: value for source, value in limits.items() if value is not None}


def available_memory():
    """Bytes of memory a fit may allocate now (the least of :func:`_memory_limits`), or None."""
    limits = _memory_limits()
    return min(limits.values()) if limits else None


def check_memory(needed, what, remedy):
    """Raise a ``ValueError`` before allocating ``needed`` bytes that do not fit."""
    available = available_memory()
    if available is None or needed <= MEMORY_FRACTION * available:
        return
    sources = [source for source, value in _memory_limits().items() if value == available]
    under = f" (under {sources[0]})" if sources else ""
    raise ValueError(
        f"{what} needs about {needed / 2**30:.3g} GiB of memory, more than "
        f"{MEMORY_FRACTION:.0%} of the {available / 2**30:.3g} GiB available{under}. {remedy}"
    )


def block_rows(width, itemsize=8):
    """Rows per block so that a block of ``width`` columns takes ``BLOCK_BYTES``."""
    return max(1, int(BLOCK_BYTES // (max(width, 1) * itemsize)))


# ---------------------------------------------------------------- back ends


class NumpyOps:
    """float64 numpy arrays (sparse blocks are densified one block at a time)."""

    dtype = np.float64

    def asarray(self, block):
        if sparse.issparse(block):
            block = block.toarray()
        return np.asarray(block, dtype=self.dtype)

    def kernel(self, spec, X, C):
        return spec.numpy_kernel(X, C)

    def to_numpy(self, a):
        return np.asarray(a, dtype=np.float64)

    def accumulate(self, a):
        return a

    def solve_lower(self, L, B):
        from scipy.linalg import solve_triangular

        return solve_triangular(L, B, lower=True, check_finite=False)


class TorchOps:
    """Torch tensors on ``device`` in ``dtype``; sums accumulate in float64."""

    def __init__(self, device, dtype):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float32 if dtype == "float32" else torch.float64

    def __getstate__(self):  # picklable (dask workers, fitted estimators): no module
        return {"device": str(self.device), "dtype": str(self.dtype).rsplit(".", 1)[-1]}

    def __setstate__(self, state):
        self.__init__(state["device"], state["dtype"])

    def asarray(self, block):
        if sparse.issparse(block):
            block = block.toarray()
        if isinstance(block, self.torch.Tensor):
            return block.to(device=self.device, dtype=self.dtype)
        return self.torch.as_tensor(np.asarray(block), dtype=self.dtype, device=self.device)

    def kernel(self, spec, X, C):
        return spec.torch_kernel(X, C, self)

    def to_numpy(self, a):
        return a.detach().to("cpu", self.torch.float64).numpy()

    def accumulate(self, a):
        return a.to(self.torch.float64)

    def solve_lower(self, L, B):
        return self.torch.linalg.solve_triangular(L, B, upper=False)


def make_ops(device, dtype):
    """numpy without a device, torch with one."""
    if device is None:
        if dtype == "float32":
            raise ValueError("dtype='float32' needs a torch device (device='cpu' or 'cuda').")
        return NumpyOps()
    return TorchOps(device, dtype)


# ------------------------------------------------------------ feature maps


class KernelSpec:
    """A kernel by name and parameters, evaluated in numpy or torch."""

    _TORCH = {"rbf", "laplacian", "linear", "polynomial", "poly", "sigmoid", "cosine"}

    def __init__(self, numpy_kernel, name, gamma, degree, coef0):
        self.numpy_kernel = numpy_kernel  # callable(X, C) -> ndarray
        self.name, self.gamma, self.degree, self.coef0 = name, gamma, degree, coef0

    def torch_kernel(self, X, C, ops):
        torch = ops.torch
        if self.name not in self._TORCH:  # callables and rarer kernels: numpy, then move
            return ops.asarray(self.numpy_kernel(ops.to_numpy(X), ops.to_numpy(C)))
        gamma = 1.0 / X.shape[1] if self.gamma is None else self.gamma
        if self.name == "rbf":
            d2 = (X * X).sum(1)[:, None] - 2 * X @ C.T + (C * C).sum(1)[None, :]
            return torch.exp(-gamma * d2.clamp_min(0))
        if self.name == "laplacian":
            return torch.exp(-gamma * torch.cdist(X, C, p=1))
        if self.name == "linear":
            return X @ C.T
        if self.name in ("polynomial", "poly"):
            return (gamma * X @ C.T + self.coef0) ** self.degree
        if self.name == "sigmoid":
            return torch.tanh(gamma * X @ C.T + self.coef0)
        norms = X.norm(dim=1)[:, None] * C.norm(dim=1)[None, :]  # cosine
        return (X @ C.T) / torch.where(norms == 0, torch.ones_like(norms), norms)


class NystroemMap:
    """``phi(x) = L^{-1} k(C_r, x)`` with ``K_{C_r C_r} = L L^T`` (pivoted Cholesky).

    The pivoted Cholesky factorization of ``K_CC`` picks the centres one at a
    time, each the one least represented by those already picked, and stops
    when every remaining centre is represented to within the cutoff
    (``EIGEN_RTOL * M * max_j k(c_j, c_j)`` on the squared RKHS distance):
    the ``r <= M`` centres kept span the others to working precision. The
    features are an orthonormal basis of their span in the RKHS, like
    ``K_CC^{-1/2} k(C, x)`` up to a rotation, at half the cost per row (a
    triangular solve instead of a product).

    Parameters
    ----------
    spec : KernelSpec
    centers : ndarray of shape (M, n_features)
    K : ndarray of shape (M, M), default=None
        ``k(C, C)``, if known.
    """

    def __init__(self, spec, centers, K=None):
        from scipy.linalg.lapack import dpstrf

        self.spec = spec
        if K is None:
            K = spec.numpy_kernel(centers, centers)
        K = np.asarray(K, dtype=np.float64)
        K = (K + K.T) / 2
        scale = np.max(np.diag(K), initial=0.0)
        if not scale > 0:
            raise ValueError(
                "The kernel matrix of the centres has no positive diagonal entry: "
                "there is no feature to fit."
            )
        factor, piv, rank, info = dpstrf(K, lower=1, tol=EIGEN_RTOL * K.shape[0] * scale)
        if info < 0:  # pragma: no cover - LAPACK argument error
            raise RuntimeError(f"dpstrf failed with info={info}")
        self.kept = piv[:rank] - 1  # positions of the kept centres, in pivot order
        self.centers = centers[self.kept]
        self.cholesky = np.tril(factor[:rank, :rank])
        self._cache = {}

    @property
    def n_features_out(self):
        return self.cholesky.shape[0]

    def _on(self, ops):
        """Centres and factor in the back end's array type (cached)."""
        key = id(ops)
        if key not in self._cache:
            self._cache = {key: (ops.asarray(self.centers), ops.asarray(self.cholesky))}
        return self._cache[key]

    def __call__(self, X, ops):
        centers, cholesky = self._on(ops)
        return ops.solve_lower(cholesky, ops.kernel(self.spec, ops.asarray(X), centers).T).T

    def center_coefficients(self, V):
        """``L^{-T} V``: weights ``theta = V a`` as coefficients of ``k(c_j, .)``."""
        from scipy.linalg import solve_triangular

        return solve_triangular(self.cholesky.T, V, lower=False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


class LinearMap:
    """``phi(x) = x``."""

    def __init__(self, n_features):
        self.n_features_out = n_features

    def __call__(self, X, ops):
        return ops.asarray(X)


# ----------------------------------------------------------------- moments


def block_moments(X, Y, weights, feature_map, ops):
    """Unnormalized moments of one row block, for each set of weights.

    Returns, per column of ``weights`` (training, and validation if present),
    ``[Phi^T W Phi, Phi^T W Y, sum w y^2 (per output), sum w y (per output),
    sum w]`` in float64, in the back end's array type.
    """
    Phi = feature_map(X, ops)
    Y = ops.asarray(Y)
    out = []
    for w in weights:
        w = ops.asarray(w)[:, None]
        root = w**0.5
        # P^T P with P = W^{1/2} Phi: numpy hands the product of an array with its
        # own transpose to BLAS syrk, half the flops of a general product
        P = Phi * root
        wy = w * Y
        parts = [P.T @ P, P.T @ (root * Y), (wy * Y).sum(0), wy.sum(0), w.sum()]
        out.append([ops.accumulate(p) for p in parts])
    return out


def _add(left, right):
    return [[a + b for a, b in zip(x, y)] for x, y in zip(left, right)]


def stream_moments(X, Y, weights, feature_map, ops, *, block=None):
    """Sum :func:`block_moments` over the row blocks of in-memory ``X``."""
    n = X.shape[0]
    block = block or block_rows(feature_map.n_features_out + X.shape[1])
    total = None
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        part = block_moments(X[rows], Y[rows], [w[rows] for w in weights], feature_map, ops)
        total = part if total is None else _add(total, part)
    return [[ops.to_numpy(p) for p in stats] for stats in total]


def _chunk_moments(X, Y, weights, feature_map, ops):
    return block_moments(X, Y, weights, feature_map, ops)


def dask_moments(X, Y, weights, feature_map, ops):
    """:func:`block_moments` mapped over the row chunks of a dask array, summed.

    Runs on the active ``dask.distributed`` client if there is one (the
    default scheduler otherwise); each chunk is one task, the sums a tree.
    """
    import dask

    X = X.rechunk({1: X.shape[1]})
    bounds = np.cumsum((0,) + X.chunks[0])
    if is_dask(Y):
        Y = Y.rechunk((X.chunks[0],) + Y.chunks[1:])
        y_blocks = Y.to_delayed().ravel()
    else:
        y_blocks = [Y[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]
    tasks = [
        dask.delayed(_chunk_moments)(
            x, y, [w[bounds[i] : bounds[i + 1]] for w in weights], feature_map, ops
        )
        for i, (x, y) in enumerate(zip(X.to_delayed().ravel(), y_blocks))
    ]
    while len(tasks) > 1:  # pairwise tree reduction
        paired = [dask.delayed(_add)(a, b) for a, b in zip(tasks[::2], tasks[1::2])]
        tasks = paired + (tasks[-1:] if len(tasks) % 2 else [])
    (total,) = dask.compute(tasks[0])
    return [[ops.to_numpy(p) for p in stats] for stats in total]


def is_dask(a):
    """Whether ``a`` is a dask array (without importing dask)."""
    return type(a).__module__.split(".")[0] == "dask"


class Moments:
    """Normalized moments of one weighted part of the data (float64 numpy)."""

    def __init__(self, gram, cross, yy, ysum, weight_sum):
        if not all(np.all(np.isfinite(p)) for p in (gram, cross, yy, ysum)):
            # dask and torch inputs are read chunk by chunk, not validated up front
            raise ValueError(
                "The features or targets contain NaN or infinite values (in X, y, or "
                "returned by the kernel)."
            )
        n = float(weight_sum)
        self.n = n
        self.A = (gram + gram.T) / (2 * n)
        self.b = cross / n
        self.yy = float(np.sum(yy)) / n  # sum_outputs sum_i w_i y_i^2 / n
        self.y_sq = yy / n  # per output
        self.y_mean = ysum / n  # per output
