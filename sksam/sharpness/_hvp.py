"""Sharpness of a torch loss by Hessian-vector products.

Every function here takes the ``loss_fn`` and ``params`` of
:data:`LOSS_FN_PARAMS_DOC`: ``loss_fn`` reads the *current* values of the
tensors ``w`` of ``params`` (so perturbing them in place changes what it
returns), the Hessian of a summed loss is ``n`` times the one measured here,
and ``params`` are one flat vector in the order given.

Hessian-vector products ``H v`` use double back-propagation
(Pearlmutter, 1994): the gradient ``g(w)`` is built once with
``torch.autograd.grad(..., create_graph=True)`` and ``H v`` is the gradient of
``g . v``. Only :func:`torch.autograd.grad` is used, so the ``.grad``
attributes of ``params`` are never read nor written (no graph-carrying
gradients are left behind, unlike ``loss.backward(create_graph=True)``).

Random numbers (Lanczos start vector, Rademacher probes, and the starts and
perturbations of :mod:`sksam.sharpness._perturbation`) come from a numpy generator built by
:func:`sklearn.utils.check_random_state`, so a fixed ``random_state`` gives the
same answer on every device. Vectors that are kept (the Lanczos basis) are held
in float64 on the parameters' device; the products ``H v`` themselves run in
the parameters' dtype.

References
----------
.. [1] B. A. Pearlmutter, "Fast exact multiplication by the Hessian",
   Neural Computation 6(1), 1994.
.. [2] C. Lanczos, "An iteration method for the solution of the eigenvalue
   problem of linear differential and integral operators", J. Res. Nat. Bur.
   Standards 45, 1950; Y. Saad, *Numerical Methods for Large Eigenvalue
   Problems*, 2nd ed., SIAM 2011, ch. 6.
.. [3] M. F. Hutchinson, "A stochastic estimator of the trace of the influence
   matrix for Laplacian smoothing splines", Comm. Stat. Simul. Comput. 18(3),
   1989.
"""

import contextlib

import numpy as np
from sklearn.utils import check_random_state

#: Methods accepted by :func:`top_hessian_eigenvalue`.
EIGEN_METHODS = ("lanczos", "power")

#: The ``loss_fn`` and ``params`` entries of every function of a torch loss.
LOSS_FN_PARAMS_DOC = """loss_fn : callable
        ``loss_fn()`` returns the **mean** training loss as a scalar tensor,
        computed from the current values of ``params``.
    params : list of torch.Tensor
        Parameters with ``requires_grad=True`` (each counted once);
        {fate}."""

#: The loss the examples measure: ``w^T diag(1, 4, 2) w / 2`` at ``w = 0``.
DIAGONAL_LOSS_EXAMPLE = """>>> import torch
    >>> w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    >>> h = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)
    >>> loss_fn = lambda: 0.5 * (h * w**2).sum()  # Hessian diag(1, 4, 2)"""


def shared_doc(fate):
    """Fill a docstring's ``{loss_fn_params}`` (with ``fate``) and ``{diagonal_loss_example}``."""

    def substitute(function):
        if function.__doc__ is not None:  # None under python -OO
            doc = function.__doc__.replace("{diagonal_loss_example}", DIAGONAL_LOSS_EXAMPLE)
            function.__doc__ = doc.replace("{loss_fn_params}", LOSS_FN_PARAMS_DOC.format(fate=fate))
        return function

    return substitute


# --------------------------------------------------------------------------
# flat vectors and Hessian-vector products
# --------------------------------------------------------------------------


def check_params(params):
    """``params`` as a list, each tensor once, each requiring gradients.

    A tensor listed twice (``[w, w]``, or a tied weight reached through two
    modules) is one set of coordinates: counted twice, the flat vector would
    hold it twice and every Hessian-vector product would double (the top
    eigenvalue of ``[w, w]`` would be twice that of ``[w]``). Later copies
    are dropped, keeping the first one's place in the order.
    """
    params = list({id(p): p for p in params}.values())
    if not params:
        raise ValueError("params is empty: there is nothing to take a Hessian of.")
    for p in params:
        if not p.requires_grad:
            raise ValueError(
                "every tensor in params must have requires_grad=True; got one of "
                f"shape {tuple(p.shape)} without it."
            )
    return params


def split_vector(vector, params):
    """Cut a flat float64 vector into tensors shaped (and typed) like ``params``."""
    pieces, start = [], 0
    for p in params:
        stop = start + p.numel()
        pieces.append(vector[start:stop].reshape(p.shape).to(p.dtype))
        start = stop
    return pieces


