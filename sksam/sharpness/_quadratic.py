"""Exact sharpness of a quadratic loss (kernel regression).

Being written for issue 2 (SAMKernelRegressor).
"""


def quadratic_sharpness(hessian_eigenvalues, gradient, *, measure="top_eigenvalue", rho=None):
    """Exact sharpness of ``L(w + e) = L(w) + g.e + e.H.e / 2``.

    Parameters
    ----------
    hessian_eigenvalues : ndarray of shape (m,)
        Eigenvalues of ``H`` (the Hessian of the mean loss), in the basis
        where ``gradient`` is expressed.
    gradient : ndarray of shape (m,) or (m, n_outputs)
        ``g`` in the eigenbasis of ``H``; several outputs share ``H``.
    measure : {'top_eigenvalue', 'trace', 'rho'}
    rho : float, required for ``measure='rho'``

    Returns
    -------
    value : float
    """
    raise NotImplementedError("in progress (issue 2)")
