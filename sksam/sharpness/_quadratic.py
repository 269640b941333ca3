"""Exact sharpness of a quadratic loss (kernel regression).

For a quadratic loss the second-order expansion is the loss itself::

    L(w + e) - L(w) = g.e + e.H.e / 2,

so every measure is a function of the Hessian's eigenvalues ``lambda_i`` and
the gradient's coordinates ``g_i`` in the Hessian's eigenbasis, and is
computed exactly:

* the top eigenvalue is ``max_i lambda_i``;
* the trace is ``sum_i lambda_i`` (times the number of outputs, see below);
* the rho-sharpness ``max_{||e|| <= rho} g.e + e.H.e / 2`` is a trust-region
  subproblem, solved through its dual (the S-lemma gives strong duality [1]_)::

      max_{||e|| <= rho} g.e + e.H.e / 2
          = min_{mu >= mu_*} D(mu),
      D(mu) = (1/2) sum_i g_i**2 / (mu - lambda_i) + mu rho**2 / 2,
      mu_* = max(max_i lambda_i, 0).

  ``D`` is convex on ``(mu_*, inf)``; its derivative vanishes at the root of
  the secular equation ``sum_i g_i**2 / (mu - lambda_i)**2 = rho**2``, where
  the maximizer is ``e_i = g_i / (mu - lambda_i)`` on the sphere. If there is
  no root above ``mu_*`` (the *hard case*: ``g`` has no component along the top
  eigenvector and ``||e(mu_*)|| <= rho``, or an interior maximum of a concave
  quadratic when every ``lambda_i < 0``), the minimum is ``D(mu_*)``, where the
  sum skips the terms with ``lambda_i = mu_*`` (their ``g_i`` are zero) [2]_.
  Evaluating the value as ``D`` at the root rather than through ``e`` keeps it
  accurate near the hard case: ``D`` is flat at its minimum, so an error in
  ``mu`` enters the value only to second order. The root is searched in the
  shift ``t = mu - mu_*`` inside a bracket known in closed form, so it is
  found even when it lies far below the scale of the eigenvalues (a fitted
  model's gradient is nearly zero) and when it sits on the bracket's end (a
  single eigenvalue, or a repeated top eigenvalue carrying all the gradient).

Several outputs share one Hessian: the loss summed over ``k`` outputs has the
Hessian ``I_k (x) H`` (``k`` copies of every eigenvalue) and the gradient
``(g_1, ..., g_k)``; the ball ``||e|| <= rho`` is taken over all outputs
jointly.

References
----------
.. [1] A. Ben-Tal and M. Teboulle, "Hidden convexity in some nonconvex
   quadratically constrained quadratic programming", Math. Programming 72,
   1996; S-lemma: I. Polik and T. Terlaky, SIAM Review 49(3), 2007.
.. [2] J. J. More and D. C. Sorensen, "Computing a trust region step",
   SIAM J. Sci. Stat. Comput. 4(3), 1983; A. R. Conn, N. I. M. Gould and
   Ph. L. Toint, *Trust-Region Methods*, SIAM 2000, ch. 7.
"""

import numbers

import numpy as np
from scipy.optimize import brentq


