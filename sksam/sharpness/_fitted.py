"""A fitted estimator's training loss as a function of its weights.

:func:`fitted_loss` is the one place that knows how each sksam estimator
computes its loss: every measure, layer split, spectrum and landscape of a
*fitted* model reads it through the :class:`FittedLoss` it returns, so a new
estimator needs one new branch here and nothing elsewhere.

The view never writes to the estimator: its ``params`` are copies of the
fitted weights (``loss_of`` runs the model on whatever tensors it is given,
through ``torch.func.functional_call`` for the nets), and a net's module
is switched to eval mode only inside :meth:`FittedLoss.evaluating`, which puts
back every submodule's train/eval flag.
"""

import contextlib

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._hvp import check_count, eval_mode

#: The parameters of these torch modules are "normalization parameters" for
#: the filter-normalized directions of Li et al. (2018) (names, so that torch
#: is imported only when a net is read).
_NORM_LAYERS = ("_NormBase", "LayerNorm", "GroupNorm", "LocalResponseNorm", "RMSNorm")

#: The values ``by`` takes: one group of all the parameters, or one per layer.
BY = ("model", "layer")


class FittedLoss:
    """The mean training loss of a fitted model, as a function of its weights.

    Built by :func:`fitted_loss`; not meant to be built by hand (the
    parameters are kept as attributes of the same names).

    Parameters
    ----------
    kind : {'torch', 'quadratic'}
        ``'quadratic'`` for the kernel models, whose loss is exactly quadratic
        in their coefficients (every measure then has a closed form).
    names : list of str
        One name per tensor of ``params``.
    params : list of torch.Tensor
        Copies of the fitted weights (``requires_grad=True``); the estimator's
        own weights are never touched.
    groups : dict of str to list of int
        Layer (parameter group) name -> indices into ``params``.
    filter_axis : list of int or None
        Per tensor, the axis that indexes its filters (the output units of a
        layer: rows of a torch ``Linear`` weight, output channels of a
        ``Conv``; columns of the two-layer estimators' ``W`` and ``a``), or
        None for a bias or a normalization-layer parameter.
    loss_of : callable
        ``loss_of(tensors)``: the mean loss with ``tensors`` (shaped like
        ``params``) as the weights; the estimator is not touched.
    logits_of : callable, default=None
        ``logits_of(tensors)``: ``(logits, class indices)``, for classifiers.

    Attributes
    ----------
    module : torch.nn.Module or None
        The net's module (for the eval-mode switch), None otherwise.
    quadratic : object or None
        The kernel models' quadratic form (their closed forms read it).
    n_samples : int
        Rows the loss is the mean over.
    sample_index : ndarray of int
        Which rows of the ``X`` given they are (all of them unless
        ``max_samples`` drew a subsample).

    Examples
    --------
    >>> from sksam import SAMTwoLayerRegressor
    >>> from sksam.datasets import make_teacher_student
    >>> from sksam.sharpness import fitted_loss
    >>> X, y = make_teacher_student(n_samples=50, random_state=0)
    >>> model = SAMTwoLayerRegressor(n_hidden=4, max_iter=5, tol=None,
    ...                              random_state=0).fit(X, y)
    >>> loss = fitted_loss(model, X, y)
    >>> loss.names, list(loss.groups)
    (['hidden.weight', 'hidden.bias', 'output.weight', 'output.bias'], ['hidden', 'output'])
    """

    def __init__(self, *, kind, names, params, groups, filter_axis, loss_of, logits_of=None):
        self.kind = kind
        self.names = names
        self.params = params
        self.groups = groups
        self.filter_axis = filter_axis
        self.loss_of = loss_of
        self.logits_of = logits_of
        self.module = None
        self.quadratic = None
        self.n_samples = 0
        self.sample_index = None

    def loss_fn(self):
        """The mean loss at ``params`` (the ``loss_fn`` of every sharpness function).

        Returns
        -------
        loss : torch.Tensor
            A scalar.
        """
        return self.loss_of(self.params)

    def logits_fn(self):
        """``(logits, class indices)`` at ``params``, for the logit-normalized measure.

        Returns
        -------
        logits : torch.Tensor
            The model's outputs on the rows.
        classes : torch.Tensor
            The class index of each row.
        """
        return self.logits_of(self.params)

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode for the module (if any), each submodule's flag restored after.

        Yields
        ------
        None
            Inside the block the module is in eval mode.
        """
        with eval_mode(self.module):
            yield


def fitted_loss(estimator, X, y, *, sample_weight=None, max_samples=None, random_state=None):
    """The training loss of a fitted sksam estimator on ``(X, y)``, as a :class:`FittedLoss`.

    Parameters
    ----------
    estimator : fitted estimator
        A fitted :class:`~sksam.SAMKernelRegressor` (or classifier),
        two-layer estimator or net, or a fitted Pipeline (or
        TransformedTargetRegressor) that ends with one: ``X`` is passed
        through the pipeline's transformers (and ``y`` through the target
        transformer) first.
    X : array-like of shape (n_samples, n_features)
        The data the loss is taken on (usually the training data).
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Its targets.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights of the mean loss (the kernel classifier's class weights
        are applied on top, as in its ``fit``).
    max_samples : int, default=None
        At most this many rows, drawn without replacement by
        ``random_state`` (all rows when None).
    random_state : int, RandomState instance or None, default=None
        Draws the subsample.

    Returns
    -------
    loss : FittedLoss
        The loss as a function of copies of the weights.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.sharpness import fitted_loss
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = SAMKernelRegressor(max_iter=5).fit(X, y / 100)
    >>> loss = fitted_loss(model, X, y / 100, max_samples=100, random_state=0)
    >>> loss.kind, loss.n_samples
    ('quadratic', 100)
    """
    estimator, X, y = _unwrap(estimator, X, y)
    index = _subsample(len(X), max_samples, random_state)
    X, y = _rows(X, index), np.asarray(y)[index]
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)[index]
    for reader in (_kernel_loss, _two_layer_loss, _net_loss):
        loss = reader(estimator, X, y, sample_weight)
        if loss is not None:
            loss.n_samples, loss.sample_index = len(index), index
            return loss
    raise TypeError(
        f"{type(estimator).__name__} is not a sksam estimator: the sharpness of a fitted "
        "model is read from SAMKernel*, SAMTwoLayer* and SAMNet* estimators (or a "
        "Pipeline / TransformedTargetRegressor ending with one)."
    )


def read_loss(estimator, X, y, by, n_seeds, random_state, max_samples, sample_weight=None):
    """Check ``by`` and ``n_seeds``; the :func:`fitted_loss`, its groups by ``by``, the rng."""
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(map(repr, BY))}; got {by!r}.")
    check_count("n_seeds", n_seeds)
    rng = check_random_state(random_state)
    loss = fitted_loss(
        estimator, X, y, sample_weight=sample_weight, max_samples=max_samples, random_state=rng
    )
    groups = {"model": list(range(len(loss.params)))} if by == "model" else loss.groups
    return loss, groups, rng


def _unwrap(estimator, X, y):
    """The final sksam estimator, with ``X`` (and ``y``) transformed as it saw them."""
    while True:
        if isinstance(estimator, Pipeline):
            check_is_fitted(estimator)
            if len(estimator) > 1:
                X = estimator[:-1].transform(X)
            estimator = estimator[-1]
        elif isinstance(estimator, TransformedTargetRegressor):
            check_is_fitted(estimator, "regressor_")
            one_output = np.ndim(y) == 1
            y = estimator.transformer_.transform(np.asarray(y).reshape(len(y), -1))
            y = np.ravel(y) if one_output else y
            estimator = estimator.regressor_
        else:
            check_is_fitted(estimator)
            return estimator, X, y


def _subsample(n, max_samples, random_state):
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    if not (isinstance(max_samples, (int, np.integer)) and max_samples >= 1):
        raise ValueError(f"max_samples must be a positive integer or None; got {max_samples!r}.")
    rng = check_random_state(random_state)
    return np.sort(rng.choice(n, size=max_samples, replace=False))


def _rows(X, index):
    return X[index] if hasattr(X, "shape") else np.asarray(X)[index]


def _row_shares(sample_weight, n):
    """The weight of each row in the mean loss: ``1/n``, or the normalized weights."""
    if sample_weight is None:
        return np.full(n, 1.0 / n)
    total = sample_weight.sum()
    if not (np.all(sample_weight >= 0) and total > 0):
        raise ValueError("sample_weight must be non-negative with a positive sum.")
    return sample_weight / total


# --------------------------------------------------------------------------
# kernel models: a quadratic loss in the coefficients
# --------------------------------------------------------------------------


class _Quadratic:
    """``L(beta) = sum_i s_i ||F_i beta - Y_i||^2 / 2`` and its measure coordinates.

    ``F`` maps the coefficients ``beta`` (``dual_coef_`` for the exact path,
    the centre coefficients for Nystroem, ``coef_`` for the linear path) to
    the outputs. The measures that are not adaptive are taken where SAM
    perturbs, as the estimators' own ``sharpness_``: in the RKHS for the
    exact path, whose Hessian on the data has the eigenvalues of
    ``S^1/2 K S^1/2`` (``K`` the kernel matrix of ``X``), and in the
    orthonormal features ``theta`` for the feature-space paths.
    """

    def __init__(self, estimator, X, Y, shares):
        model = estimator._model
        self.model, self.Y, self.shares = model, Y, shares
        self.F = np.asarray(model.features(X), dtype=np.float64)
        self.beta = np.asarray(model.basis @ estimator._coef, dtype=np.float64)
        self.residual = self.F @ self.beta - Y
        self.X = X

    def adaptive_terms(self):
        """Hessian, gradient and weights in the coefficients ``beta``."""
        SF = self.shares[:, None] * self.F
        return self.F.T @ SF, SF.T @ self.residual, self.beta

    def eigen_terms(self):
        """Hessian eigenvalues and the gradient in its eigenbasis, where SAM perturbs."""
        root = np.sqrt(self.shares)
        if hasattr(self.model, "feature_map"):  # theta = orthonormal features
            Phi = np.asarray(self.model.feature_map(self.X, self.model.source.ops))
            RPhi = root[:, None] * Phi
            lam, U = np.linalg.eigh(RPhi.T @ RPhi)
            return lam, U.T @ (RPhi.T @ (root[:, None] * self.residual))
        K = self._kernel_matrix()
        lam, U = np.linalg.eigh(root[:, None] * K * root[None, :])
        lam = np.clip(lam, 0.0, None)  # rounding below 0 of a PSD kernel
        # g has the coordinate sqrt(lam_i) u_i^T S^1/2 r along the i-th direction
        return lam, np.sqrt(lam)[:, None] * (U.T @ (root[:, None] * self.residual))

    def _kernel_matrix(self):
        kernel = self.model.kernel
        if kernel.precomputed:
            if self.X.shape[0] != self.X.shape[1]:
                raise ValueError(
                    "With kernel='precomputed' the sharpness needs the square kernel "
                    "matrix of the rows it is taken on; got X of shape "
                    f"{self.X.shape}."
                )
            return np.asarray(self.X, dtype=np.float64)
        return np.asarray(kernel(self.X), dtype=np.float64)


def _kernel_loss(estimator, X, y, sample_weight):
    if not hasattr(estimator, "_model") or not hasattr(estimator, "_coef"):
        return None
    import torch

    X, _ = estimator._check_predict_input(X)
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    sw = np.ones(len(X)) if sample_weight is None else sample_weight
    target = estimator._encode_targets(X, np.asarray(y), sw)
    if hasattr(estimator, "classes_") and not np.array_equal(
        target.fitted.get("classes_"), estimator.classes_
    ):
        raise ValueError(
            f"y has the classes {target.fitted.get('classes_')}, the fitted model "
            f"{estimator.classes_}: the loss is taken on the classes the model was fitted on."
        )
    Y = np.asarray(target.Y, dtype=np.float64)
    quadratic = _Quadratic(estimator, X, Y, _row_shares(target.sample_weight, len(X)))
    F = torch.as_tensor(quadratic.F)
    Y_t = torch.as_tensor(Y)
    shares = torch.as_tensor(quadratic.shares)[:, None]

    def loss_of(tensors):
        (beta,) = tensors
        return 0.5 * (shares * (F @ beta - Y_t).square()).sum()

    beta = torch.as_tensor(quadratic.beta).clone().requires_grad_()
    # each output's coefficients are one "filter" (the weights of one output)
    loss = FittedLoss(
        kind="quadratic",
        names=["coef"],
        params=[beta],
        groups={"coef": [0]},
        filter_axis=[1],
        loss_of=loss_of,
    )
    loss.quadratic = quadratic
    return loss


# --------------------------------------------------------------------------
# two-layer estimators
# --------------------------------------------------------------------------


def _two_layer_loss(estimator, X, y, sample_weight):
    if not (hasattr(estimator, "coefs_") and hasattr(estimator, "_encode_targets")):
        return None
    import torch

    from .. import _two_layer_model as model

    X = torch.as_tensor(validate_data(estimator, X, reset=False, dtype=np.float64))
    Y, _ = estimator._encode_targets(np.asarray(y), True)
    Y = torch.as_tensor(np.asarray(Y, dtype=np.float64))
    shares = torch.as_tensor(_row_shares(sample_weight, len(X)))[:, None]
    (W, a), (b, c) = estimator.coefs_, estimator.intercepts_
    weights = [torch.as_tensor(np.array(v, dtype=np.float64)) for v in (W, b, a, c)]
    n_trained = 4 if estimator.train_output_layer else 2
    params = [w.clone().requires_grad_() for w in weights[:n_trained]]
    fixed = weights[n_trained:]

    def loss_of(tensors):
        return model.autograd_loss(
            [*tensors, *fixed], X, Y, estimator.activation, shares, loss=estimator._loss
        )

    logits_of = None
    if hasattr(estimator, "classes_"):
        classes = Y[:, 0].long() if Y.shape[1] == 1 else Y.argmax(dim=1)

        def logits_of(tensors):
            return model.autograd_outputs([*tensors, *fixed], X, estimator.activation), classes

    names = ["hidden.weight", "hidden.bias", "output.weight", "output.bias"][:n_trained]
    groups = {"hidden": [0, 1]}
    if n_trained == 4:
        groups["output"] = [2, 3]
    # X @ W + b: a hidden unit's incoming weights are a column of W (and of a)
    return FittedLoss(
        kind="torch",
        names=names,
        params=params,
        groups=groups,
        filter_axis=[1, None, 1, None][:n_trained],
        loss_of=loss_of,
        logits_of=logits_of,
    )


# --------------------------------------------------------------------------
# torch nets
# --------------------------------------------------------------------------


def _net_loss(estimator, X, y, sample_weight):
    if not hasattr(estimator, "net_"):
        return None
    import torch
    from torch.func import functional_call

    module = estimator.module_
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    first = named[0][1]
    X = validate_data(estimator, X, reset=False, dtype=np.float32)
    X = torch.as_tensor(X, device=first.device)
    if hasattr(estimator, "classes_"):
        from ..net import encode

        target = torch.as_tensor(
            encode(np.asarray(y), estimator.classes_, "the sharpness"), device=first.device
        )
    else:
        target = torch.as_tensor(
            np.asarray(y, dtype=np.float32).reshape(len(y), -1), device=first.device
        )
    criterion = estimator._loss()
    if sample_weight is not None:
        raise ValueError("sample_weight is not supported for the nets (their fit has none).")

    def outputs_of(tensors):
        return functional_call(module, dict(zip(names, tensors)), (X,))

    def loss_of(tensors):
        return criterion(outputs_of(tensors), target)

    logits_of = None
    if hasattr(estimator, "classes_"):

        def logits_of(tensors):
            return outputs_of(tensors), target

    names = [n for n, _ in named]
    owners = dict(module.named_modules())
    groups, filter_axis = {}, []
    for i, (name, p) in enumerate(named):
        owner_name = name.rpartition(".")[0]
        groups.setdefault(owner_name or "module", []).append(i)
        is_norm = any(t.__name__ in _NORM_LAYERS for t in type(owners[owner_name]).__mro__)
        filter_axis.append(None if (p.ndim <= 1 or is_norm) else 0)
    loss = FittedLoss(
        kind="torch",
        names=names,
        params=[p.detach().clone().requires_grad_() for _, p in named],
        groups=groups,
        filter_axis=filter_axis,
        loss_of=loss_of,
        logits_of=logits_of,
    )
    loss.module = module
    return loss
