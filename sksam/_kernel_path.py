"""The GD / SAM / USAM path of kernel regression, computed in a Krylov basis.

Notation: ``K`` the ``n x n`` kernel matrix, ``Y`` the ``n x k`` targets,
``alpha`` the dual coefficients (``f = K alpha``), ``r = K alpha - Y`` the
residual, ``lr`` the learning rate. Every solver of :mod:`sksam._update_rules`
is GD/SAM on the feature-space weights ``theta = Phi^T alpha``, whose mean
loss ``L = ||Phi theta - Y||^2 / (2n)`` has the gradient ``g = Phi^T r / n``
and the Hessian ``H = Phi^T Phi / n``. Written through ``alpha``, one step is::

    ||g||^2 = sum_outputs r^T K r / n^2             (the RKHS norm, all outputs)
    c       = perturbation_scale(solver, rho, ||g||)  (0 for gd, rho for usam)
    alpha  <- alpha - (lr / n) (I + (c / n) K) r        (1)

because the perturbed point ``theta + c g`` has the dual coefficients
``alpha + c r / n``, where the residual is ``r + (c / n) K r``.

**Every iterate lives in a Krylov space.** By (1), ``alpha_t`` is a polynomial
in ``K`` applied to ``Y`` (with scalar coefficients that, for SAM, depend on
the path through ``c_t``), of degree below ``2t``. So the whole path is
computed in an orthonormal basis ``Q`` of the block Krylov space
``span{Y, K Y, K^2 Y, ...}`` built by Lanczos with full reorthogonalization
[1]_, [2]_. With ``H_m = Q^T K Q = S diag(theta) S^T`` (Ritz values
``theta``, Ritz vectors ``V = Q S``) and ``z = V^T Y``, step (1) becomes
diagonal: writing ``alpha = V a`` and ``r = V rr`` (``rr = theta a - z``),

    d  = (lr / n) (1 + c theta / n)
    a  <- a - d rr,       rr <- (1 - theta d) rr,
    ||g||^2 = sum theta rr^2 / n^2,

``O(m k)`` per step instead of two ``n x n`` products. For ``gd`` and ``usam``
this is the spectral filter of GD / USAM applied to the Ritz pairs: after
``T`` steps ``a_i = (1 - (1 - lr s_i)^T) z_i / theta_i`` with
``s_i = theta_i / n`` (``gd``) or ``(theta_i / n)(1 + rho theta_i / n)``
(``usam``).

**The same path in a feature space.** A model ``f = Phi theta`` with the
mean loss ``L = ||Phi theta - Y||_W^2 / (2n)`` has the gradient
``A theta - b`` (``A = Phi^T W Phi / n``, ``b = Phi^T W Y / n``): the same
rule, with the Krylov basis of ``A`` started at ``b`` and the gradient itself
as the state ``r`` (:class:`Dynamics`). :func:`fit_krylov_path` and
:func:`run_steps` serve both: the dual path passes ``K`` and ``Y``, the
primal one ``A`` and ``b`` (see :mod:`sksam._kernel_features`).

**Exactness.** Lanczos reproduces ``p(K) Y`` exactly for every polynomial of
degree below the number of block steps, and the space becomes invariant
(``K Q = Q H_m``) after at most ``n`` columns, after which the path is exact
up to rounding; small problems get there. On large problems the basis grows
until the fitted coefficients stop changing: the solution in the basis of
size ``m`` is compared with the one of the previous check (each check is
``growth`` times larger), and the basis stops growing when they agree to
``KRYLOV_RTOL`` (relative, Frobenius norm of ``alpha``). The filters converge
fast whatever the spectrum: ``x^T`` on ``[-1, 1]`` has polynomial
approximations of degree ``O(sqrt(T log(1/eps)))`` [3]_, so the basis needs
a multiple of ``sqrt(max_iter)`` columns, not ``n`` (54 columns for
``n = 5000``, ``max_iter = 1000``, where the result agrees with the path in
the full eigenbasis of a dense ``eigh`` to ``3e-14``, see
``benchmarks/bench_kernel.py``).

**When the basis would fill the space: one dense eigendecomposition.** The
basis needs a multiple of ``sqrt(max_iter)`` columns *per output*: with many
outputs (a classifier's one column per class) and many steps it reaches ``n``,
where growing it (``2 n^2 m`` flops for the images, ``4 n m^2`` to
reorthogonalize, both at about half the flop rate of a dense eigensolver)
and diagonalizing it at every check cost more than one ``eigh`` of ``K``
(``~14/3 n^3``). :func:`fit_krylov_path` compares the least cost of the
basis (two checks) with the dense one (:func:`prefers_eigh`) and takes the
eigenbasis of ``K`` itself (:class:`EigenPath`) when it is cheaper, or
switches to it when a basis that has not settled would next cost more: the
Krylov basis' limit, exact, the same path to rounding.

**The steps cost O(m), not O(m k), and gd / usam need none.** Every output
column is multiplied by the same factors, so :func:`run_steps` keeps
``a = A_t z`` and ``r = -P_t z`` as two vectors of ``m`` coefficients and
sums ``z^2`` over the outputs once. With a constant scale (``gd``,
``usam``) ``P_t = d^t`` and ``A_t`` is a geometric sum, evaluated in closed
form for any ``t``, and the training losses ``sum_i z_i^2 d_i^(2t)`` of all
steps are the product of two small matrices (``d^(2j)`` for the steps of a
block, ``z^2 d^(2 b)`` for the blocks' starts); the stopping rule reads
them one by one, and the iterate is formed only when a validation score
needs it.

**SAM's bounce, and why the residual is updated multiplicatively.** Along the
top eigenvector SAM's factor ``1 - lr s_1 (1 + c_t s_1)`` first shrinks the
residual (often far below ``eps |y|``), then, as ``||g||`` falls and
``c_t = rho / ||g||`` grows, leaves ``[-1, 1]`` and regrows it until it
bounces across the valley at a fixed amplitude (Bartlett et al., 2023 [4]_).
A loop on ``alpha`` recomputes ``r = K alpha - y`` and floors every component
at ``~eps |y|``, so it regrows *rounding noise*, whose sign is arbitrary: at
``n = 5000`` two such loops that only order the same arithmetic differently
disagree by ``1.6e-4`` on ``alpha`` and ``7e-2`` on the fitted values. Here
each Ritz component is multiplied by its own factor, so it keeps its relative
precision and the computed path is the exact-arithmetic one (until a
component underflows below ``1e-308``). Should the comparison of two bases
still stagnate (three checks in a row that do not halve the change, all
below ``STAGNATION_RTOL``), the basis stops growing there.

References
----------
.. [1] C. Lanczos, "An iteration method for the solution of the eigenvalue
   problem of linear differential and integral operators", J. Res. Nat. Bur.
   Standards 45, 1950.
.. [2] Y. Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., SIAM
   2003, sec. 6.6; N. J. Higham, *Functions of Matrices*, SIAM 2008, ch. 13
   (Krylov approximation of ``f(A) b``).
.. [3] S. Sachdeva and N. K. Vishnoi, "Faster Algorithms via Approximation
   Theory", Found. Trends Theor. Comput. Sci. 9(2), 2014, Thm. 3.3.
.. [4] P. L. Bartlett, P. M. Long and O. Bousquet, "The Dynamics of
   Sharpness-Aware Minimization: Bouncing Across Ravines and Drifting
   Towards Wide Minima", JMLR 24, 2023.
"""

