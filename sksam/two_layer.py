"""A network with one hidden layer, fitted by gradient descent or SAM.

The model, the loss and the gradient are written out by hand (in torch, so they
run on a GPU too): for a network this small, one fused forward/backward pass
costs a handful of matrix products, and autograd's bookkeeping would cost as
much again. The hand-written gradient is checked against autograd in the tests;
autograd is used for the Hessian-vector products of ``sharpness_``.
"""

import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._activations import NUMPY_ACTIVATIONS
from ._update_rules import SOLVERS, perturbation
from .sharpness import MEASURES

__all__ = ["SAMTwoLayerRegressor"]

ACTIVATIONS = tuple(NUMPY_ACTIVATIONS)


# --------------------------------------------------------------------------
# the model, its loss and its gradient (torch, no autograd)
# --------------------------------------------------------------------------


def _activate_(name, Z, out):
    """``sigma(Z)`` into ``out``, which may be ``Z`` itself (not for quadratic)."""
    import torch

    if name == "relu":
        return torch.clamp(Z, min=0.0, out=out)
    if name == "tanh":
        return torch.tanh(Z, out=out)
    if name == "sigmoid":
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
    if name == "sigmoid":  # sigma' = s (1 - s)
        return aten.sigmoid_backward.grad_input(dA, A, grad_input=dA)
    if name == "quadratic":  # sigma' = 2 z
        return dA.mul_(Z).mul_(2.0)
    return dA


class _Workspace:
    """Buffers for the (n, h) intermediates, reused from step to step.

    Allocating a few megabytes per pass costs page faults that can take as
    long as the matrix products themselves on a CPU; reusing buffers keeps a
    step at the cost of its arithmetic. One set per batch shape.
    """

    def __init__(self):
        self._buffers = {}

    def __call__(self, name, shape, like):
        key = (name, tuple(shape))
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = like.new_empty(shape)
        return buffer


def _autograd_activation(name, Z):
    """``sigma(Z)`` out of place, for autograd (Hessian-vector products)."""
    import torch

    return {
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "quadratic": torch.square,
        "identity": lambda z: z,
    }[name](Z)


def _forward(params, X, activation):
    """``f(X) = sigma(X W + b) a + c`` (no gradient tracking)."""
    import torch

    W, b, a, c = params
    Z = torch.addmm(b, X, W)
    return torch.addmm(c, _activate_(activation, Z, Z), a)


def _loss_and_gradient(
    params, X, Y, activation, n_trained, *, need_loss=True, workspace=None, out=None
):
    r"""Mean loss and its gradient by back-propagation written out by hand.

    With ``Z = X W + b``, ``A = sigma(Z)``, ``F = A a + c``, ``R = F - Y``:

    .. math::

        L = \frac{1}{2n}\lVert R\rVert_F^2,\quad
        \nabla_a L = A^\top R / n,\quad \nabla_c L = \mathbf 1^\top R / n,\quad
        \nabla_W L = X^\top D,\quad \nabla_b L = \mathbf 1^\top D,

    where ``D = (R a^T / n) * sigma'(Z)``.

    Parameters
    ----------
    params : list of 4 tensors
        ``W`` (d, h), ``b`` (h,), ``a`` (h, k), ``c`` (k,).
    X, Y : tensors of shape (n, d) and (n, k)
    activation : str
    n_trained : {2, 4}
        Return gradients for ``W, b`` only (2) or for all four (4).
    need_loss : bool, default=True
        False skips the loss (SAM's second gradient does not need it).
    workspace : _Workspace, optional
        Buffers for the intermediates; the returned tensors never alias them.
    out : list of ``n_trained`` tensors, optional
        Where to write the gradients (views of one flat gradient, see
        :class:`_FlatParams`); new tensors if None.

    Returns
    -------
    loss : 0-d tensor or None
    grads : list of ``n_trained`` tensors
    """
    import torch

    W, b, a, c = params
    n, h, k = X.shape[0], W.shape[1], a.shape[1]
    ws = workspace if workspace is not None else _Workspace()
    Z = torch.addmm(b, X, W, out=ws("Z", (n, h), X))
    A = _activate_(activation, Z, ws("A", (n, h), X) if activation == "quadratic" else Z)
    R = torch.addmm(c, A, a, out=ws("R", (n, k), X)).sub_(Y)
    loss = torch.linalg.vector_norm(R).square_().div_(2 * n) if need_loss else None
    R.div_(n)
    D = _backprop_activation_(activation, torch.mm(R, a.T, out=ws("D", (n, h), X)), A, Z)
    out = [None] * n_trained if out is None else out
    grads = [torch.mm(X.T, D, out=out[0]), torch.sum(D, dim=0, out=out[1])]
    if n_trained == 4:
        grads += [torch.mm(A.T, R, out=out[2]), torch.sum(R, dim=0, out=out[3])]
    return loss, grads


