r"""The one-hidden-layer network, its losses and their gradient, written out by hand.

:math:`f(X) = \sigma(X W + b)\, a + c`, fitted to a (weighted) mean loss of
its outputs: the squared error (regression) or the cross-entropy of the
outputs read as logits (classification; the logistic loss for one output,
softmax cross-entropy for several). The forward and backward passes are
written in torch (so they run on a GPU too) without autograd: for a network
this small, one fused pass costs a handful of matrix products, and autograd's
bookkeeping would cost as much again. The gradient is checked against
autograd and finite differences in the tests; autograd is used for the
Hessian-vector products of the sharpness (:func:`autograd_loss`).

The training pieces the estimators and their diagnosis share live here too:
the training rows on the device (:class:`TrainingData`), the mini-batch
order a warm start continues (:class:`BatchOrder`) and the update applied to
whole epochs (:class:`Step`). Nothing here knows about the estimators
(:mod:`sksam.two_layer`).
"""

import math

import numpy as np
from scipy.special import log_expit, logsumexp

from ._base import all_finite, print_progress
from ._update_rules import ScheduledStep, is_perturbed, perturbation

#: The activations' names, in the order of the documentation: scikit-learn's
#: (:class:`~sklearn.neural_network.MLPRegressor`'s ``activation``), plus
#: ``'quadratic'`` (:math:`z^2`, a model of the theory). The teacher of
#: :func:`sksam.datasets.make_teacher_student` takes the same names.
ACTIVATIONS = ("relu", "tanh", "logistic", "quadratic", "identity")

#: ``name -> numpy function`` (prediction, data generation).
NUMPY_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "quadratic": np.square,
    "identity": lambda z: z,
}

#: ``name -> name of the torch function`` (out of place, differentiable by
#: autograd); None for the identity.
TORCH_ACTIVATIONS = {
    "relu": "relu",
    "tanh": "tanh",
    "logistic": "sigmoid",
    "quadratic": "square",
    "identity": None,
}


def torch_activation(name, Z):
    """``sigma(Z)`` out of place, for autograd (Hessian-vector products, tests).

    Parameters
    ----------
    name : str
        One of :data:`ACTIVATIONS`.
    Z : torch.Tensor
        Pre-activations.

    Returns
    -------
    A : torch.Tensor
    """
    import torch

    function = TORCH_ACTIVATIONS[name]
    return Z if function is None else getattr(torch, function)(Z)


#: The losses of the outputs: ``'squared_error'`` (regression) and
#: ``'log_loss'`` (classification: logistic for one output, softmax
#: cross-entropy for several), named as scikit-learn's MLPs name them.
LOSSES = ("squared_error", "log_loss")


def _activate_(name, Z, out):
    """``sigma(Z)`` into ``out``, which may be ``Z`` itself (not for quadratic)."""
    import torch

    if name == "relu":
        return torch.clamp(Z, min=0.0, out=out)
    if name == "tanh":
        return torch.tanh(Z, out=out)
    if name == "logistic":
        return torch.sigmoid(Z, out=out)
    if name == "quadratic":
        return torch.mul(Z, Z, out=out)
    return Z


def _backprop_activation_(name, dA, A, Z):
    """``dA * sigma'(Z)`` in place into ``dA``, from ``A = sigma(Z)`` where possible.

    Uses torch's fused backward kernels (the ones autograd itself calls):
    for ReLU, ``dA.mul_(A > 0)`` is several times slower on CPUs.
    """
    import torch

    aten = torch.ops.aten
    if name == "relu":  # dA where A > 0
        return aten.threshold_backward.grad_input(dA, A, 0.0, grad_input=dA)
    if name == "tanh":  # sigma' = 1 - tanh^2
        return aten.tanh_backward.grad_input(dA, A, grad_input=dA)
    if name == "logistic":  # sigma' = s (1 - s)
        return aten.sigmoid_backward.grad_input(dA, A, grad_input=dA)
    if name == "quadratic":  # sigma' = 2 z
        return dA.mul_(Z).mul_(2.0)
    return dA