def quadratic_sharpness(
    hessian_eigenvalues,
    gradient,
    *,
    measure="top_eigenvalue",
    rho=None,
    weights=None,
    eigenvectors=None,
    eta=0.0,
):
    """Exact sharpness of ``L(w + e) = L(w) + g.e + e.H.e / 2``.

    Every measure of :data:`~sksam.sharpness.MEASURES` but the logit-normalized
    one (a quadratic loss has no logits) has a closed form here:

    - ``'top_eigenvalue'``: ``max_i lambda_i``;
    - ``'trace'``: ``n_outputs * sum_i lambda_i``;
    - ``'rho'``: ``max_{||e|| <= rho} g.e + e.H.e / 2``, the rho-sharpness
      ``max L(w + e) - L(w)`` of Foret et al. (2021), exact (trust-region
      dual, hard case included; see the module docstring);
    - ``'adaptive_rho'``: the same over ``e = T u``, ``||u|| <= rho``,
      ``T = diag(|w| + eta)``: the trust-region problem of ``T H T`` and
      ``T g``, one block per output (each output has its own weights);
    - ``'average'``: ``E g.e + e.H.e / 2 = rho**2 / 2 * n_outputs * tr H``
      for ``e ~ N(0, rho**2 I)``;
    - ``'adaptive_average'``: ``rho**2 / 2 * sum_i (|w_i| + eta)**2 H_ii``
      (summed over outputs) for ``e ~ N(0, rho**2 T**2)``.

    Parameters
    ----------
    hessian_eigenvalues : array-like of shape (m,)
        Eigenvalues of ``H`` (the Hessian of the mean loss), in the basis
        where ``gradient`` is expressed. Eigenvalues of ``H`` missing from the
        list are taken to be eigenvalues whose eigenvectors carry no gradient
        and are not the largest: they change neither the top eigenvalue nor
        the rho-sharpness, but ``'trace'`` and ``'average'`` need them all,
        and the adaptive measures count them as zero.
    gradient : array-like of shape (m,) or (m, n_outputs)
        ``g`` in the eigenbasis of ``H``; the columns are the outputs, which
        share ``H`` (the full Hessian is ``I_{n_outputs} (x) H``).
    measure : str, default='top_eigenvalue'
        A name of :data:`~sksam.sharpness.MEASURES` but
        ``'adaptive_rho_logitnorm'``.
    rho : float, default=None
        Radius of the ball, or standard deviation of the perturbation,
        ``rho >= 0``; required for every measure but ``'top_eigenvalue'``
        and ``'trace'``.
    weights : array-like of shape (p,) or (p, n_outputs), default=None
        The parameters ``w`` in the parameter coordinates (where ``|w|`` is
        taken elementwise); required by the adaptive measures.
    eigenvectors : array-like of shape (p, m), default=None
        Orthonormal columns ``U`` with ``H = U diag(lambda) U^T`` in the
        parameter coordinates (the missing eigenvalues count as zero); the
        gradient in those coordinates is ``U g``. None: ``H`` is diagonal in
        the parameter coordinates (``U = I``). Used by the adaptive measures.
    eta : float, default=0.0
        Added to ``|w|`` by the adaptive measures, ``eta >= 0``.

    Returns
    -------
    value : float
        The sharpness.

    Raises
    ------
    ValueError
        If the measure is unknown, ``None`` or logit-normalized, the shapes do
        not match, an input is not finite, ``rho`` is missing or negative, or
        an adaptive measure has no ``weights``.

    See Also
    --------
    quadratic_model_sharpness : The same from a Hessian matrix.

    Examples
    --------
    >>> from sksam.sharpness import quadratic_sharpness
    >>> quadratic_sharpness([2.0, 1.0], [0.0, 0.0], measure="rho", rho=1.0)
    1.0
    >>> quadratic_sharpness([2.0, 1.0], [0.0, 0.0], measure="average", rho=1.0)
    1.5
    """
    from ._measure import LOGIT_MEASURES, check_measure

    check_measure(measure)
    if measure is None:
        raise ValueError("measure is None: there is no sharpness to compute.")
    if measure in LOGIT_MEASURES:
        raise ValueError(
            f"measure={measure!r} is defined on a classifier's logits; a quadratic "
            "loss has none: use 'adaptive_rho' for the kernel models."
        )
    eigenvalues, gradient = _check_inputs(hessian_eigenvalues, gradient)
    if measure == "top_eigenvalue":
        return float(eigenvalues.max())
    if measure == "trace":
        return float(gradient.shape[1] * eigenvalues.sum())
    rho = _check_rho(rho, measure)
    if measure == "rho":  # k outputs sharing H: k copies of each eigenvalue, one per column
        return _trust_region_max(np.repeat(eigenvalues, gradient.shape[1]), gradient.ravel(), rho)
    if measure == "average":
        return float(0.5 * rho**2 * gradient.shape[1] * eigenvalues.sum())
    U, scale = _check_adaptive(weights, eigenvectors, eta, eigenvalues, gradient, measure)
    if measure == "adaptive_average":
        diagonal = (U**2) @ eigenvalues  # H_ii
        return float(0.5 * rho**2 * np.sum(scale**2 * diagonal[:, None]))
    return _adaptive_rho_sharpness(eigenvalues, gradient, U, scale, rho)