class _FlatParams:
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
    n_trained : {2, 4}
        Train ``W, b`` only (2) or all four (4).
    """

    def __init__(self, tensors, n_trained):
        import torch

        W, b, a, c = tensors
        self.n_trained = n_trained
        trained = [W, a, b, c] if n_trained == 4 else [W, b]
        self.flat = torch.cat([t.reshape(-1) for t in trained])
        self.grad = torch.zeros_like(self.flat)
        self.n_weights = W.numel() + (a.numel() if n_trained == 4 else 0)
        self.frozen = [] if n_trained == 4 else [a.clone(), c.clone()]
        self.shapes = [t.shape for t in tensors]
        self.params = self.views(self.flat)
        self.grads = self.views(self.grad)[:n_trained]
        # SAM's w + e, with its views made once (making them costs as much
        # as the rest of SAM's overhead)
        self.shifted = torch.empty_like(self.flat)
        self.shifted_params = self.views(self.shifted)

    def views(self, flat):
        """``W, b, a, c`` as views of ``flat`` (frozen ones as stored)."""
        shapes = self.shapes
        order = (0, 2, 1, 3) if self.n_trained == 4 else (0, 1)
        pieces, start = {}, 0
        for i in order:
            size = int(np.prod(shapes[i]))
            pieces[i] = flat[start : start + size].view(shapes[i])
            start += size
        if self.n_trained == 2:
            pieces[2], pieces[3] = self.frozen
        return [pieces[i] for i in range(4)]

    def chunks(self, flat, solver):
        """``flat`` cut for the update rules: weights and intercepts apart for ASAM."""
        if solver == "asam":
            return [flat[: self.n_weights], flat[self.n_weights :]], (True, False)
        return [flat], (True,)


def _step_(state, X, Y, config):
    """One GD/SAM step on ``state`` (a :class:`_FlatParams`) in place.

    Returns the loss before the step. ``config`` holds ``solver``, ``rho``,
    ``lr``, ``activation`` and optionally a ``workspace`` (see
    :class:`_Workspace`). The perturbation is
    :func:`sksam._update_rules.perturbation` on the flat parameter vector
    (for ASAM, the adaptive scaling on the weight matrices ``W`` and ``a``
    only, the intercepts unscaled); the gradient at ``w + e`` is taken on a
    perturbed *copy*, so the parameters never leave their values before the
    descent step. With no perturbation (``gd`` or ``rho == 0``) the second
    gradient is not computed at all, so every solver with ``rho = 0``
    reproduces gradient descent bit for bit.
    """
    import torch

    workspace = config.get("workspace")
    activation, n_trained = config["activation"], state.n_trained
    loss, _ = _loss_and_gradient(
        state.params, X, Y, activation, n_trained, workspace=workspace, out=state.grads
    )
    params, adaptive = state.chunks(state.flat, config["solver"])
    grads, _ = state.chunks(state.grad, config["solver"])
    e = perturbation(config["solver"], config["rho"], params, grads, adaptive=adaptive)
    if e is not None:
        for w, e_w, out in zip(params, e, state.chunks(state.shifted, config["solver"])[0]):
            torch.add(w, e_w, out=out)
        _loss_and_gradient(
            state.shifted_params,
            X,
            Y,
            activation,
            n_trained,
            need_loss=False,
            workspace=workspace,
            out=state.grads,
        )
    state.flat.sub_(state.grad, alpha=config["lr"])
    return loss


# --------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------


class SAMTwoLayerRegressor(RegressorMixin, BaseEstimator):
    r"""Network with one hidden layer, fitted by gradient descent or SAM.

    The model is

    .. math::

        f(x) = \sum_{j=1}^{h} a_j\, \sigma(w_j^\top x + b_j) + c,

    fitted to the mean squared loss
    :math:`L = \frac{1}{2n}\sum_i \lVert f(x_i) - y_i\rVert^2` (summed over
    outputs for a 2-d ``y``) by full-batch gradient descent, or by
    Sharpness-Aware Minimization (Foret et al. 2021) and its variants: each
    step is :math:`w \leftarrow w - \eta \nabla L(w + e)` with the
    perturbation :math:`e` of :mod:`sksam._update_rules` (``e = 0`` for
    ``'gd'``). This is the non-convex setting of Behdin & Mazumder where SAM's
    prediction error is clearly below gradient descent's: GD fits the label
    noise, SAM does not, and SAM's solution is flatter (a smaller
    ``sharpness_``).

    Computations run in **float32** (torch's default, and twice the speed of
    float64 on CPUs and many GPUs); the fitted arrays are returned as float64
    numpy arrays.

    Parameters
    ----------
    solver : {'gd', 'sam', 'usam', 'asam'}, default='sam'
        The update rule: gradient descent, SAM (``e = rho g/||g||``),
        unnormalized SAM (``e = rho g``) or adaptive SAM
        (``e = rho T^2 g/||T g||``, ``T = |w| + 0.01`` on the weight matrices
        ``W`` and ``a``, ``T = 1`` on the intercepts).
    rho : float, default=0.05
        Radius of the perturbation. ``rho=0`` gives gradient descent exactly.
    n_hidden : int, default=100
        Number of hidden units ``h``.
    activation : {'relu', 'tanh', 'sigmoid', 'quadratic', 'identity'}, default='relu'
        The activation :math:`\sigma`; ``'quadratic'`` is :math:`z^2`.
    train_output_layer : bool, default=True
        If False, only the hidden layer (``W``, ``b``) is trained; the output
        weights keep their initial values (see Notes).
    init_scale : float, default=0.1
        Scale ``s`` of the initialization (see Notes). Small values start
        near the zero function, the regime where SAM's advantage is largest.
    learning_rate : float, default=0.05
        Step size :math:`\eta`. Plain (S)GD has no adaptive step, so the
        stable range depends on the scale of the data: standardize ``X``
        (:class:`~sklearn.preprocessing.StandardScaler`) and ``y``
        (:class:`~sklearn.compose.TransformedTargetRegressor`). On scikit-learn's
        diabetes data with raw targets (values 25-346) the default diverges,
        and ``fit`` says so; with both standardized it reaches a
        cross-validated :math:`R^2` of about 0.5.
    batch_size : int or None, default=None
        ``None`` uses the full batch at each step (the paper's setting);
        otherwise mini-batches of this size, reshuffled at each epoch.
    max_iter : int, default=1000
        Maximum number of iterations (epochs; one step each at full batch).
    tol : float or None, default=1e-4
        Tolerance of the stopping rule, as in
        :class:`~sklearn.neural_network.MLPRegressor`: training stops when the
        training loss (or, with ``early_stopping``, the validation score) has
        not improved by at least ``tol`` for ``n_iter_no_change`` consecutive
        iterations. ``None`` (as in :class:`~sklearn.linear_model.SGDRegressor`)
        disables the rule: exactly ``max_iter`` iterations, no
        ``ConvergenceWarning``; with ``early_stopping`` the weights with the
        best validation score are still the ones kept.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when its
        :math:`R^2` stops improving, and keep the weights with the best
        validation score.
    validation_fraction : float, default=0.1
        Fraction of the data held out when ``early_stopping`` is True.
    n_iter_no_change : int, default=10
        Iterations without improvement before stopping.
    sharpness : {'top_eigenvalue', 'trace', 'rho'} or None, default='top_eigenvalue'
        The measure stored in ``sharpness_``, computed once at the end of
        ``fit`` by :func:`sksam.sharpness.torch_sharpness`; None skips it.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialization, the mini-batches, the validation split and
        the sharpness computation.
    device : str, default='cpu'
        Torch device to train on, e.g. ``'cuda'``.
    warm_start : bool, default=False
        Start from the weights of the previous fit (and append to its
        ``loss_curve_``) instead of a fresh initialization.
    verbose : bool or int, default=False
        Print the loss at each iteration.

    Attributes
    ----------
    coefs_ : list of 2 ndarrays
        ``coefs_[0]`` is ``W`` of shape (n_features, n_hidden) and
        ``coefs_[1]`` is ``a`` of shape (n_hidden, n_outputs), the layout of
        :class:`~sklearn.neural_network.MLPRegressor`.
    intercepts_ : list of 2 ndarrays
        ``b`` of shape (n_hidden,) and ``c`` of shape (n_outputs,).
    n_iter_ : int
        Number of iterations run (over all fits, with ``warm_start``).
    loss_curve_ : list of float
        Training loss :math:`L` at each iteration, measured before its step
        (averaged over the mini-batches of the epoch when ``batch_size`` is
        set).
    best_loss_ : float
        Smallest value in ``loss_curve_``.
    validation_scores_ : list of float or None
        :math:`R^2` on the held-out data after each iteration, with
        ``early_stopping``; None otherwise.
    best_validation_score_ : float or None
        Best of ``validation_scores_``, whose weights are kept; None without
        ``early_stopping``.
    sharpness_ : float or None
        The ``sharpness`` measure of the mean training loss at the fitted
        weights, with respect to the trained parameters (all of them, or
        ``W`` and ``b`` when ``train_output_layer=False``), on the training
        data actually used (without the validation split). For
        ``'top_eigenvalue'`` it is the largest signed Hessian eigenvalue by
        Lanczos iterations (stopped at a relative residual of 1e-4), for
        ``'trace'`` a Hutchinson estimate with 100
        Rademacher probes, for ``'rho'`` the rho-sharpness with this
        estimator's ``rho`` (a lower bound). None if ``sharpness=None``.
    n_outputs_ : int
        Number of outputs.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sklearn.neural_network.MLPRegressor : The same model trained by SGD or Adam.
    sksam.SAMKernelRegressor : The convex (kernel) counterpart.

    Notes
    -----
    **Initialization.** With ``s = init_scale``:
    :math:`W_{ij} \sim N(0, s^2/d)`, :math:`a_{jk} \sim N(0, s^2/h)`,
    ``b = 0``, ``c = 0``. This is LeCun's normal initialization, which keeps
    the pre-activations and the output of order ``s`` whatever the width,
    shrunk by ``s = 0.1`` so that training starts near the zero function, as
    the paper's analysis does (iterates from zero). We chose it on the noisy
    teacher-student problem of ``benchmarks/claim_two_layer.py`` (200 points,
    200 units, 4000 full-batch steps at learning rate 0.05, 3 seeds, each
    initialization with its best ``rho``): at ``s = 0.1`` GD's test error was
    0.16-0.25 and SAM's 29-34% lower; with PyTorch's default ``nn.Linear``
    initialization (uniform :math:`\pm 1/\sqrt{\text{fan\_in}}`, biases
    included) GD's was 0.18-0.29 and SAM's 23-26% lower; at ``s = 1``
    (2 seeds) GD's was 0.31-0.38 and SAM's 17-24% lower. At ``s = 0.01``
    GD had barely left the origin after 4000 steps and ``rho >= 0.2``
    stalled SAM there. With ``train_output_layer=False`` the output weights are frozen at random
    signs :math:`a_j = \pm 1/\sqrt{h}` (the usual fixed second layer of the
    theory, e.g. Du et al. 2019) and ``c`` at the mean of ``y``, so that the
    network can fit the target by moving its hidden layer alone.

    **Convergence.** As in :class:`~sklearn.neural_network.MLPRegressor`: a
    ``ConvergenceWarning`` when ``max_iter`` is reached before the stopping
    rule, a warning (and the current weights kept) on ``KeyboardInterrupt``,
    and a ``ValueError`` when the loss or the weights become non-finite (the
    step size is too large): the estimator is then left unfitted (with
    ``warm_start``, with the weights of its previous fit), so it never
    predicts NaN.

    The loss is read back from the device once per iteration (for the
    stopping rule and ``loss_curve_``).

    References
    ----------
    .. [1] K. Behdin, R. Mazumder, "On Statistical Properties of
       Sharpness-Aware Minimization: Provable Guarantees", arXiv:2302.11836.
    .. [2] P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-Aware
       Minimization for Efficiently Improving Generalization", ICLR 2021.
    .. [3] S. S. Du, X. Zhai, B. Poczos, A. Singh, "Gradient Descent Provably
       Optimizes Over-parameterized Neural Networks", ICLR 2019.

    Examples
    --------
    >>> from sksam import SAMTwoLayerRegressor
    >>> from sksam.datasets import make_teacher_student
    >>> X, y, y_true = make_teacher_student(n_samples=100, random_state=0)
    >>> reg = SAMTwoLayerRegressor(n_hidden=20, rho=0.1, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    >>> reg.coefs_[0].shape, reg.coefs_[1].shape
    ((10, 20), (20, 1))
    >>> bool(reg.sharpness_ > 0)
    True
    """

    _parameter_constraints = {
        "solver": [StrOptions(set(SOLVERS))],
        "rho": [Interval(numbers.Real, 0, None, closed="left")],
        "n_hidden": [Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "train_output_layer": ["boolean"],
        "init_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left"), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "sharpness": [StrOptions(set(MEASURES)), None],
        "random_state": ["random_state"],
        "device": [str],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        solver="sam",
        rho=0.05,
        *,
        n_hidden=100,
        activation="relu",
        train_output_layer=True,
        init_scale=0.1,
        learning_rate=0.05,
        batch_size=None,
        max_iter=1000,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        sharpness="top_eigenvalue",
        random_state=None,
        device="cpu",
        warm_start=False,
        verbose=False,
    ):
        self.solver = solver
        self.rho = rho
        self.n_hidden = n_hidden
        self.activation = activation
        self.train_output_layer = train_output_layer
        self.init_scale = init_scale
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.sharpness = sharpness
        self.random_state = random_state
        self.device = device
        self.warm_start = warm_start
        self.verbose = verbose

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the network to ``X, y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.

        Returns
        -------
        self : SAMTwoLayerRegressor
            The fitted estimator.
        """
        warm = self.warm_start and hasattr(self, "coefs_")
        X, y = validate_data(
            self,
            X,
            y,
            reset=not warm,
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
        )
        Y = y.reshape(len(y), -1)
        if warm and Y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"warm_start=True but y has {Y.shape[1]} outputs where the previous "
                f"fit had {self.n_outputs_}; fit with warm_start=False."
            )
        device = self._check_device()
        if not warm:  # a fit that fails below must not leave an older fit behind
            self._forget_fit()
        rng = check_random_state(self.random_state)
        X_train, Y_train, X_val, Y_val = self._split(X, Y, rng)
        params = self._initial_params(X_train.shape[1], Y_train, rng, warm, device)
        history = self._history(warm)
        import torch

        # astype copies, so read-only inputs (memory maps) are never aliased
        X_t = torch.as_tensor(X_train.astype(np.float32), device=device)
        Y_t = torch.as_tensor(Y_train.astype(np.float32), device=device)
        params, history = self._train(params, X_t, Y_t, X_val, Y_val, rng, device, history)
        self._store(params, history, Y.shape[1])
        self.sharpness_ = self._measure_sharpness(params, X_t, Y_t, rng)
        return self

    def _forget_fit(self):
        for name in _FITTED:
            self.__dict__.pop(name, None)

    def _check_device(self):
        import torch

        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise ValueError(f"Unknown device {self.device!r}: {exc}") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={self.device!r} but torch.cuda.is_available() is False; use device='cpu'."
            )
        return device

    def _split(self, X, Y, rng):
        """Training and validation parts (``X_val`` is None without early stopping)."""
        if not self.early_stopping:
            return X, Y, None, None
        X_train, X_val, Y_train, Y_val = train_test_split(
            X, Y, test_size=self.validation_fraction, random_state=rng
        )
        if X_val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small (fewer than 2 samples); increase "
                "validation_fraction or the number of samples."
            )
        return X_train, Y_train, X_val, Y_val

    def _initial_params(self, n_features, Y, rng, warm, device):
        """``[W, b, a, c]`` as float32 tensors: fresh (see Notes) or the last fit's."""
        import torch

        if warm:
            arrays = [self.coefs_[0], self.intercepts_[0], self.coefs_[1], self.intercepts_[1]]
        else:
            h, k, s = self.n_hidden, Y.shape[1], self.init_scale
            W = rng.standard_normal((n_features, h)) * (s / math.sqrt(n_features))
            if self.train_output_layer:
                a = rng.standard_normal((h, k)) * (s / math.sqrt(h))
                c = np.zeros(k)
            else:
                a = rng.choice([-1.0, 1.0], size=(h, k)) / math.sqrt(h)
                c = Y.mean(axis=0)
            arrays = [W, np.zeros(h), a, c]
        return [torch.as_tensor(v, dtype=torch.float32, device=device).clone() for v in arrays]

    def _history(self, warm):
        if warm:
            return {
                "loss_curve": list(self.loss_curve_),
                "validation_scores": (
                    list(self.validation_scores_) if self.validation_scores_ else []
                ),
                "n_iter": self.n_iter_,
            }
        return {"loss_curve": [], "validation_scores": [], "n_iter": 0}

    def _train(self, params, X, Y, X_val, Y_val, rng, device, history):
        """The training loop with MLPRegressor's stopping rules."""
        config = {
            "solver": self.solver,
            "rho": self.rho,
            "lr": self.learning_rate,
            "activation": self.activation,
            "workspace": _Workspace(),
        }
        state = _FlatParams(params, 4 if self.train_output_layer else 2)
        params = state.params
        batches = self._batches(X.shape[0], rng)
        stopper = _Stopper(self.tol, self.n_iter_no_change, self.early_stopping)
        converged = False
        try:
            for _ in range(self.max_iter):
                loss = self._epoch(state, X, Y, config, batches)
                history["n_iter"] += 1
                _check_finite(loss, history["n_iter"], self.learning_rate)
                history["loss_curve"].append(loss)
                if self.verbose:
                    print(f"Iteration {history['n_iter']}, loss = {loss:.8f}")
                score = None
                if self.early_stopping:
                    score = self._validation_score(params, X_val, Y_val, device)
                    history["validation_scores"].append(score)
                if stopper.update(loss, score, params):
                    converged = True
                    break
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=2)
            converged = True
        if not _all_finite(params):
            raise ValueError(
                "The weights became non-finite; learning_rate="
                f"{self.learning_rate} is too large for this data (lower it, or "
                "standardize X and y). No weights were stored."
            )
        if not converged and self.tol is not None:
            warnings.warn(
                f"{type(self).__name__}: maximum iterations ({self.max_iter}) "
                "reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=2,
            )
        if self.early_stopping and stopper.best_params is not None:
            params = stopper.best_params
        history["best_validation_score"] = stopper.best_score
        return params, history

    def _batches(self, n_samples, rng):
        """A function returning one epoch's batches of row indices (None: all rows)."""
        if self.batch_size is None or self.batch_size >= n_samples:
            return lambda: [None]
        import torch

        generator = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        size = self.batch_size

        def epoch():
            order = torch.randperm(n_samples, generator=generator)
            return [order[i : i + size] for i in range(0, n_samples, size)]

        return epoch

    @staticmethod
    def _epoch(state, X, Y, config, batches):
        """One pass over the data; the mean of the batch losses, as a float."""
        total, n = 0.0, X.shape[0]
        for idx in batches():
            if idx is None:
                return _step_(state, X, Y, config).item()
            idx = idx.to(X.device)
            total += _step_(state, X[idx], Y[idx], config).item() * len(idx)
        return total / n

    def _validation_score(self, params, X_val, Y_val, device):
        import torch

        with torch.no_grad():
            X_t = torch.as_tensor(X_val.astype(np.float32), device=device)
            pred = _forward(params, X_t, self.activation).double().cpu().numpy()
        if not np.all(np.isfinite(pred)):
            return -np.inf
        return r2_score(Y_val, pred)

    def _store(self, params, history, n_outputs):
        W, b, a, c = [p.detach().cpu().double().numpy() for p in params]
        self.coefs_ = [W, a]
        self.intercepts_ = [b, c]
        self.n_outputs_ = n_outputs
        self.n_iter_ = history["n_iter"]
        self.loss_curve_ = history["loss_curve"]
        self.best_loss_ = min(self.loss_curve_)
        if self.early_stopping:
            self.validation_scores_ = history["validation_scores"]
            self.best_validation_score_ = history["best_validation_score"]
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _measure_sharpness(self, params, X, Y, rng):
        """``sharpness_`` of the mean training loss at ``params`` (see Attributes)."""
        if self.sharpness is None:
            return None
        from .sharpness import torch_sharpness

        n_trained = 4 if self.train_output_layer else 2
        leaves = [p.detach().clone().requires_grad_(i < n_trained) for i, p in enumerate(params)]
        activation, n = self.activation, X.shape[0]

        def loss_fn():
            W, b, a, c = leaves
            out = _autograd_activation(activation, X @ W + b) @ a + c
            return 0.5 * (out - Y).square().sum() / n

        return torch_sharpness(
            loss_fn,
            leaves[:n_trained],
            self.sharpness,
            rho=self.rho,
            random_state=int(rng.randint(np.iinfo(np.int32).max)),
            **_SHARPNESS_OPTIONS.get(self.sharpness, {}),
        )

    # -------------------------------------------------------------- predict

    def predict(self, X):
        """Predict with the fitted network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictions; 1-d when there is one output.
        """
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        W, a = self.coefs_
        b, c = self.intercepts_
        Z = X @ W + b
        y_pred = NUMPY_ACTIVATIONS[self.activation](Z) @ a + c
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