def flatten_like(tensors, params):
    """One float64 vector from per-parameter tensors (``None`` counts as zeros)."""
    import torch

    return torch.cat(
        [
            (t if t is not None else p.new_zeros(p.shape)).reshape(-1).double()
            for t, p in zip(tensors, params)
        ]
    )


def random_vector(rng, n, like, *, rademacher=False):
    """A seeded float64 vector of length ``n`` on ``like``'s device."""
    import torch

    if rademacher:
        values = rng.randint(0, 2, size=n).astype(np.float64) * 2.0 - 1.0
    else:
        values = rng.standard_normal(n)
    return torch.as_tensor(values, dtype=torch.float64, device=like.device)


class HessianOperator:
    """``v -> H v`` for the Hessian of ``loss_fn()`` at the current ``params``.

    The gradient graph is built once (the parameters do not move while the
    operator is used), and every product back-propagates through it again.
    ``params`` are checked by :func:`check_params` first.
    """

    def __init__(self, loss_fn, params):
        import torch

        self.params = params = check_params(params)
        self.size = sum(p.numel() for p in params)
        with torch.enable_grad():
            loss = loss_fn()
            check_loss(loss)
            self.grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)

    def __call__(self, vector):
        import torch

        pairs = [(g, v) for g, v in zip(self.grads, split_vector(vector, self.params))]
        used = [i for i, (g, _) in enumerate(pairs) if g is not None and g.requires_grad]
        if not used:  # the loss is (at most) linear in params: H = 0
            return torch.zeros_like(vector)
        with torch.enable_grad():
            # H v as the gradient of the scalar g . v: the same products as
            # passing v as grad_outputs, but torch's check of tensor
            # grad_outputs imports sympy (~0.5 s) the first time it runs.
            g_dot_v = sum((pairs[i][0] * pairs[i][1]).sum() for i in used)
            hv = torch.autograd.grad(g_dot_v, self.params, retain_graph=True, allow_unused=True)
        return flatten_like(hv, self.params)

    def probe(self, rng, *, rademacher=False):
        """A seeded :func:`random_vector` of the size of ``params``."""
        return random_vector(rng, self.size, self.params[0], rademacher=rademacher)


def check_loss(loss):
    import torch

    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(
            "loss_fn must return the mean loss as a scalar tensor; got "
            f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}."
        )
    if not torch.isfinite(loss).item():
        raise ValueError(f"loss_fn returned a non-finite loss ({loss.item()}).")


# --------------------------------------------------------------------------
# top eigenvalue
# --------------------------------------------------------------------------