class Workspace:
    """Buffers for the (n, h) intermediates, reused from step to step.

    Allocating a few megabytes per pass costs page faults that can take as
    long as the matrix products themselves on a CPU; reusing buffers keeps a
    step at the cost of its arithmetic. One set per batch shape.
    """

    def __init__(self):
        self._buffers = {}

    def __call__(self, name, shape, like):
        """The buffer ``name`` of ``shape``, allocated like ``like`` on first use."""
        key = (name, tuple(shape))
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = like.new_empty(shape)
        return buffer


def initial_weights(rng, d, h, k, scale, frozen_intercept=None):
    r"""``W, b, a, c`` (numpy) at LeCun's normal initialization shrunk by ``scale``.

    :math:`W_{ij} \sim N(0, s^2/d)`, :math:`a_{jk} \sim N(0, s^2/h)`,
    ``b = c = 0``; with a ``frozen_intercept`` (the output layer is not
    trained) ``a`` holds random signs :math:`\pm 1/\sqrt{h}` and ``c`` is it.
    """
    W = rng.standard_normal((d, h)) * (scale / math.sqrt(d))
    if frozen_intercept is None:
        a = rng.standard_normal((h, k)) * (scale / math.sqrt(h))
        c = np.zeros(k)
    else:
        a = rng.choice([-1.0, 1.0], size=(h, k)) / math.sqrt(h)
        c = frozen_intercept
    return [W, np.zeros(h), a, c]


def is_constant(outputs, Y):
    """Whether the network's outputs are constant although the target ``Y`` is not."""
    if not np.ptp(Y, axis=0).max() > 0:  # a constant target has a constant answer
        return False
    return np.ptp(outputs, axis=0).max() <= 1e-6 * (1.0 + np.abs(outputs).max())


def numpy_forward(fitted, activation, X):
    """``sigma(X W + b) a + c`` in numpy, from fitted ``coefs_`` and ``intercepts_``."""
    W, a = fitted["coefs_"]
    b, c = fitted["intercepts_"]
    return NUMPY_ACTIVATIONS[activation](X @ W + b) @ a + c


def numpy_loss(loss, outputs, Y, sample_weight=None):
    """The (weighted) mean ``loss`` of raw outputs ``F``, in numpy.

    Half the squared error, or the cross-entropy of the outputs read as
    logits (:func:`loss_and_gradient` computes the same in torch).
    """
    if loss == "squared_error":
        with np.errstate(over="ignore"):
            per_row = 0.5 * np.sum((outputs - Y) ** 2, axis=1)
    elif Y.shape[1] == 1:  # logistic: softplus(f) - y f
        per_row = -log_expit(-outputs[:, 0]) - Y[:, 0] * outputs[:, 0]
    else:
        per_row = logsumexp(outputs, axis=1) - np.sum(Y * outputs, axis=1)
    return float(np.average(per_row, weights=sample_weight))


def constant_loss(loss, Y, sample_weight=None):
    """The (weighted) mean ``loss`` of the best constant prediction.

    Half the variance summed over outputs, or the entropy of the class frequencies.
    """
    if loss == "squared_error":
        mean = np.average(Y, axis=0, weights=sample_weight)
        return 0.5 * float(np.sum(np.average((Y - mean) ** 2, axis=0, weights=sample_weight)))
    p = np.average(Y, axis=0, weights=sample_weight)
    p = np.r_[p, 1 - p] if Y.shape[1] == 1 else p
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def forward(params, X, activation):
    """``f(X) = sigma(X W + b) a + c`` (no gradient tracking)."""
    import torch

    W, b, a, c = params
    Z = torch.addmm(b, X, W)
    return torch.addmm(c, _activate_(activation, Z, Z), a)


def autograd_outputs(params, X, activation):
    """The network's outputs ``f(X)``, out of place, for autograd."""
    W, b, a, c = params
    return torch_activation(activation, X @ W + b) @ a + c