import functools
import itertools

import numpy as np
from scipy.linalg import eigh, eigvalsh
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

from ._update_rules import is_perturbed, perturbation_scale

#: Relative change of the dual coefficients below which the basis stops growing.
KRYLOV_RTOL = 1e-7

#: Directions whose image under ``K`` leaves the basis by less than this times
#: ``lambda_max(K)`` are dropped (the space is invariant to that precision).
DEFLATION_TOL = 1e-12

#: Relative change below which the basis also stops growing once the change
#: no longer decreases (three checks in a row without halving): the rounding
#: floor of a path that is itself sensitive to rounding (see the module notes).
STAGNATION_RTOL = 1e-6

#: Upper bound on the basis size (columns per output), whatever ``n``.
MAX_KRYLOV_DIM = 2000

#: Below this size ``lambda_max(K)`` comes from a dense eigensolver.
_DENSE_EIG_SIZE = 100


def flush_subnormal(M):
    """Set the subnormal entries of ``M`` to zero, in place; return ``M``.

    Some LAPACK builds fail on a matrix with subnormal entries (below
    ``2.2e-308``): OpenBLAS's ``dsyevr`` raised "Internal Error" on a kernel
    matrix whose off-diagonal entries had underflowed to ``1e-310``, on some
    CPUs only (their kernels flush subnormals to zero in some operations and
    not in others, and the driver's consistency checks then fail). The
    entries carry nothing: a kernel matrix is refused when its top
    eigenvalue is below ``1e-150`` (:mod:`sksam._kernel_models`), so a
    subnormal entry is more than ``1e150`` times below the rounding of the
    path, and zeroing it changes no computed digit.
    """
    tiny = np.finfo(M.dtype).tiny
    subnormal = (M != 0) & (np.abs(M) < tiny)
    if subnormal.any():
        M[subnormal] = 0.0
    return M


def symmetric_eigh(M, *, driver="evd"):
    """Eigenvalues (ascending) and eigenvectors of the symmetric matrix ``M``, robustly.

    LAPACK drivers fail on some matrices on some machines (``LinAlgError``;
    see :func:`flush_subnormal`), where another driver succeeds: ``driver``
    first (a scipy ``eigh`` driver, or ``'numpy'`` for ``numpy.linalg.eigh``),
    then the others of ``'evd'`` (divide and conquer), ``'ev'`` (QR
    iteration) and numpy's. Every eigendecomposition of the kernel path goes
    through here (and :func:`top_eigenvalue`), so a fit never depends on one
    driver.
    """
    order = [driver] + [d for d in ("evd", "ev", "numpy") if d != driver]
    attempts = [functools.partial(_eigh_with, M, d) for d in order]
    return _first_success(attempts, what="eigendecomposition")


def _eigh_with(M, driver):
    if driver == "numpy":
        return np.linalg.eigh(M)
    return eigh(M, driver=driver)


def top_eigenvalue(K):
    """Largest eigenvalue of the symmetric matrix ``K``, to machine precision.

    Dense for small matrices (scipy's ``eigvalsh`` of the top eigenvalue
    only, then the other drivers of :func:`symmetric_eigh` if it fails), and
    Lanczos (ARPACK) from a fixed pseudo-random start vector otherwise, so the
    result is a deterministic function of ``K``; each route falls back on the
    other when it fails.
    """
    n = K.shape[0]
    if n == 0:
        return 0.0
    dense = [
        lambda: eigvalsh(K, subset_by_index=[n - 1, n - 1])[-1],
        lambda: eigvalsh(K, driver="evd")[-1],
        lambda: eigvalsh(K, driver="ev")[-1],
        lambda: np.linalg.eigvalsh(K)[-1],
    ]
    lanczos = [lambda: _lanczos_top(K)]
    attempts = dense + lanczos if n <= _DENSE_EIG_SIZE else lanczos + dense
    return float(_first_success(attempts, what="top eigenvalue"))