@shared_doc("not modified")
def top_hessian_eigenvalue(
    loss_fn, params, *, max_iter=100, tol=1e-6, random_state=None, method="lanczos"
):
    r"""Largest signed eigenvalue of the Hessian of the mean loss.

    Computes :math:`\lambda_{\max}(\nabla^2 L(w))`, the largest *algebraic*
    eigenvalue (a negative number away from a minimum if all curvature is
    negative; never the eigenvalue of largest magnitude with its sign lost),
    of the Hessian of the mean training loss ``L = loss_fn()`` with respect to
    ``params``.

    ``method='lanczos'`` (default) runs the Lanczos iteration with full
    reorthogonalization (Lanczos, 1950; Saad, 2011) from a seeded Gaussian
    start vector: after ``k`` products ``H q`` the largest eigenvalue
    :math:`\theta` of the ``k x k`` tridiagonal matrix ``T_k`` is the estimate,
    and the iteration stops when
    the residual bound :math:`\|H y - \theta y\| = \beta_k |s_k|` falls below
    ``tol * |theta|`` (``y`` the Ritz vector, ``s_k`` the last entry of the
    eigenvector of ``T_k``), or when the Krylov space is exhausted. The
    eigenvalue error is then at most the residual, and in practice of the
    order of its square over the spectral gap. Memory: one float64 vector of
    the size of ``params`` per step taken (at most ``max_iter + 1``; for
    models with many millions of parameters, prefer ``method='power'`` or a
    smaller ``max_iter``).

    ``method='power'`` runs power iteration on the shifted operator
    ``H + sigma I`` (the shift ``sigma`` is an estimate of the spectral radius,
    found by a first power iteration on ``H``), whose dominant eigenvalue is
    the largest algebraic one of ``H``; it keeps only two vectors, for
    models too large for a Lanczos basis, and converges more slowly.

    Parameters
    ----------
    {loss_fn_params}
    max_iter : int, default=100
        Maximum number of Hessian-vector products (Lanczos steps; for
        ``'power'``, per power-iteration phase).
    tol : float, default=1e-6
        Relative tolerance: on the Lanczos residual bound, or on the change of
        the power-iteration estimate.
    random_state : int, RandomState instance or None, default=None
        Seeds the start vector.
    method : {'lanczos', 'power'}, default='lanczos'
        See above.

    Returns
    -------
    eigenvalue : float
        The estimate of the largest algebraic eigenvalue of the Hessian of the
        mean loss. Lanczos estimates increase monotonically towards it from
        below.

    Notes
    -----
    Callers that hold a module with dropout or batch normalization should go
    through :func:`~sksam.sharpness.torch_sharpness`, which evaluates in eval
    mode.

    Examples
    --------
    {diagonal_loss_example}
    >>> round(top_hessian_eigenvalue(loss_fn, [w], random_state=0), 6)
    4.0
    """
    if method not in EIGEN_METHODS:
        raise ValueError(
            f"Unknown method {method!r}; expected one of {', '.join(map(repr, EIGEN_METHODS))}."
        )
    check_iterations(max_iter, tol)
    hvp = HessianOperator(loss_fn, params)
    start = hvp.probe(check_random_state(random_state))
    if method == "lanczos":  # full reorthogonalization; the largest Ritz value
        alphas, betas = lanczos(hvp, start, max_iter, tol, k=1)
        return float(ritz_values(alphas, betas, k=1)[0][0])
    # Power iteration on H + sigma I with sigma >= |lambda|_max: the shift makes
    # every eigenvalue non-negative, so the dominant one is lambda_max(H) + sigma,
    # the largest *algebraic* one. (10% above the magnitude estimate, which a
    # Rayleigh quotient gives from below)
    shift = 1.1 * abs(_power_iteration(hvp, start, max_iter, tol, shift=0.0))
    return float(_power_iteration(hvp, start, max_iter, tol, shift=shift) - shift)


def check_count(name, value, *, minimum=1):
    """Raise a ``ValueError`` unless ``value`` is an integer ``>= minimum`` (1 or 0)."""
    if not (isinstance(value, (int, np.integer)) and value >= minimum):
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} integer; got {value!r}.")


def check_iterations(max_iter, tol):
    check_count("max_iter", max_iter)
    if not tol >= 0:
        raise ValueError(f"tol must be non-negative; got {tol!r}.")


def lanczos(hvp, start, max_iter, tol, *, k=1):
    """The tridiagonal ``T`` (``alphas``, ``betas``) of Lanczos from ``start``.

    Full reorthogonalization, twice per step. Stops after ``max_iter``
    steps, when the Krylov space is exhausted (``beta`` negligible against
    ``||T||``: then every Ritz value is an eigenvalue), or, with ``tol``
    not None, when the residual bounds ``beta_k |s_k|`` of the ``k`` largest
    Ritz values all fall below ``tol`` times their magnitude. ``tol=None``
    runs every step (the quadrature of :func:`hessian_spectrum` needs them).
    ``betas`` has one entry per step: the last one is the residual norm.
    """
    import torch

    n = start.numel()
    n_steps = min(max_iter, n)
    # the basis grows by doubling: most runs stop after a few dozen steps,
    # and a large model should not pay for max_iter vectors up front
    basis = start.new_zeros((min(n_steps + 1, 16), n))
    basis[0] = start / torch.linalg.vector_norm(start)
    alphas, betas = [], []
    for j in range(n_steps):
        w = hvp(basis[j])
        alpha = torch.dot(basis[j], w)
        w = w - alpha * basis[j]
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        # full reorthogonalization, twice ("twice is enough", Parlett 1980):
        # cheap at small k, and it keeps spurious copies of theta away
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = torch.linalg.vector_norm(w)
        alphas.append(alpha.item())
        betas.append(beta.item())
        # ||T_k|| estimates ||H||: a beta that small against it means the
        # Krylov space is invariant, and the Ritz values are then exact
        norm_estimate = max(max(map(abs, alphas)), max(betas[:-1], default=0.0))
        if betas[-1] <= 1e-12 * norm_estimate:
            break
        if tol is not None and len(alphas) >= k:
            theta, residual = ritz_values(alphas, betas, k=k)
            floor = np.finfo(np.float64).tiny
            if np.all(residual <= tol * np.maximum(np.abs(theta), floor)):
                break
        if j + 1 == basis.shape[0]:
            basis = torch.cat([basis, torch.zeros_like(basis)])[: n_steps + 1]
        basis[j + 1] = w / beta
    return alphas, betas