def quadratic_model_sharpness(hessian, gradient, weights=None, *, measure, rho=None, eta=0.0):
    """Every measure of a quadratic model from its Hessian, gradient and weights.

    The entry point for models whose loss is quadratic in their parameters
    ``w`` (kernel regression in any coordinates, linear models): ``H`` is the
    Hessian of the mean loss, shared by the outputs, ``g`` its gradient at
    ``w``. Decomposes ``H`` once and answers with
    :func:`quadratic_sharpness`.

    Parameters
    ----------
    hessian : array-like of shape (p, p)
        The symmetric Hessian ``H`` of the mean loss of one output.
    gradient : array-like of shape (p,) or (p, n_outputs)
        ``g`` at ``w``, one column per output.
    weights : array-like of shape (p,) or (p, n_outputs), default=None
        The parameters ``w``; required by the adaptive measures.
    measure : str
        A name of :data:`~sksam.sharpness.MEASURES` but
        ``'adaptive_rho_logitnorm'``.
    rho : float, default=None
        Radius, or standard deviation; required for every measure but
        ``'top_eigenvalue'`` and ``'trace'``.
    eta : float, default=0.0
        Added to ``|w|`` by the adaptive measures.

    Returns
    -------
    value : float
        The sharpness.

    Examples
    --------
    >>> import numpy as np
    >>> from sksam.sharpness import quadratic_model_sharpness
    >>> H = np.array([[2.0, 0.0], [0.0, 1.0]])
    >>> w = np.array([0.5, 2.0])
    >>> quadratic_model_sharpness(H, np.zeros(2), w, measure="adaptive_rho", rho=1.0)
    2.0
    """
    hessian = np.asarray(hessian, dtype=np.float64)
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1] or hessian.size == 0:
        raise ValueError(f"hessian must be a non-empty square matrix, got shape {hessian.shape}.")
    if not np.isfinite(hessian).all():
        raise ValueError("hessian must be finite.")
    gradient = np.asarray(gradient, dtype=np.float64)
    if gradient.shape[0] != hessian.shape[0]:
        raise ValueError(
            f"gradient must have {hessian.shape[0]} rows to match hessian, "
            f"got shape {gradient.shape}."
        )
    eigenvalues, U = np.linalg.eigh((hessian + hessian.T) / 2)
    return quadratic_sharpness(
        eigenvalues,
        U.T @ gradient,
        measure=measure,
        rho=rho,
        weights=weights,
        eigenvectors=U,
        eta=eta,
    )


def _check_adaptive(weights, eigenvectors, eta, eigenvalues, gradient, measure):
    """``U`` (p, m) and the scales ``|w| + eta`` (p, n_outputs) of an adaptive measure."""
    if weights is None:
        raise ValueError(f"measure={measure!r} needs the weights w (it scales by |w| + eta).")
    if not (isinstance(eta, numbers.Real) and np.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}.")
    m, k = gradient.shape
    U = np.eye(m) if eigenvectors is None else np.asarray(eigenvectors, dtype=np.float64)
    if U.ndim != 2 or U.shape[1] != m or U.shape[0] < m:
        raise ValueError(
            f"eigenvectors must have shape (p, {m}) with p >= {m}, got shape {U.shape}."
        )
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 1:
        weights = weights[:, None]
    if weights.shape != (U.shape[0], k):
        raise ValueError(
            f"weights must have shape ({U.shape[0]},) or ({U.shape[0]}, {k}) to match "
            f"the eigenvectors and the gradient, got shape {weights.shape}."
        )
    if not (np.isfinite(U).all() and np.isfinite(weights).all()):
        raise ValueError("eigenvectors and weights must be finite.")
    return U, np.abs(weights) + eta


def _adaptive_rho_sharpness(eigenvalues, gradient, U, scale, rho):
    """The trust-region problem of ``diag(T_j H T_j)`` and ``(T_j g_j)`` over outputs ``j``.

    With ``H = U diag(lambda) U^T`` (``U`` of shape (p, m)) and ``T U = Q R``
    (thin QR), ``T H T = Q (R diag(lambda) R^T) Q^T``: its eigenpairs come
    from the ``m x m`` matrix in the middle, in ``O(p m**2)`` per output
    rather than ``O(p**3)``. ``T g = T U g_eig`` lies in the span of ``Q``;
    the complement has eigenvalue 0 and carries no gradient, so it changes
    nothing (the dual already keeps ``mu >= 0``).
    """
    lam, coordinates = [], []
    for j in range(gradient.shape[1]):
        Q, R = np.linalg.qr(scale[:, j, None] * U)
        block_lam, W = np.linalg.eigh((R * eigenvalues) @ R.T)
        lam.append(block_lam)
        coordinates.append(W.T @ (R @ gradient[:, j]))  # (Q W)^T T U g = W^T R g
    return _trust_region_max(np.concatenate(lam), np.concatenate(coordinates), rho)


