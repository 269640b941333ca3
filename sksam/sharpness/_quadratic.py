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


def quadratic_sharpness(hessian_eigenvalues, gradient, *, measure="top_eigenvalue", rho=None):
    """Exact sharpness of ``L(w + e) = L(w) + g.e + e.H.e / 2``.

    Parameters
    ----------
    hessian_eigenvalues : array-like of shape (m,)
        Eigenvalues of ``H`` (the Hessian of the mean loss), in the basis
        where ``gradient`` is expressed. Eigenvalues of ``H`` missing from the
        list are taken to be eigenvalues whose eigenvectors carry no gradient
        and are not the largest (they change none of the measures but the
        trace).
    gradient : array-like of shape (m,) or (m, n_outputs)
        ``g`` in the eigenbasis of ``H``; the columns are the outputs, which
        share ``H`` (the full Hessian is ``I_{n_outputs} (x) H``).
    measure : {'top_eigenvalue', 'trace', 'rho'}, default='top_eigenvalue'
        ``'top_eigenvalue'``: ``max_i lambda_i``. ``'trace'``:
        ``n_outputs * sum_i lambda_i``. ``'rho'``:
        ``max_{||e|| <= rho} g.e + e.H.e / 2``, the rho-sharpness
        ``max L(w + e) - L(w)`` of Foret et al. (2021), exact for a quadratic
        (trust-region dual, hard case included; see the module docstring).
    rho : float, default=None
        Radius of the ball, ``rho >= 0``; required for ``measure='rho'``.

    Returns
    -------
    value : float
        The sharpness.

    Raises
    ------
    ValueError
        If the measure is unknown or ``None``, the shapes do not match, an
        input is not finite, or ``rho`` is missing or negative for
        ``measure='rho'``.

    Examples
    --------
    >>> from sksam.sharpness import quadratic_sharpness
    >>> quadratic_sharpness([2.0, 1.0], [0.0, 0.0], measure="rho", rho=1.0)
    1.0
    """
    from . import check_measure

    check_measure(measure)
    if measure is None:
        raise ValueError("measure is None: there is no sharpness to compute.")
    eigenvalues, gradient = _check_inputs(hessian_eigenvalues, gradient)
    if measure == "top_eigenvalue":
        return float(eigenvalues.max())
    if measure == "trace":
        return float(gradient.shape[1] * eigenvalues.sum())
    return _rho_sharpness(eigenvalues, gradient, _check_rho(rho))


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


def _check_rho(rho):
    if rho is None:
        raise ValueError("measure='rho' needs the radius rho.")
    if not isinstance(rho, numbers.Real) or not np.isfinite(rho) or rho < 0:
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}.")
    return float(rho)


def _rho_sharpness(eigenvalues, gradient, rho):
    """``max_{||e|| <= rho} g.e + e.H.e / 2`` for ``k`` outputs sharing ``H``."""
    # k outputs sharing H: k copies of each eigenvalue, one per gradient column.
    return _trust_region_max(np.repeat(eigenvalues, gradient.shape[1]), gradient.ravel(), rho)


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
    g2 = g**2
    carries = g2 > 0
    g2, d = g2[carries], d[carries]

    def dual(t):  # D(mu_* + t); the terms without gradient vanish
        return 0.5 * np.sum(g2 / (t + d)) + 0.5 * (mu_star + t) * rho**2

    if g2.size == 0:  # g = 0: along the top eigenvector (e = 0 if every lam <= 0)
        return float(0.5 * mu_star * rho**2)
    if np.all(d > 0) and np.sum(g2 / d**2) <= rho**2:
        # hard case (g orthogonal to the top eigenspace, mu_* = lam_max), or the
        # interior maximum of a concave quadratic (mu_* = 0): no root above mu_*
        return float(dual(0.0))

    def excess(t):  # 1/rho - 1/||e(t)||: decreasing in t, nearly linear
        with np.errstate(divide="ignore"):  # t + d_i = 0: ||e|| = inf, excess = 1/rho
            return 1.0 / rho - 1.0 / np.sqrt(np.sum(g2 / (t + d) ** 2))

    t_hi = np.sqrt(np.sum(g2)) / rho
    t_lo = max(0.0, t_hi - d.max())
    if t_lo == t_hi or excess(t_hi) >= 0.0:  # the root is t_hi (up to rounding)
        return float(dual(t_hi))
    if excess(t_lo) <= 0.0:  # the root is t_lo (up to rounding); then t_lo > 0
        return float(dual(t_lo))
    root = brentq(excess, t_lo, t_hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    return float(dual(root))