def autograd_loss(params, X, Y, activation, weights=None, loss="squared_error"):
    """The loss of :func:`loss_and_gradient`, out of place, for autograd."""
    import torch

    F = autograd_outputs(params, X, activation)
    if loss == "squared_error":
        per_row = 0.5 * (F - Y).square().sum(dim=1, keepdim=True)
    elif F.shape[1] == 1:  # logistic: softplus(f) - y f
        per_row = torch.nn.functional.softplus(F) - Y * F
    else:  # softmax cross-entropy: logsumexp(f) - <y, f>
        per_row = torch.logsumexp(F, dim=1, keepdim=True) - (Y * F).sum(dim=1, keepdim=True)
    if weights is None:
        return per_row.sum() / X.shape[0]
    return (weights * per_row).sum()


def _output_residual_(loss, F, Y, weights, need_loss):
    """Turn the outputs ``F`` into ``P R`` in place; the mean loss or None.

    The row losses, their derivatives ``R = dl/dF`` and the row weights ``P``
    are :func:`loss_and_gradient`'s.
    """
    import torch

    n = F.shape[0]
    value = None
    if loss == "squared_error":
        F.sub_(Y)
        if need_loss:
            if weights is None:
                value = torch.linalg.vector_norm(F).square_().div_(2 * n)
            else:  # sum_i p_i |R_i|^2, before R is scaled
                value = torch.linalg.vector_norm(F * weights.sqrt()).square_().div_(2)
    else:
        if F.shape[1] == 1:
            if need_loss:
                per_row = torch.nn.functional.softplus(F) - Y * F
            F.sigmoid_().sub_(Y)
        else:
            lse = torch.logsumexp(F, dim=1, keepdim=True)
            if need_loss:
                per_row = lse - (Y * F).sum(dim=1, keepdim=True)
            F.sub_(lse).exp_().sub_(Y)
        if need_loss:
            value = per_row.sum() / n if weights is None else (weights * per_row).sum()
    if weights is None:
        F.div_(n)
    else:
        F.mul_(weights)
    return value


def loss_and_gradient(
    params,
    X,
    Y,
    activation,
    *,
    train_output_layer=True,
    weights=None,
    need_loss=True,
    workspace=None,
    out=None,
    loss="squared_error",
):
    r"""Mean loss and its gradient by back-propagation written out by hand.

    With ``Z = X W + b``, ``A = sigma(Z)``, ``F = A a + c``, the row losses
    ``l_i`` (see ``loss``), their derivatives ``R_i = dl_i/dF_i`` and the row
    weights ``p`` (``1/n`` each, or the normalized sample weights):

    .. math::

        L = \sum_i p_i\, l_i,\quad
        \nabla_a L = A^\top P R,\quad \nabla_c L = \mathbf 1^\top P R,\quad
        \nabla_W L = X^\top D,\quad \nabla_b L = \mathbf 1^\top D,

    where ``P = diag(p)`` and ``D = (P R a^T) * sigma'(Z)``.

    Parameters
    ----------
    params : list of 4 tensors
        ``W`` (d, h), ``b`` (h,), ``a`` (h, k), ``c`` (k,).
    X, Y : tensors of shape (n, d) and (n, k)
        Inputs and targets.
    activation : str
        One of :data:`ACTIVATIONS`.
    train_output_layer : bool, default=True
        Return the gradients of all four tensors, or of ``W, b`` only.
    weights : tensor of shape (n, 1), optional
        Row weights ``p`` summing to 1; None for ``1/n``.
    need_loss : bool, default=True
        False skips the loss (SAM's second gradient does not need it).
    workspace : Workspace, optional
        Buffers for the intermediates; the returned tensors never alias them.
    out : list of tensors, optional
        Where to write the gradients (views of one flat gradient, see
        :class:`FlatParams`); new tensors if None.
    loss : {'squared_error', 'log_loss'}, default='squared_error'
        ``l_i = ||F_i - Y_i||^2 / 2`` with ``R = F - Y``; or the cross-entropy
        of the logits ``F_i``: ``softplus(F_i) - Y_i F_i`` with
        ``R = sigmoid(F) - Y`` for one output (``Y`` in {0, 1}),
        ``logsumexp(F_i) - <Y_i, F_i>`` with ``R = softmax(F) - Y`` for several
        (``Y`` one-hot).

    Returns
    -------
    loss : 0-d tensor or None
    grads : list of 4 or 2 tensors
    """
    import torch

    W, b, a, c = params
    n, h, k = X.shape[0], W.shape[1], a.shape[1]
    ws = workspace if workspace is not None else Workspace()
    Z = torch.addmm(b, X, W, out=ws("Z", (n, h), X))
    A = _activate_(activation, Z, ws("A", (n, h), X) if activation == "quadratic" else Z)
    R = torch.addmm(c, A, a, out=ws("R", (n, k), X))
    value = _output_residual_(loss, R, Y, weights, need_loss)
    D = _backprop_activation_(activation, torch.mm(R, a.T, out=ws("D", (n, h), X)), A, Z)
    n_grads = 4 if train_output_layer else 2
    out = [None] * n_grads if out is None else out
    grads = [torch.mm(X.T, D, out=out[0]), torch.sum(D, dim=0, out=out[1])]
    if train_output_layer:
        grads += [torch.mm(A.T, R, out=out[2]), torch.sum(R, dim=0, out=out[3])]
    return value, grads