def _lanczos_top(K):
    """``lambda_max(K)`` by ARPACK's Lanczos, from a fixed start vector."""
    n = K.shape[0]
    if n < 3:  # ARPACK needs k < n - 1
        raise np.linalg.LinAlgError(f"ARPACK needs a matrix of 3 rows or more, got {n}")
    v0 = np.random.default_rng(0).standard_normal(n)
    return eigsh(K, k=1, which="LA", v0=v0, tol=0, return_eigenvectors=False)[0]


#: What a failing eigensolver raises: LAPACK's errors, ARPACK's, and scipy's
#: ``ValueError`` for a driver a LAPACK build lacks.
_EIGEN_FAILURES = (np.linalg.LinAlgError, ArpackError, ArpackNoConvergence, ValueError)


def _first_success(attempts, *, what):
    """The result of the first of ``attempts`` that neither raises nor returns NaN."""
    failures = []
    for attempt in attempts:
        try:
            result = attempt()
        except _EIGEN_FAILURES as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            continue
        values = result[0] if isinstance(result, tuple) else result
        if np.all(np.isfinite(values)):
            return result
        failures.append("non-finite eigenvalues")
    raise np.linalg.LinAlgError(
        f"Every eigensolver failed on the {what} of the kernel path's matrix "
        f"({'; '.join(failures)}); check that the kernel matrix is finite and symmetric."
    )


class KrylovBasis:
    """Orthonormal basis of ``span{Y, K Y, K^2 Y, ...}``, grown one block at a time.

    ``Q[:, :m]`` are the columns whose image ``K q`` is known, so that
    ``H[:m, :m] = Q[:, :m]^T K Q[:, :m]`` is complete; ``Q[:, m:p]`` is the
    next block, whose image the next :meth:`grow` computes.
    """

    def __init__(self, Y, scale, max_dim):
        n = Y.shape[0]
        self.scale = scale
        self.max_dim = min(max_dim * Y.shape[1], n)  # per output
        self.Q = np.empty((n, min(self.max_dim + Y.shape[1], n)))
        self.H = np.zeros((self.Q.shape[1], self.Q.shape[1]))
        self.m, self.p = 0, 0
        self.invariant = False
        # The first block spans Y itself (no image yet): deflate against |Y|.
        self._append(Y, np.linalg.norm(Y, axis=0).max() * DEFLATION_TOL)

    def _append(self, W, tol):
        """Append an orthonormal basis of ``W``'s columns above ``tol``."""
        U, s, _ = np.linalg.svd(W, full_matrices=False)
        keep = s > tol
        keep[np.cumsum(keep) > self.Q.shape[1] - self.p] = False  # room left
        self.Q[:, self.p : self.p + keep.sum()] = U[:, keep]
        self.p += int(keep.sum())

    def grow(self, K):
        """One block step: the image of the pending block, orthogonalized twice."""
        m, p = self.m, self.p
        W = K @ self.Q[:, m:p]
        Qp = self.Q[:, :p]
        C = Qp.T @ W
        W -= Qp @ C
        C2 = Qp.T @ W  # second pass: orthogonality to machine precision
        W -= Qp @ C2
        C += C2
        self.H[:p, m:p] = C
        self.H[m:p, :p] = C.T
        self.H[m:p, m:p] = (C[m:p] + C[m:p].T) / 2
        self.m = p
        if p >= self.Q.shape[1]:
            self.invariant = p >= self.Q.shape[0]
            return
        self._append(W, self.scale * DEFLATION_TOL)
        self.invariant = self.p == p  # nothing new: K Q = Q H

    @property
    def full(self):
        """No room left to grow."""
        return self.invariant or self.m >= self.max_dim


class KrylovPath:
    """The fitted path ``alpha_t = V a_t`` in the Ritz pairs ``theta``, ``V`` of a
    :class:`Checkpoint`, with ``z = V^T Y`` (the module notes' notation)."""

    def __init__(self, checkpoint, Y):
        self.theta, self.S, self.Qm = checkpoint.theta, checkpoint.S, checkpoint.Qm
        self.z = self.S.T @ (self.Qm.T @ Y)

    def coefficients_in_q(self, a):
        """``a`` (Ritz coordinates) in the Lanczos basis ``Q``."""
        return self.S @ a

    @property
    def V(self):
        return self.Qm @ self.S


class EigenPath:
    """The path in the full eigenbasis of ``K``: the limit of :class:`KrylovPath`.

    Same interface, with ``Q = V`` the eigenvectors (``S`` is None: the
    identity), from the dense ``eigh`` of :meth:`KrylovCheckpoints.eigen`.
    """

    def __init__(self, eigen, Y):
        self.theta, self.Qm = eigen
        self.S = None
        self.z = self.Qm.T @ Y

    def coefficients_in_q(self, a):
        """``a``: the eigenbasis is its own Lanczos basis."""
        return a

    @property
    def V(self):
        return self.Qm


class Checkpoint:
    """The basis at one check of :func:`fit_krylov_path`: its Ritz pairs and state.

    ``theta``, ``S``: the eigendecomposition of ``H_m``; ``Qm``: the first
    ``m`` columns of the basis (a view: they never change once complete);
    ``invariant``, ``full``: the basis' flags then; ``eigh_next``: whether
    growing to the next check alone would cost more than a dense ``eigh``.
    """

    def __init__(self, basis, eigh_next):
        m = basis.m
        self.theta, self.S = symmetric_eigh(basis.H[:m, :m], driver="evr")
        self.Qm = basis.Q[:, :m]
        self.m, self.invariant, self.full = m, basis.invariant, basis.full
        self.eigh_next = eigh_next

    @property
    def last(self):
        """No check follows (the path always stops at a full or invariant basis)."""
        return self.invariant or self.full


