"""Hand-written references shared by the optimizer and net tests.

Small seeded data and networks, and the SAM gradient computed the slow,
obvious way (autograd on a perturbed copy), against which ``sksam.optim.SAM``
and the skorch estimators are checked.
"""

import copy

import torch
from torch import nn


def flat(tensors):
    """The tensors, detached and concatenated into one vector."""
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def data(n=16, d=5, seed=0, dtype=torch.float64):
    """Seeded Gaussian inputs ``(n, d)`` and targets ``(n, 1)``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    return x, torch.randn(n, 1, generator=gen, dtype=dtype)


def mlp(seed=0, dtype=torch.float64, batch_norm=False, dropout=0.0):
    """A seeded 5-7-1 tanh network, optionally with batch norm and dropout."""
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 7)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(7))
    layers += [nn.Tanh(), nn.Dropout(dropout), nn.Linear(7, 1)]
    return nn.Sequential(*layers).to(dtype)


def sam_gradient(model, loss_fn, rho):
    """``grad L(w + rho g / ||g||)`` by autograd on a copy, ``model`` untouched.

    ``loss_fn(module)`` is the loss of a module with ``model``'s architecture.
    """
    g = torch.autograd.grad(loss_fn(model), list(model.parameters()))
    norm = flat(g).norm()
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        for p, gi in zip(shifted.parameters(), g):
            p.add_(rho * gi / norm)
    return torch.autograd.grad(loss_fn(shifted), list(shifted.parameters()))