class FlatParams:
    """``W, b, a, c`` with the trained ones as views of one flat tensor.

    The flat layout is ``[W, a, b, c]`` (weight matrices first, then
    intercepts; ``[W, b]`` when the output layer is frozen), so that the SAM
    overhead is a few operations on one vector (a norm, a scale, an add)
    rather than a dozen on four tensors, and the descent step is one
    ``sub_``. The gradient, and SAM's perturbed point ``w + e``, live in two
    more flat tensors with the same layout. ``params`` lists the four
    tensors in model order ``W, b, a, c``.

    Parameters
    ----------
    tensors : list of 4 tensors
        Initial ``W, b, a, c`` (copied).
    train_output_layer : bool
        Train all four tensors, or ``W, b`` only (``a, c`` frozen).
    """

    def __init__(self, tensors, *, train_output_layer):
        import torch

        W, b, a, c = tensors
        self.train_output_layer = train_output_layer
        trained = [W, a, b, c] if train_output_layer else [W, b]
        self.flat = torch.cat([t.reshape(-1) for t in trained])
        self.grad = torch.zeros_like(self.flat)
        self.n_weights = W.numel() + (a.numel() if train_output_layer else 0)
        self.frozen = [] if train_output_layer else [a.clone(), c.clone()]
        self.shapes = [t.shape for t in tensors]
        self.params = self.views(self.flat)
        self.grads = self.views(self.grad)[: len(trained)]
        # SAM's w + e, with its views made once (making them costs as much
        # as the rest of SAM's overhead)
        self.shifted = torch.empty_like(self.flat)
        self.shifted_params = self.views(self.shifted)
        # what SAM's perturbation added to the steps, summed over the fit:
        # sum_t lr (grad L(w_t + e_t) - grad L(w_t)); allocated on first use
        self.drift = None
        self.start = self.flat.clone()

    def sam_share(self):
        """``||drift|| / ||w - w_start||``: the share of the weights' movement due to SAM.

        Zero for gradient descent; small values mean SAM's iterates stayed
        close to gradient descent's (see the user guide, "When SAM and GD
        coincide"). None before any step moved the weights.
        """
        import torch

        moved = float(torch.linalg.vector_norm(self.flat - self.start))
        if not moved > 0:
            return None
        if self.drift is None:
            return 0.0
        return float(torch.linalg.vector_norm(self.drift)) / moved

    def views(self, flat):
        """``W, b, a, c`` as views of ``flat`` (frozen ones as stored)."""
        order = (0, 2, 1, 3) if self.train_output_layer else (0, 1)
        pieces, start = {}, 0
        for i in order:
            size = int(np.prod(self.shapes[i]))
            pieces[i] = flat[start : start + size].view(self.shapes[i])
            start += size
        if not self.train_output_layer:
            pieces[2], pieces[3] = self.frozen
        return [pieces[i] for i in range(4)]

    def chunks(self, flat, solver):
        """``flat`` cut for the update rules: weights and intercepts apart for ASAM."""
        if solver == "asam":
            return [flat[: self.n_weights], flat[self.n_weights :]], (True, False)
        return [flat], (True,)


