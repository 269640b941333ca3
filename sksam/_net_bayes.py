"""Bayesian SAM (bSAM) in the net estimators: its optimizer and its posterior's predictions.

``solver='bsam'`` is :class:`sksam.optim.SAM` with the rule
:class:`~sksam._family.BayesianSAM`, whose ``num_data`` is the number of rows
``fit`` trains on. bSAM's weights are the mean of a Gaussian posterior with
standard deviation ``1 / sqrt(N s)`` per weight; :func:`posterior_draws`
predicts at weights drawn from it (the predictive distribution the paper
averages), and puts the trained weights back exactly.
"""

import numpy as np
import torch
from sklearn.utils import check_random_state

from ._family import BayesianSAM

__all__ = ["bsam_optimizer_params", "posterior_draws"]

#: Routed options of the base SGD that would change bSAM's update (its own
#: momentum and prior precision replace them).
_BASE_OPTIONS_REFUSED = ("optimizer__momentum", "optimizer__weight_decay", "optimizer__nesterov")


def bsam_optimizer_params(estimator, n_samples, seed, routed):
    """The skorch ``optimizer*`` parameters of ``solver='bsam'``, after its checks.

    Parameters
    ----------
    estimator : SAMNetClassifier or SAMNetRegressor
        The estimator (reads ``optimizer``, ``rho``, ``m``, ``precision``).
    n_samples : int
        ``N``, the number of rows ``fit`` trains on.
    seed : int
        Seed of the posterior noise's generator.
    routed : dict
        The estimator's routed skorch parameters.

    Returns
    -------
    params : dict
        ``optimizer=SAM`` with its base optimizer, radius and rule.

    Raises
    ------
    ValueError
        Naming the parameter, when bSAM's update cannot be taken: another
        base optimizer than SGD, SGD's momentum or weight decay, ``m > 1``
        (each chunk would update the posterior) or float16 loss scaling.
    """
    from .optim import SAM

    if estimator.optimizer is not torch.optim.SGD:
        raise ValueError(
            "solver='bsam' takes its own Adam-like step through torch.optim.SGD "
            f"(lr only): it needs optimizer=torch.optim.SGD, got {estimator.optimizer!r}."
        )
    for name in _BASE_OPTIONS_REFUSED:
        if routed.get(name):
            raise ValueError(
                f"solver='bsam' has its own momentum and prior precision; the base SGD "
                f"takes neither: got {name}={routed[name]!r}. Remove it (or use "
                "sksam.optim.SAM with BayesianSAM(betas=..., prior_precision=...))."
            )
    if estimator.m != 1 or estimator.precision == "float16":
        raise ValueError(
            "solver='bsam' updates its posterior once per step from the whole batch's "
            "gradients and is not homogeneous in float16's loss scale: it supports m=1 and "
            f"precision='float32' or 'bfloat16'; got m={estimator.m}, "
            f"precision={estimator.precision!r}."
        )
    return dict(
        optimizer=SAM,
        optimizer__base_optimizer=torch.optim.SGD,
        optimizer__rho=estimator.rho,
        optimizer__solver="sam",
        optimizer__rule=BayesianSAM(num_data=n_samples, seed=seed),
    )


def posterior_draws(optimizer, predict, n_draws, random_state):
    """``predict()`` at ``n_draws`` weights drawn from bSAM's posterior, stacked.

    Parameters
    ----------
    optimizer : sksam.optim.SAM
        The fitted optimizer, whose rule is a fitted :class:`BayesianSAM`.
    predict : callable
        Returns the predictions (an ndarray) at the current weights.
    n_draws : int
        Number of draws, ``>= 1``.
    random_state : int, RandomState instance or None
        Seeds the draws.

    Returns
    -------
    draws : ndarray of shape (n_draws, ...)
        One ``predict()`` per draw of ``w + std * xi``, ``xi ~ N(0, I)``.
    """
    params = optimizer._params()
    std = optimizer.rule.posterior_std()
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        means = [p.detach().clone() for p in params]
        draws = []
        try:
            for _ in range(n_draws):
                for p, mean, sd in zip(params, means, std):
                    xi = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                    p.copy_(mean + sd * xi)
                draws.append(predict())
        finally:  # the trained weights back, bit for bit
            for p, mean in zip(params, means):
                p.copy_(mean)
    return np.stack(draws)