class KrylovCheckpoints:
    """The checks of :func:`fit_krylov_path` on one matrix, computed once for many paths.

    The basis, its size at every check and the Ritz pairs there depend on
    ``K``, the check schedule and the *direction* of the start block, not on
    the solver, ``rho`` or the learning rate: the paths of one problem share
    them and the dense eigendecomposition of ``K`` (:meth:`eigen`), the basis
    growing only when a path needs a check not yet made. A start block
    scaled by a power of two gives the same basis bit for bit.

    Parameters
    ----------
    K, Y, scale, first_check, growth, max_dim
        As in :func:`fit_krylov_path`.
    keep : bool
        Keep the Ritz pairs of every check (for later paths); a single path
        reads each once and keeps only the last.
    """

    def __init__(self, K, Y, scale, *, first_check, growth, max_dim, keep):
        self.K, self.Y, self.scale = K, Y, scale
        self.growth, self.max_dim, self.keep = growth, max_dim, keep
        self.k, self.n = Y.shape[1], K.shape[0]
        self._next_check = first_check * self.k
        self._basis = None
        self._checks = []
        self._eigen = None

    def check(self, j):
        """The ``j``-th check (from 0), grown on first request; None after the last."""
        while len(self._checks) <= j:
            if self._checks and self._checks[-1].last:
                return None
            self._grow_to_next_check()
        return self._checks[j]

    def _grow_to_next_check(self):
        if self._basis is None:
            self._basis = KrylovBasis(self.Y, self.scale, self.max_dim)
        basis = self._basis
        while True:
            basis.grow(self.K)
            if basis.full or basis.m >= self._next_check:
                break
        m = basis.m
        self._next_check = max(int(self.growth * m), m + self.k)
        # once the next check alone costs more than the dense eigendecomposition,
        # a path that has not settled finishes exactly in the eigenbasis instead
        target = min(self._next_check, basis.max_dim)
        eigh_next = krylov_flops(self.n, target, [target], start=m) >= eigh_flops(self.n)
        if not self.keep and self._checks:
            self._checks[-1] = None  # read already: its path holds what it needs
        self._checks.append(Checkpoint(basis, eigh_next))

    def eigen(self):
        """Eigenvalues and eigenvectors of ``K`` (one dense ``eigh``, divide and conquer)."""
        if self._eigen is None:
            self._eigen = symmetric_eigh(self.K, driver="evd")
        return self._eigen


#: Flops of a dense symmetric eigendecomposition with eigenvectors, per
#: ``n^3``: ``4/3`` to reduce to tridiagonal form, ``2`` to apply the
#: reflectors back to the eigenvectors, ``~4/3`` for divide and conquer
#: without deflation (Golub and Van Loan, *Matrix Computations*, 4th ed.,
#: sec. 8.3-8.4).
EIGH_FLOPS = 14.0 / 3.0


#: Flop rate of a dense ``eigh`` over that of growing the basis. ``eigh``
#: spends most of its flops in blocked BLAS-3 updates; the growth multiplies
#: ``K`` by blocks only as wide as the number of outputs (it streams ``K``
#: from memory once per block) and reorthogonalizes in matrix-vector-like
#: passes, at about half the rate with ten outputs (and less with one: the
#: rule then errs towards the basis, and only near the break-even).
GROWTH_SLOWDOWN = 2.0


def krylov_flops(n, m, checks, start=0):
    """Cost of growing a Krylov basis of an ``n x n`` matrix from ``start`` to ``m`` columns.

    ``2 n^2`` per column for the images ``K q`` and ``4 n p`` per column added
    at size ``p`` (two passes of full reorthogonalization, ``2 n p`` each),
    counted ``GROWTH_SLOWDOWN`` times (in flops at the rate of a dense
    ``eigh``), plus one eigendecomposition of the projected matrix at each
    basis size in ``checks``.
    """
    growth = 2.0 * n * n * (m - start) + 2.0 * n * (m * m - start * start)
    return GROWTH_SLOWDOWN * growth + sum(EIGH_FLOPS * c**3 for c in checks)


def eigh_flops(n):
    """Flops of a dense eigendecomposition of an ``n x n`` matrix (:data:`EIGH_FLOPS`)."""
    return EIGH_FLOPS * float(n) ** 3


def prefers_eigh(n, first_size, growth):
    """Whether one dense ``eigh`` of the ``n x n`` matrix costs less than the basis.

    The Krylov route checks the solution at ``first_size`` columns, then at
    ``growth`` times that, and stops at the earliest at the second check:
    that is its least cost (:func:`krylov_flops`). When it costs more than
    :func:`eigh_flops` (a basis of about half of ``n`` or more), the dense
    eigendecomposition is both cheaper and exact.
    """
    first = min(first_size, n)
    second = min(max(int(growth * first), first + 1), n)
    checks = [first] if first >= n else [first, second]
    return krylov_flops(n, checks[-1], checks) >= eigh_flops(n)


class Diverged(ArithmeticError):
    """The training loss became infinite or NaN at ``step``."""

    def __init__(self, step):
        super().__init__(f"the training loss is not finite at step {step}")
        self.step = step