def step_(
    state,
    X,
    Y,
    *,
    solver,
    rho,
    learning_rate,
    activation,
    weights=None,
    workspace=None,
    loss="squared_error",
    schedule=None,
    rule=None,
    rho_schedule=None,
):
    """One GD/SAM step on ``state`` (a :class:`FlatParams`) in place.

    The perturbation is :func:`sksam._update_rules.perturbation` on the flat
    parameter vector (for ASAM, the adaptive scaling on the weight matrices
    ``W`` and ``a`` only, the intercepts unscaled); the gradient at ``w + e``
    is taken on a perturbed *copy*, so the parameters never leave their
    values before the descent step. With no perturbation (``gd`` or
    ``rho == 0``) the second gradient is not computed at all, so every solver
    with ``rho = 0`` reproduces gradient descent bit for bit. ``loss`` is
    passed to :func:`loss_and_gradient`. A perturbed step adds
    ``lr (grad L(w + e) - grad L(w))`` to ``state.drift`` (see
    :meth:`FlatParams.sam_share`). A ``schedule`` (:mod:`sksam._update_rules`)
    decides per step whether the second gradient is taken (the cheap
    variants of SAM), through the one driver the SAM optimizer uses too,
    :class:`~sksam._update_rules.ScheduledStep`; the change of the gradient on
    the plain steps of a schedule that edits it (LookSAM) counts in
    ``state.drift`` too.

    A ``rule`` (:class:`~sksam.optim.GSAM`, :class:`~sksam.optim.WSAM`,
    :class:`~sksam.optim.FriendlySAM`) changes the step at the two points
    where it changes the SAM optimizer's: its ``perturbation`` hook gives
    ``e`` (Friendly-SAM's ascent direction), its ``combine_`` formula the
    descent gradient from ``g`` and ``g_s`` (the same code as its
    ``descent`` hook). A ``rho_schedule`` (:class:`~sksam.optim.WarmupRho`,
    ...) gives the radius of this step, clipped to ``[0, rho]``, and counts
    the step.

    Returns
    -------
    loss : 0-d tensor
        The loss before the step.
    """
    import torch

    options = {
        "train_output_layer": state.train_output_layer,
        "weights": weights,
        "workspace": workspace,
        "out": state.grads,
        "loss": loss,
    }
    value, _ = loss_and_gradient(state.params, X, Y, activation, **options)

    def drift_(sign):
        if state.drift is None:
            state.drift = torch.zeros_like(state.flat)
        state.drift.add_(state.grad, alpha=sign * learning_rate)

    if rho_schedule is not None:  # the radius of this step, never negative
        rho_schedule.start(0, {"lr": learning_rate})
        rho = rho_schedule.clipped(rho, learning_rate, 0)
        rho_schedule.advance()

    def second_gradient(count=True):
        params, adaptive = state.chunks(state.flat, solver)
        grads, _ = state.chunks(state.grad, solver)
        if rule is None:
            e = perturbation(solver, rho, params, grads, adaptive=adaptive)
        else:  # the rule's hook, as the SAM optimizer calls it (one radius per tensor)
            e = rule.perturbation(solver, [rho] * len(params), params, grads, adaptive=adaptive)
        if e is not None:
            if count:
                drift_(-1)  # - lr grad L(w) ...
            first = state.grad.clone() if getattr(rule, "needs_first_gradient", False) else None
            for w, e_w, out in zip(params, e, state.chunks(state.shifted, solver)[0]):
                torch.add(w, e_w, out=out)
            loss_and_gradient(state.shifted_params, X, Y, activation, need_loss=False, **options)
            if first is not None:  # GSAM, WSAM: g_d from g and g_s, in place of g_s
                rule.combine_([first], [state.grad])
            if count:
                drift_(+1)  # ... + lr g_d (grad L(w + e) for SAM)
        return [state.grad]

    perturbed = is_perturbed(solver, rho)
    # a schedule that edits the plain step's gradient (LookSAM) changes the
    # step on every step: count the whole change, not only the SAM steps'
    edits = perturbed and schedule is not None and schedule.edits_plain_gradient
    if edits:
        drift_(-1)
    with ScheduledStep(schedule, perturbs=perturbed) as scheduled:
        scheduled.resolve([state.grad], lambda: second_gradient(count=not edits))
    if edits:
        drift_(+1)
    state.flat.sub_(state.grad, alpha=learning_rate)
    return value


