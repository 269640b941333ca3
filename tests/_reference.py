"""Hand-written references shared by the optimizer and net tests.

Small seeded data and networks, and the SAM gradient computed the slow,
obvious way (autograd on a perturbed copy), against which ``sksam.optim.SAM``
and the skorch estimators are checked.
"""

import copy

import numpy as np
import torch
from torch import nn


def flat(tensors):
    """The tensors, detached and concatenated into one vector."""
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def net_weights(estimator):
    """A fitted sksam net estimator's weights, as one vector."""
    return flat(estimator.net_.module_.parameters())


def torch_seed(random_state):
    """The torch seed a sksam net estimator draws from an integer ``random_state``."""
    return np.random.RandomState(random_state).randint(np.iinfo(np.int32).max)


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


# -- the cheap variants, written the slow, obvious way on flat vectors --------


def flat_grad(model, loss_fn, w):
    """``grad L(w)`` as a flat vector, for flat weights ``w`` (``model`` untouched)."""
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(w, shifted.parameters())
    return flat(torch.autograd.grad(loss_fn(shifted), list(shifted.parameters())))


def variant_path(model, loss_fn, steps, lr, rho, rule, **options):
    """Flat weights after each of ``steps`` SGD steps under a cheap SAM ``rule``.

    ``rule``: ``'sam'`` (every step), ``'every_k'``, ``'looksam'``, ``'rst'``,
    ``'aesam'`` or ``'msam'`` (momentum ``options['momentum']``); the
    options are the rule's parameters. Returns the list of flat weights and
    the number of gradients taken.
    """
    w = flat(model.parameters()).clone()
    path, grads_taken, g_v, v = [], 0, None, None
    mean = var = 0.0
    gen = torch.Generator().manual_seed(options.get("seed", 0))
    for t in range(steps):
        if rule == "msam":
            e = 0 * w if v is None else -rho * v / v.norm()
            g = flat_grad(model, loss_fn, w + e)
            grads_taken += 1
            v = g.clone() if v is None else options["momentum"] * v + g
            w = w - lr * v
            path.append(w.clone())
            continue
        g = flat_grad(model, loss_fn, w)
        grads_taken += 1
        if rule == "sam":
            take = True
        elif rule in ("every_k", "looksam"):
            take = t % options["k"] == 0
        elif rule == "rst":
            take = bool(torch.rand((), generator=gen) < options["p"])
        elif rule == "aesam":
            s, d = float(g @ g), options["delta"]
            mean = d * mean + (1 - d) * s
            var = d * var + (1 - d) * (s - mean) ** 2
            take = s >= mean + options["c"] * var**0.5
        if take:
            g_s = flat_grad(model, loss_fn, w + rho * g / g.norm())
            grads_taken += 1
            if rule == "looksam":
                g_v = g_s - (g_s @ g) / (g @ g) * g
            d = g_s
        elif rule == "looksam" and g_v is not None:
            d = g + options["alpha"] * g.norm() / g_v.norm() * g_v
        else:
            d = g
        w = w - lr * d
        path.append(w.clone())
    return path, grads_taken
