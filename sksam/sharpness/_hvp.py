"""Sharpness of a torch loss by Hessian-vector products.

Being written for issue 3 (SAMTwoLayerRegressor).
"""


def top_hessian_eigenvalue(loss_fn, params, *, max_iter=100, tol=1e-6, random_state=None):
    """Largest signed eigenvalue of the Hessian of ``loss_fn()`` w.r.t. ``params``."""
    raise NotImplementedError("in progress (issue 3)")


def hessian_trace(loss_fn, params, *, n_probes=100, random_state=None):
    """Hutchinson estimate of the Hessian trace with seeded Rademacher probes."""
    raise NotImplementedError("in progress (issue 3)")


def rho_sharpness(loss_fn, params, rho, *, max_iter=20, random_state=None):
    """``max_{||e|| <= rho} loss(w + e) - loss(w)`` by projected gradient ascent."""
    raise NotImplementedError("in progress (issue 3)")


def torch_sharpness(loss_fn, params, measure, *, rho=None, module=None, random_state=None):
    """Dispatch ``measure`` to the functions above; eval mode of ``module`` restored."""
    raise NotImplementedError("in progress (issue 3)")