class Dynamics:
    """Rule (1) diagonalized in a Ritz basis, for the dual or the primal weights.

    Both parametrizations share the Hessian eigenvalues ``h`` (of ``H``, the
    Hessian of the mean loss), the state ``(a, r)`` and the step::

        f  = lr (1 + c h)                 (c: the perturbation scale)
        a <- a - step_weight f r,   r <- (1 - h f) r,
        ||g||^2 = sum norm_weight r^2

    * dual (:func:`dual_dynamics`, ``alpha = V a``): ``r`` is the residual
      ``theta a - z``, ``h = theta / n``, ``step_weight = 1 / n`` and
      ``norm_weight = h / n`` (the RKHS norm of ``Phi^T r / n``);
    * primal (:func:`primal_dynamics`, ``theta = V a`` in a feature space with
      ``A = Phi^T W Phi / n``, ``b = Phi^T W y / n``): ``r`` is the gradient
      ``h a - z`` itself, ``h`` the Ritz values of ``A``, both weights 1.

    ``n`` is the sum of the sample weights (the number of samples without
    weights).
    """

    def __init__(self, h, z, *, step_weight, norm_weight, n=None, yy=None):
        self.h = np.asarray(h, dtype=np.float64)
        self.z = z
        self.step_weight = step_weight
        self.norm_weight = norm_weight
        self.n, self.yy = n, yy  # dual: n; primal: yy

    def loss(self, a, r):
        """The mean training loss at ``(a, r)``."""
        if self.yy is None:  # dual: ||r||^2 / (2n)
            return float(np.vdot(r, r)) / (2 * self.n)
        # primal: theta^T A theta / 2 - b^T theta + yy / 2
        return float(np.vdot(a, 0.5 * self.h[:, None] * a - self.z)) + 0.5 * self.yy


def dual_dynamics(theta, z, n):
    """Kernel-space dynamics: Ritz values ``theta`` of ``K``, ``z = V^T Y``."""
    h = theta / n
    return Dynamics(h, z, step_weight=1.0 / n, norm_weight=h[:, None] / n, n=n)


def primal_dynamics(mu, z, yy):
    """Feature-space dynamics: Ritz values ``mu`` of ``A``, ``z = V^T b``, ``yy`` of the loss."""
    return Dynamics(mu, z, step_weight=1.0, norm_weight=1.0, yy=yy)