def _check_inputs(eigenvalues, gradient):
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    gradient = np.asarray(gradient, dtype=np.float64)
    if eigenvalues.ndim != 1 or eigenvalues.size == 0:
        raise ValueError(
            f"hessian_eigenvalues must be a non-empty 1d array, got shape {eigenvalues.shape}."
        )
    if gradient.ndim == 1:
        gradient = gradient[:, None]
    if gradient.ndim != 2 or gradient.shape[0] != eigenvalues.shape[0]:
        raise ValueError(
            f"gradient must have shape ({eigenvalues.shape[0]},) or "
            f"({eigenvalues.shape[0]}, n_outputs) to match hessian_eigenvalues, "
            f"got shape {gradient.shape}."
        )
    if not (np.isfinite(eigenvalues).all() and np.isfinite(gradient).all()):
        raise ValueError("hessian_eigenvalues and gradient must be finite.")
    return eigenvalues, gradient


def _check_rho(rho, measure):
    if rho is None:
        raise ValueError(f"measure={measure!r} needs the radius rho.")
    if not isinstance(rho, numbers.Real) or not np.isfinite(rho) or rho < 0:
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}.")
    return float(rho)


def _trust_region_max(lam, g, rho):
    """``max_{||e|| <= rho} g.e + sum_i lam_i e_i**2 / 2`` (``H = diag(lam)``).

    The trust-region dual of the module docstring, solved in the shift
    ``t = mu - mu_*`` rather than in ``mu``: with ``d_i = mu_* - lam_i >= 0``
    (exactly ``0`` on the top eigenvalues when ``mu_* = max lam``) the gaps
    ``mu - lam_i = t + d_i`` are computed without cancellation, so a root
    ``t`` far below the scale of the eigenvalues (a nearly zero gradient, a
    nearly hard case) is found to full relative precision instead of being
    rounded into ``mu_*``.

    The root of the secular equation ``phi(t) = sum_i g_i**2 / (t + d_i)**2
    = rho**2`` is bracketed in closed form: ``||g|| / (t + max d) <=
    sqrt(phi(t)) <= ||g|| / t`` give ``phi >= rho**2`` at
    ``t_lo = max(0, ||g|| / rho - max d)`` and ``phi <= rho**2`` at
    ``t_hi = ||g|| / rho``. Either end may be the root itself (a single
    eigenvalue, or all the gradient on the top one: ``t_lo == t_hi``), and
    rounding may put ``phi`` a hair on the wrong side there, so the ends are
    tested before :func:`scipy.optimize.brentq` is asked for a sign change.
    """
    if rho == 0.0:
        return 0.0
    mu_star = max(lam.max(), 0.0)
    d = mu_star - lam  # exactly 0 on the top eigenvalues when mu_* = lam_max
    # g = scale * h with max |h| = 1: squares of tiny (or huge) gradients
    # would underflow (overflow); the scale is applied outside every sum
    scale = np.abs(g).max()
    if scale == 0.0:  # g = 0: along the top eigenvector (e = 0 if every lam <= 0)
        return float(0.5 * mu_star * rho**2)
    h2 = (g / scale) ** 2
    carries = h2 > 0
    h2, d = h2[carries], d[carries]

    def dual(t):  # D(mu_* + t); the terms without gradient vanish
        return 0.5 * scale * (scale * np.sum(h2 / (t + d))) + 0.5 * (mu_star + t) * rho**2

    def step_norm(t):  # ||e(mu_* + t)||; t + d_i = 0 (with g_i != 0) gives inf
        with np.errstate(divide="ignore", over="ignore"):
            return scale * np.sqrt(np.sum(h2 / (t + d) ** 2))

    if np.all(d > 0) and step_norm(0.0) <= rho:
        # hard case (g orthogonal to the top eigenspace, mu_* = lam_max), or the
        # interior maximum of a concave quadratic (mu_* = 0): no root above mu_*
        return float(dual(0.0))

    def excess(t):  # 1/rho - 1/||e(t)||: decreasing in t, nearly linear
        return 1.0 / rho - 1.0 / step_norm(t)

    t_hi = scale * np.sqrt(np.sum(h2)) / rho
    t_lo = max(0.0, t_hi - d.max())
    if t_lo == t_hi or excess(t_hi) >= 0.0:  # the root is t_hi (up to rounding)
        return float(dual(t_hi))
    if excess(t_lo) <= 0.0:  # the root is t_lo (up to rounding); then t_lo > 0
        return float(dual(t_lo))
    root = brentq(excess, t_lo, t_hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    return float(dual(root))