class NonFinite(Exception):
    """The loss (or, with ``weights``, the weights) became non-finite at ``iteration``."""

    def __init__(self, iteration, *, weights=False):
        super().__init__(iteration)
        self.iteration = iteration
        self.weights = weights


class TrainingData:
    """The training rows as float32 tensors on the device, and their row weights.

    Parameters
    ----------
    X, Y : ndarray of shape (n, d) and (n, k)
        Inputs and encoded targets (copied: read-only inputs are never aliased).
    sample_weight : ndarray of shape (n,) or None
        Non-negative row weights; ``weights`` holds them normalized to sum to 1.
    device : str or torch.device
        Where the tensors live.
    """

    def __init__(self, X, Y, sample_weight, device):
        import torch

        self.X = torch.as_tensor(X.astype(np.float32), device=device)
        self.Y = torch.as_tensor(Y.astype(np.float32), device=device)
        self.X_numpy, self.Y_numpy = X, Y
        self.sample_weight = sample_weight
        self.weights = None
        if sample_weight is not None:
            total = sample_weight.sum()
            if not total > 0:
                raise ValueError(
                    "sample_weight sums to 0 on the training rows; give some sample a "
                    "positive weight."
                )
            self.weights = torch.as_tensor(
                (sample_weight / total).astype(np.float32)[:, None], device=device
            )
        self.n_samples, self.n_features = X.shape
        self.n_outputs = Y.shape[1]