def run_steps(dynamics, *, lr, solver, rho, max_iter, monitor=None):
    """Iterate rule (1) in Ritz coordinates from zero weights.

    The state is two vectors of the basis size, ``a_t = A_t z`` and
    ``r_t = -P_t z`` with ``A_t <- A_t + step_weight f_t P_t`` and
    ``P_t <- (1 - h f_t) P_t``; ``gd`` and ``usam`` run in closed form
    (:func:`_run_constant`, see the module notes); only ``sam`` iterates.

    Parameters
    ----------
    dynamics : Dynamics
        The problem in the Ritz basis (dual or primal).
    lr, solver, rho, max_iter
        The estimator's settings.
    monitor : callable or None
        ``monitor(t, a, loss)`` after each step ``t = 1, 2, ...``; returns
        True to stop. ``a`` is None when ``monitor.needs_iterate`` is False.
        ``None``: run ``max_iter`` steps.

    Returns
    -------
    a : ndarray of shape (m, k)
        Ritz coordinates of the last iterate.
    scales : list of float
        The perturbation scale ``c_t`` of every step taken.
    losses : list of float
        The mean training loss after every step taken.

    Raises
    ------
    Diverged
        If the loss stops being finite.
    """
    h = dynamics.h
    z = dynamics.z
    zz = np.einsum("ij,ij->i", z, z)  # sum over the outputs
    needs_iterate = monitor is not None and getattr(monitor, "needs_iterate", True)
    if not is_perturbed(solver, rho) or solver == "usam":
        c = perturbation_scale(solver, rho, 0.0)
        return _run_constant(dynamics, zz, c, lr, max_iter, monitor, needs_iterate)
    # A component the targets do not reach (z_i = 0 for every output, to the
    # rounding of z = U^T y) stays at zero; its factor 1 - h f, which SAM's
    # 1 / ||g|| can make huge, would only amplify rounding there (and 0 * inf
    # is NaN): it is taken as a flat direction.
    h = np.where(reached(zz), h, 0.0)
    weight = np.broadcast_to(np.asarray(dynamics.norm_weight, dtype=np.float64).ravel(), h.shape)
    wzz = weight * zz
    primal = dynamics.yy is not None
    # one product gives the loss after a step and ||g||^2 before the next
    norms = np.vstack([zz / (2 * dynamics.n) if not primal else np.zeros_like(zz), wzz])
    lr_h = lr * h
    sw = dynamics.step_weight
    coef = np.zeros_like(h)  # a = sw coef z: the constant step weight is applied once
    P = np.ones_like(h)
    # preallocated: at m ~ 1000 a step is a few microseconds of arithmetic,
    # comparable to allocating its temporaries
    f, tmp, PP = np.empty_like(h), np.empty_like(h), np.empty_like(h)
    scales, losses = [], []
    _, g2 = norms @ (P * P)
    with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is Diverged below
        for t in range(max_iter):
            # ||g||^2 = sum_i w_i r_i^2 (>= 0 up to rounding); a zero gradient is
            # not perturbed (e = rho g / ||g|| has no direction): the GD step
            c = perturbation_scale(solver, rho, np.sqrt(g2)) if g2 > 0 else 0.0
            scales.append(c)
            np.multiply(lr_h, c, out=f)
            f += lr  # f = lr (1 + c h)
            np.multiply(f, P, out=tmp)
            coef += tmp
            np.multiply(h, f, out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            P *= tmp  # r <- (1 - h f) r
            np.multiply(P, P, out=PP)
            loss, g2 = norms @ PP
            if primal:
                loss = _primal_loss(sw * coef, h, zz, dynamics.yy)
            loss = float(loss)
            if not np.isfinite(loss):
                raise Diverged(t + 1)
            losses.append(loss)
            if monitor is not None and monitor(
                t + 1, sw * coef[:, None] * z if needs_iterate else None, loss
            ):
                break
    return sw * coef[:, None] * z, scales, losses


def _primal_loss(coef, h, zz, yy):
    """``theta^T A theta / 2 - b^T theta + yy / 2`` at ``theta = coef z`` (rows)."""
    return float(np.dot(zz, coef * (0.5 * h * coef - 1.0))) + 0.5 * yy


#: Steps whose losses one block of :func:`_run_constant` computes.
_LOSS_BLOCK = 512


def _geometric(d, lr_f, step_weight, t):
    """``step_weight f sum_{s<t} d^s`` and ``d^t`` for each component, ``t`` a column.

    ``1 - d^t = -expm1(t log d)`` keeps the relative precision of components
    whose factor ``d`` is close to 1 (``t`` steps of size ``f`` on a nearly
    flat direction), where ``1 - d^t`` would cancel.
    """
    t = np.asarray(t, dtype=np.float64)
    positive = d > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_d = np.log1p(np.where(positive, d, 1.0) - 1.0)
        power = np.where(positive, np.exp(t * log_d), np.power(d, t))
        one_minus = np.where(positive, -np.expm1(t * log_d), 1.0 - power)
        gap = 1.0 - d  # exact for d in [1/2, 2] (Sterbenz)
        flat = gap == 0
        geo = np.where(flat, t, one_minus / np.where(flat, 1.0, gap))
    return step_weight * lr_f * geo, power


def _run_constant(dynamics, zz, c, lr, max_iter, monitor, needs_iterate):
    """GD / USAM: the constant factors of rule (1), in closed form for any step."""
    h, z = dynamics.h, dynamics.z
    lr_f = lr * (1.0 + c * h)
    d = 1.0 - h * lr_f  # the same rounded factor as a step-by-step loop
    primal = dynamics.yy is not None
    E = d * d
    offsets = np.arange(1, _LOSS_BLOCK + 1, dtype=np.float64)[:, None]
    if not primal:
        # loss_t = sum_i zz_i d_i^(2t) / (2n): block b holds t = bB + j,
        # d^(2t) = E^(bB) E^j, a product of two small matrices
        with np.errstate(over="ignore"):
            powers = np.power(E, offsets)  # (B, m)
    losses = []
    stop = max_iter
    done = 0
    while done < max_iter:
        size = min(_LOSS_BLOCK, max_iter - done)
        if primal:
            coef, _ = _geometric(d, lr_f, dynamics.step_weight, done + offsets[:size])
            block = coef * (0.5 * h * coef - 1.0) @ zz + 0.5 * dynamics.yy
        else:
            with np.errstate(over="ignore", under="ignore"):
                start = np.power(E, float(done)) * zz
                block = (powers[:size] @ start) / (2 * dynamics.n)
        finite = np.isfinite(block)
        for j in range(size):
            t = done + j + 1
            if not finite[j]:
                raise Diverged(t)
            loss = float(block[j])
            losses.append(loss)
            if monitor is not None:
                a = None
                if needs_iterate:
                    coef, _ = _geometric(d, lr_f, dynamics.step_weight, float(t))
                    a = coef[:, None] * z
                if monitor(t, a, loss):
                    stop = t
                    break
        if stop < max_iter:
            break
        done += size
    coef, _ = _geometric(d, lr_f, dynamics.step_weight, float(len(losses)))
    return coef[:, None] * z, [c] * len(losses), losses


def _step(a, residual, c, col, step_weight, lr):
    """Rule (1): ``a <- a - w f r``, ``r <- (1 - h f) r`` (multiplied: see the module notes)."""
    f = lr * (1.0 + c * col)
    return a - step_weight * f * residual, residual * (1.0 - col * f)


def replay(dynamics, *, lr, scales):
    """Yield ``a_t`` for ``t = 1 .. len(scales)``: the path of :func:`run_steps`, to rounding."""
    a = np.zeros_like(dynamics.z)
    residual = -dynamics.z
    col = dynamics.h[:, None]
    for c in scales:
        a, residual = _step(a, residual, float(c), col, dynamics.step_weight, lr)
        yield a


def reached(zz):
    """Whether the targets reach each component: ``z_i^2`` above the rounding of ``z = U^T y``.

    A projection ``z_i = u_i^T y`` carries an absolute rounding error of
    about ``n eps ||y||`` (``n`` terms summed), so a component below that is
    rounding, not signal: a centred ``y`` and the constant eigenvector of
    ``gamma=0``, say, give ``|z_i|`` near ``1e-15`` instead of 0. SAM's
    ``1 / ||g||`` would amplify such a component without bound.
    """
    zz = np.asarray(zz, dtype=np.float64)
    noise = (len(zz) * np.finfo(np.float64).eps) ** 2 * float(np.sum(zz))
    return zz > noise


def sam_share(dynamics, *, lr, scales):
    """``||drift|| / ||theta||``: the share of the weights' movement due to SAM.

    Step (1) moves the Ritz coordinates by ``-w lr (1 + c h) r``, of which
    ``-w lr c h r`` is the perturbation's (the gradient at ``theta + e``
    minus the gradient at ``theta``); ``drift`` sums that part over the
    ``scales`` of the steps taken, ``theta`` is where they ended. Norms are
    those of the weights: the RKHS norm ``sum_i theta_i a_i^2`` in the dual,
    the Euclidean one in the primal. Zero for gradient descent; None when
    the weights did not move.
    """
    zz = np.einsum("ij,ij->i", dynamics.z, dynamics.z)
    h = np.where(reached(zz), dynamics.h, 0.0)  # as run_steps: unreached directions stay flat
    coef, drift, P = np.zeros_like(h), np.zeros_like(h), np.ones_like(h)
    for c in scales:
        f = lr * (1.0 + c * h)
        coef += f * P
        drift += lr * c * h * P
        P *= 1.0 - h * f
    norm_weight = zz * (h if dynamics.yy is None else 1.0)
    moved = float(np.sqrt(np.dot(norm_weight, coef * coef)))
    if not (moved > 0 and np.isfinite(moved)):
        return None
    return float(np.sqrt(np.dot(norm_weight, drift * drift))) / moved


def relative_change(new, old):
    """``||new - [old; 0]||_F / ||new||_F`` (``old`` has fewer rows)."""
    diff = new.copy()
    diff[: old.shape[0]] -= old
    norm = np.linalg.norm(new)
    if norm == 0:
        return 0.0 if np.linalg.norm(old) == 0 else np.inf
    return float(np.linalg.norm(diff) / norm)


def fit_krylov_path(
    K,
    Y,
    *,
    scale,
    solve,
    first_check=24,
    growth=1.5,
    rtol=KRYLOV_RTOL,
    max_dim=MAX_KRYLOV_DIM,
    method="auto",
    shared=None,
):
    """Grow a Krylov basis until ``solve`` gives the same answer twice.

    Parameters
    ----------
    K : ndarray of shape (n, n)
        Symmetric kernel matrix.
    Y : ndarray of shape (n, k)
        Targets: the start block.
    scale : float
        ``lambda_max(K)``, the scale of the deflation test.
    solve : callable
        ``solve(path)`` runs the dynamics in the Ritz basis of a
        :class:`KrylovPath` and returns ``(a, info)``, ``a`` the Ritz
        coordinates of the fitted coefficients.
    first_check : int
        Columns (per output) before the first comparison.
    growth : float
        Each comparison is made on a basis this many times larger.
    rtol : float
        Stop when the fitted coefficients change by less than this.
    max_dim : int
        Largest basis.
    method : {'auto', 'krylov', 'eigh'}
        ``'eigh'``: one dense eigendecomposition of ``K`` instead of the
        basis (:class:`EigenPath`, exact); ``'auto'`` takes it when the basis
        would cost more (:func:`prefers_eigh`), or switches to it when the
        next size of a basis that has not settled would.
    shared : dict or None
        The :class:`KrylovCheckpoints` of earlier paths on the same ``K``
        (and start direction), by schedule; a path with the same schedule
        reuses their basis and eigendecomposition, and adds what it grows.
        None: a basis for this path only.

    Returns
    -------
    path : KrylovPath or EigenPath
    a : ndarray
        As returned by ``solve`` in the final basis.
    info : object
        As returned by ``solve``.
    diagnostics : dict
        ``size`` (columns), ``exact`` (the space became invariant),
        ``change`` (last relative change, 0 when exact), ``converged``
        (``change <= rtol``), ``stagnated`` (stopped by the stagnation rule).
    """
    k, n = Y.shape[1], K.shape[0]
    checks = _checkpoints(K, Y, scale, first_check, growth, max_dim, shared)
    adaptive = method == "auto"
    if adaptive:
        method = "eigh" if prefers_eigh(n, first_check * k, growth) else "krylov"
    if method == "eigh":
        return _fit_eigen_path(checks, Y, solve)
    previous, changes = None, []
    for j in itertools.count():
        check = checks.check(j)
        path = KrylovPath(check, Y)
        a, info = solve(path)
        coef = path.coefficients_in_q(a)
        if check.invariant:
            changes.append(0.0)
            break
        if previous is not None:
            changes.append(relative_change(coef, previous))
            if changes[-1] <= rtol or _stagnates(changes) or check.full:
                break
        elif check.full:
            changes.append(np.inf)
            break
        previous = coef
        if adaptive and check.eigh_next:
            return _fit_eigen_path(checks, Y, solve)
    return path, a, info, _diagnostics(check.m, check.invariant, changes[-1], rtol, changes)


def _diagnostics(size, exact, change, rtol, changes):
    """The ``diagnostics`` of :func:`fit_krylov_path`."""
    return {
        "size": size,
        "exact": exact,
        "change": change,
        "converged": change <= rtol,
        "stagnated": change > rtol and _stagnates(changes),
    }


def _checkpoints(K, Y, scale, first_check, growth, max_dim, shared):
    """The checks of this schedule: ``shared``'s if it has them, else new (and added)."""
    key = (first_check, growth, max_dim)
    if shared is not None and key in shared:
        return shared[key]
    checks = KrylovCheckpoints(
        K,
        Y,
        scale,
        first_check=first_check,
        growth=growth,
        max_dim=max_dim,
        keep=shared is not None,
    )
    if shared is not None:
        shared[key] = checks
    return checks


def _fit_eigen_path(checks, Y, solve):
    """The path in the full eigenbasis: exact, one ``solve``."""
    path = EigenPath(checks.eigen(), Y)
    a, info = solve(path)
    return path, a, info, _diagnostics(checks.n, True, 0.0, KRYLOV_RTOL, [])


def _stagnates(changes):
    """Three changes below STAGNATION_RTOL in a row, none half the one before."""
    last = changes[-3:]
    return (
        len(last) == 3
        and max(last) <= STAGNATION_RTOL
        and last[1] > last[0] / 2
        and last[2] > last[1] / 2
    )


# ------------------------------------------------------------------ solving


def resolve_learning_rate(learning_rate, solver, rho, s_max):
    """The step size: ``'auto'``, or the user's after the stability check.

    ``s_max`` is the top eigenvalue of the Hessian of the training loss. GD and
    USAM contract every component when ``lr * s_max (1 + rho_usam s_max) < 2``;
    ``'auto'`` takes half that bound (monotone loss); the user guide derives it.
    """
    rho = rho if solver == "usam" else 0.0
    curvature = s_max * (1.0 + rho * s_max)  # the largest filter eigenvalue
    if curvature <= 0:  # K == 0 (or negative definite): nothing to learn
        return 1.0 if learning_rate == "auto" else learning_rate
    if learning_rate == "auto":
        return 1.0 / curvature
    if learning_rate * curvature >= 2.0:
        raise ValueError(
            f"learning_rate={learning_rate!r} makes solver {solver!r} "
            f"diverge: the iteration is stable only for learning_rate < "
            f"{2.0 / curvature:.6g} (2 / s_max{' / (1 + rho s_max)' if rho else ''}, "
            f"s_max = {s_max:.6g}, the top eigenvalue of the Hessian of the training "
            "loss). Use learning_rate='auto'."
        )
    return float(learning_rate)


class PathSettings:
    """The update rule and its budget: ``solver``, ``rho``, ``lr``, ``max_iter``."""

    def __init__(self, solver, rho, lr, max_iter):
        self.solver, self.rho, self.lr, self.max_iter = solver, rho, lr, max_iter


class StoppingCriterion:
    """The no-improvement rule handed to :func:`solve_path` (``tol=None``: never stop).

    :meth:`watch` gives a fresh :class:`Monitor` for each basis size the path
    is tried in; with a validation ``score`` it judges by the score and keeps
    the best iterate, otherwise by the training loss.
    """

    def __init__(self, tol, n_iter_no_change):
        self.tol, self.n_iter_no_change = tol, n_iter_no_change

    def watch(self, score):
        from ._base import StoppingRule

        rule = StoppingRule(self.tol, self.n_iter_no_change, on_validation=score is not None)
        return Monitor(rule, score)

    def needs_every_step(self, score):
        return self.tol is not None or score is not None


class Monitor:
    """Fed every step: validation scores, the stopping rule, the best iterate."""

    def __init__(self, rule, score):
        self.rule = rule
        self.score = score  # score(a): a validation score (higher is better), or None
        self.validation_scores = None if score is None else []
        self.best_a = None
        # without a score the iterate is never looked at: run_steps skips forming it
        self.needs_iterate = score is not None

    def __call__(self, step, a, loss):
        score = None
        if self.score is not None:
            score = self.score(a)
            self.validation_scores.append(score)
        stop = self.rule.update(loss, score)
        if self.rule.is_best:
            self.best_a = a
        return stop


class PathResult:
    """What :func:`solve_path` returns: the kept iterate and the history of the path.

    Attributes
    ----------
    path : KrylovPath
        The Ritz basis the path was computed in.
    dynamics : Dynamics
        The problem in that basis (:func:`replay` re-runs it).
    coef : ndarray of shape (m, k)
        Ritz coordinates of the kept iterate (the best validated one, or the last).
    scales : ndarray
        Perturbation scale of each step up to the kept one.
    losses : list of float
        Training loss at the start of every step run (the first: at zero).
    n_iter : int
        Steps run.
    validation_scores : list of float or None
        Validation score after every step.
    best_validation_score : float or None
    stopped : bool
        Whether the stopping rule ended the path before ``max_iter``.
    diagnostics : dict
        Of the Krylov basis (see :func:`fit_krylov_path`).
    """

    def __init__(self, path, dynamics, coef, scales, losses, monitor, diagnostics):
        self.path, self.dynamics, self.coef = path, dynamics, coef
        self.n_iter = len(losses)
        kept = self.n_iter if monitor.score is None else monitor.rule.best_iteration
        self.scales = np.asarray(scales[:kept], dtype=np.float64)
        initial = dynamics.loss(np.zeros_like(dynamics.z), -dynamics.z)
        self.losses = [initial] + losses[:-1]  # losses[t]: where step t + 1 starts
        self.validation_scores = monitor.validation_scores
        self.best_validation_score = monitor.rule.best_score
        self.stopped = monitor.rule.stopped
        self.diagnostics = diagnostics


def solve_path(problem, settings, stopping):
    """The GD / SAM / USAM path of ``problem`` in a Krylov basis grown until it settles.

    Parameters
    ----------
    problem : object
        Built by a kernel model: ``matrix`` (symmetric), ``start`` (the start
        block), ``scale`` (its top eigenvalue), ``dynamics(path)`` (a
        :class:`Dynamics` in the Ritz basis) and ``validation(path)`` (a score
        of the Ritz coordinates, or None).
    settings : PathSettings
    stopping : StoppingCriterion

    Returns
    -------
    result : PathResult

    Raises
    ------
    Diverged
        If the training loss stops being finite.
    """

    def run(path):
        dynamics = problem.dynamics(path)
        score = problem.validation(path)
        monitor = stopping.watch(score)
        a, scales, losses = run_steps(
            dynamics,
            lr=settings.lr,
            solver=settings.solver,
            rho=settings.rho,
            max_iter=settings.max_iter,
            monitor=monitor if stopping.needs_every_step(score) else None,
        )
        kept = a if score is None else monitor.best_a
        return kept, (dynamics, scales, losses, monitor)

    # the basis needs a multiple of sqrt(max_iter) columns (see the module notes):
    # starting the checks there saves the paths run in smaller bases
    first_check = max(24, int(np.sqrt(settings.max_iter)))
    path, a, (dynamics, scales, losses, monitor), diagnostics = fit_krylov_path(
        problem.matrix,
        problem.start,
        scale=problem.scale,
        solve=run,
        first_check=first_check,
        shared=getattr(problem, "krylov_checkpoints", None),
    )
    return PathResult(path, dynamics, a, scales, losses, monitor, diagnostics)