def tridiagonal_eigh(alphas, betas):
    """Eigenvalues (ascending) and eigenvectors of the ``T`` of :func:`lanczos`."""
    from scipy.linalg import eigh_tridiagonal

    if len(alphas) == 1:  # T = [alpha]
        return np.array(alphas), np.ones((1, 1))
    return eigh_tridiagonal(np.array(alphas), np.array(betas[:-1]))


def ritz_values(alphas, betas, *, k=1):
    """The ``k`` largest Ritz values of ``T`` (descending) and their residual bounds."""
    values, vectors = tridiagonal_eigh(alphas, betas)
    top = np.arange(len(values) - 1, max(len(values) - 1 - k, -1), -1)
    return values[top], np.abs(betas[-1] * vectors[-1, top])


def _power_iteration(hvp, start, max_iter, tol, *, shift):
    """Rayleigh quotient of the dominant eigenvector of ``H + shift I``."""
    import torch

    v = start / torch.linalg.vector_norm(start)
    value = None
    for _ in range(max_iter):
        w = hvp(v) + shift * v
        new_value = torch.dot(v, w).item()
        norm = torch.linalg.vector_norm(w)
        if norm.item() == 0.0:  # H + shift I = 0 on this vector
            return 0.0
        v = w / norm
        if value is not None and abs(new_value - value) <= tol * max(abs(new_value), 1e-300):
            return new_value
        value = new_value
    return value


# --------------------------------------------------------------------------
# trace
# --------------------------------------------------------------------------


@shared_doc("not modified")
def hessian_trace(loss_fn, params, *, n_probes=100, random_state=None, return_std=False):
    r"""Hutchinson estimate of the trace of the Hessian of the mean loss.

    .. math::

        \operatorname{tr} H \approx \frac{1}{m} \sum_{k=1}^m z_k^\top H z_k,

    with ``m = n_probes`` independent Rademacher probes ``z_k`` (entries
    +1 or -1 with probability 1/2 each, seeded by ``random_state``;
    Hutchinson, 1989). The estimate is unbiased; its variance is
    :math:`\frac{2}{m}\sum_{i \ne j} H_{ij}^2` (zero for a diagonal Hessian).

    Parameters
    ----------
    {loss_fn_params}
    n_probes : int, default=100
        Number of probes ``m`` (one Hessian-vector product each).
    random_state : int, RandomState instance or None, default=None
        Seeds the probes.
    return_std : bool, default=False
        Also return the standard error of the estimate, the sample standard
        deviation of the ``m`` terms divided by ``sqrt(m)``.

    Returns
    -------
    trace : float
        The estimate.
    std : float
        Its standard error; only if ``return_std`` is true (``nan`` when
        ``n_probes == 1``).

    Examples
    --------
    {diagonal_loss_example}
    >>> hessian_trace(loss_fn, [w], n_probes=10, random_state=0)  # exact: diagonal
    7.0
    """
    check_count("n_probes", n_probes)
    terms = trace_terms(loss_fn, params, n_probes=n_probes, random_state=random_state)
    trace = float(terms.mean())
    if not return_std:
        return trace
    return trace, standard_error(terms)


def trace_terms(loss_fn, params, *, n_probes=100, random_state=None):
    """The ``n_probes`` Hutchinson terms ``z_k^T H z_k`` (their mean estimates the trace)."""
    import torch

    hvp = HessianOperator(loss_fn, params)
    rng = check_random_state(random_state)
    terms = []
    for _ in range(n_probes):
        z = hvp.probe(rng, rademacher=True)
        terms.append(torch.dot(z, hvp(z)))
    return torch.stack(terms).cpu().numpy()


def standard_error(terms):
    """The standard error of the mean of ``terms`` (``nan`` for a single term)."""
    return float(np.std(terms, ddof=1) / np.sqrt(len(terms))) if len(terms) > 1 else float("nan")


# --------------------------------------------------------------------------
# loss and gradient at moved parameters (for the perturbation measures)
# --------------------------------------------------------------------------


def loss_and_gradient(loss_fn, params):
    """``L`` (a float) and ``grad L`` (flat float64) at ``params``."""
    import torch

    with torch.enable_grad():
        loss = loss_fn()
        check_loss(loss)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.item(), flatten_like(grads, params)


# --------------------------------------------------------------------------
# eval mode for the estimators
# --------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(module):
    """Put ``module`` (and every submodule) in eval mode; restore each one's flag."""
    if module is None:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