class BatchOrder:
    """One epoch's mini-batches of row indices, reshuffled at each epoch.

    A private ``torch.Generator`` draws the orders (torch's global one is
    never read nor reseeded). Its ``state`` is what a warm start carries on
    from, so that two fits of 5 epochs draw the orders of one fit of 10.

    Parameters
    ----------
    n_samples : int
        Rows to split.
    batch_size : int or None
        Rows per batch; None (or at least ``n_samples``) is the full batch.
    seed : callable
        Returns the generator's seed; called only when there are mini-batches
        and no ``state`` (so a full-batch fit draws nothing).
    state : torch.ByteTensor, optional
        A generator state to continue from.
    """

    def __init__(self, n_samples, batch_size, seed, state=None):
        import torch

        self.n_samples, self.batch_size = n_samples, batch_size
        self.generator = None
        if batch_size is not None and batch_size < n_samples:
            self.generator = torch.Generator()
            if state is None:
                self.generator.manual_seed(int(seed()))
            else:
                self.generator.set_state(state)

    @property
    def n_batches(self):
        """Batches per epoch."""
        return 1 if self.generator is None else -(-self.n_samples // self.batch_size)

    def __call__(self):
        """The batches of the next epoch: index tensors, or ``[None]`` for all rows."""
        import torch

        if self.generator is None:
            return [None]
        order = torch.randperm(self.n_samples, generator=self.generator)
        size = self.batch_size
        return [order[i : i + size] for i in range(0, self.n_samples, size)]

    @property
    def state(self):
        """The generator's state (None at full batch)."""
        return None if self.generator is None else self.generator.get_state()


class Step:
    """The update rule, step size and loss of :func:`step_`, applied to whole epochs.

    Parameters
    ----------
    solver : str
        The perturbation rule (:mod:`sksam._update_rules`).
    rho, learning_rate : float
        Radius of the perturbation and step size.
    activation : str
        The hidden layer's activation.
    loss : {'squared_error', 'log_loss'}
        The loss of the outputs.
    schedule : schedule object, optional
        When to take SAM's second gradient (:mod:`sksam._update_rules`).
    rule : GSAM, WSAM or FriendlySAM, optional
        The SAM family's rule (:mod:`sksam._family`), kept across steps.
    rho_schedule : RhoSchedule, optional
        The radius of each step (:mod:`sksam._family`), kept across steps.
    """

    def __init__(self, **options):
        # step_'s keywords (the rows and their weights aside), and one workspace
        # for every step: its buffers are allocated once
        self.options = {**options, "workspace": Workspace()}

    def epoch(self, state, data, batches):
        """One pass over the data; the (weighted) mean of the batch losses, as a float.

        A mini-batch whose rows all have zero weight adds nothing to the
        weighted mean loss, nor to its gradient: it is skipped (no step).
        """
        total = 0.0
        for idx in batches():
            if idx is None:
                return step_(state, data.X, data.Y, weights=data.weights, **self.options).item()
            idx = idx.to(data.X.device)
            weights, share = None, len(idx) / data.n_samples
            if data.weights is not None:  # each batch's weights renormalized to sum to 1
                weights = data.weights[idx]
                share = float(weights.sum())
                if share == 0.0:
                    continue
                weights = weights / share
            loss = step_(state, data.X[idx], data.Y[idx], weights=weights, **self.options)
            total += loss.item() * share
        return total


def train(state, data, step, batches, *, rule, max_iter, history, score=None, verbose=False):
    """Epochs of ``step`` until ``rule`` stops them or ``max_iter``, appending to ``history``.

    Parameters
    ----------
    state : FlatParams
        The weights, trained in place.
    data : TrainingData
        The training rows.
    step : Step
        The update applied to each epoch.
    batches : BatchOrder
        The mini-batch order.
    rule : sksam._base.StoppingRule
        MLPRegressor's stopping rule, on the loss (or on ``score``).
    max_iter : int
        The most epochs.
    history : sksam._base.FitHistory
        Receives each epoch's loss (and score).
    score : callable, optional
        ``score(params)``: the validation score of the weights, for early
        stopping (the weights of the best score are returned).
    verbose : bool, default=False
        Print each epoch's loss.

    Returns
    -------
    params : list of 4 tensors
        The weights to keep: the last ones, or the best-scoring ones.
    interrupted : bool
        Whether a ``KeyboardInterrupt`` ended the loop (the caller warns).

    Raises
    ------
    NonFinite
        When the loss or the weights become non-finite.
    """
    best, interrupted = None, False
    try:
        for _ in range(max_iter):
            loss = step.epoch(state, data, batches)
            if not math.isfinite(loss):
                raise NonFinite(history.n_iter + 1)
            value = None if score is None else score(state.params)
            history.append(loss, value)
            if verbose:
                print_progress(history.n_iter, loss, value)
            stop = rule.update(loss, value)
            if score is not None and rule.is_best:
                best = [p.clone() for p in state.params]
            if stop:
                break
    except KeyboardInterrupt:
        rule.stopped = interrupted = True
    if not all_finite(state.params):
        raise NonFinite(history.n_iter, weights=True)
    return (state.params if best is None else best), interrupted


def sharpness_problem(params, data, activation, loss, train_output_layer):
    """The loss, the trained leaves and the logits of the network, for the sharpness.

    Returns
    -------
    loss_fn : callable
        The (weighted) mean training loss at ``params``, for autograd.
    trained : list of tensors
        The trained parameters (``W, b, a, c``, or ``W, b``), leaves.
    leaves : list of 4 tensors
        All four, for the logits of a classifier.
    """
    n_trained = 4 if train_output_layer else 2
    leaves = [p.detach().clone().requires_grad_(i < n_trained) for i, p in enumerate(params)]

    def loss_fn():
        return autograd_loss(leaves, data.X, data.Y, activation, data.weights, loss=loss)

    return loss_fn, leaves[:n_trained], leaves