_FITTED = (
    "coefs_",
    "intercepts_",
    "n_outputs_",
    "n_iter_",
    "loss_curve_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
    "sharpness_",
)

#: Settings of the sharpness measures at the end of ``fit``: Lanczos stops
#: when its residual bound is 1e-4 of the eigenvalue, which leaves the
#: eigenvalue itself accurate to about the square of that (times the inverse
#: relative gap), and costs a few dozen Hessian-vector products.
_SHARPNESS_OPTIONS = {"top_eigenvalue": {"tol": 1e-4}}


def _check_finite(loss, iteration, learning_rate):
    if not math.isfinite(loss):
        raise ValueError(
            f"The training loss became non-finite at iteration {iteration}: "
            f"learning_rate={learning_rate} is too large for this data (lower it, "
            "or standardize X and y). No weights were stored."
        )


def _all_finite(params):
    import torch

    return all(bool(torch.isfinite(p).all()) for p in params)


class _Stopper:
    """MLPRegressor's no-improvement rule, on the loss or the validation score."""

    def __init__(self, tol, n_iter_no_change, on_validation):
        # tol=None: never stop, but still track the best validation weights
        self.enabled = tol is not None
        self.tol = 0.0 if tol is None else tol
        self.patience, self.on_validation = n_iter_no_change, on_validation
        self.best_loss, self.best_score, self.best_params = np.inf, None, None
        self.count = 0

    def update(self, loss, score, params):
        """Record one iteration; True when training should stop."""
        if self.on_validation:
            best = -np.inf if self.best_score is None else self.best_score
            self.count = self.count + 1 if score < best + self.tol else 0
            if score > best:
                self.best_score = score
                self.best_params = [p.clone() for p in params]
        else:
            self.count = self.count + 1 if loss > self.best_loss - self.tol else 0
            self.best_loss = min(self.best_loss, loss)
        return self.enabled and self.count > self.patience
