"""Kernel classification trained by gradient descent or SAM: :class:`SAMKernelClassifier`.

The regressor's path; only the target coding and the validation score are its own.
"""

from numbers import Real

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets

from ._base import rescale_weights, winners
from ._kernel_docs import FIT_ATTRIBUTES_DOC, SHARPNESS_MEASURES_DOC, features_doc, kernel_doc
from ._kernel_features import is_dask
from ._kernel_models import AccuracyScore
from .kernel import Targets, _BaseSAMKernel


class SAMKernelClassifier(ClassifierMixin, _BaseSAMKernel):
    __doc__ = (
        r"""Kernel classification trained by gradient descent (GD) or SAM, from zero.

    :class:`SAMKernelRegressor` fitted to the classes coded as
    scikit-learn's ``RidgeClassifier`` codes them: one column per
    class, ``+1`` on the rows of that class and ``-1`` elsewhere (a single
    column, ``+1`` for ``classes_[1]``, for two classes). The model
    :math:`f(x) = \langle \theta, \phi(x) \rangle` is trained on the
    (weighted) mean squared loss to those codes by ``max_iter`` full-batch
    GD / SAM / USAM steps from :math:`\theta = 0`, along the path the
    regressor computes (the same parametrizations: exact, Nystroem, primal
    linear; the same torch and Dask modes); ``decision_function`` is the
    regressor's prediction and ``predict`` the class of the largest output
    (for two classes, ``classes_[1]`` where the output is positive).
    Early stopping keeps the step of the best validation accuracy.

    Parameters
    ----------
    solver : {'sam', 'gd', 'usam'}, default='sam'
        The update rule, as in :class:`SAMKernelRegressor`.
    rho : float, default=0.05
        Radius of the SAM perturbation, in the RKHS norm (all class columns
        jointly), as in :class:`SAMKernelRegressor`.
"""
        + kernel_doc("SAMKernelRegressor", "``'precomputed'`` included")
        + r"""
    max_iter : int, default=10000
        Number of steps, as in :class:`SAMKernelRegressor`: with early
        stopping (the default from 200 samples) the most steps, of which the
        validation accuracy keeps the best; below 200 samples choose the
        stopping step with :meth:`staged_predict` or
        :class:`SAMKernelClassifierCV`.
    tol : float or None, default=None
        As in :class:`SAMKernelRegressor`; with ``early_stopping`` the
        watched score is the validation accuracy.
    early_stopping : 'auto' or bool, default='auto'
        Hold out ``validation_fraction`` of the training data (stratified by
        class), train on the rest, and return the iterate with the best
        validation accuracy (weighted by ``sample_weight`` and
        ``class_weight``; the first such step on a tie). ``'auto'``: on from
        200 samples, as in :class:`SAMKernelRegressor`.
    validation_fraction : float, default=0.1
        Held-out fraction for ``early_stopping``.
    n_iter_no_change : int, default=10
        Steps without improvement before stopping (with a float ``tol``).
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes in the loss, multiplying ``sample_weight``, as
        in scikit-learn's ``RidgeClassifier``: ``{class_label:
        weight}``, or ``'balanced'`` for ``n_samples / (n_classes *
        np.bincount(y))``.
"""
        + SHARPNESS_MEASURES_DOC
        + r"""
        The measure stored in ``sharpness_``, of the squared training loss to the
        coded targets at the fitted weights, computed exactly as in
        :class:`SAMKernelRegressor` (all class columns jointly). The
        logit-normalized measure is refused: a squared loss has no logits.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split and the Nystroem centres.
    verbose : int, default=0
        Print the loss of every step and the size of the Krylov basis.
"""
        + features_doc("SAMKernelRegressor")
        + r"""

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    dual_coef_ : ndarray of shape (n_train, n_columns)
        The fitted :math:`\alpha`, one column per coded column (one for two
        classes; exact path only).
    coef_ : ndarray of shape (n_columns, n_features)
        The fitted weights (primal linear path only), as
        ``RidgeClassifier.coef_``.
    X_fit_ : {ndarray, sparse matrix} of shape (n_train, n_features)
        Training data without the validation part (exact path only).
    centers_ : ndarray of shape (`n_components_`, n_features)
        The Nystroem centres kept.
    n_components_ : int
        Dimension of the Nystroem or primal feature space.
"""
        + FIT_ATTRIBUTES_DOC
        + r"""

    See Also
    --------
    SAMKernelClassifierCV : Chooses the solver, ``rho`` and the number of
        steps by cross-validated accuracy.
    SAMKernelRegressor : The same path on numeric targets.
    sklearn.kernel_ridge.KernelRidge : On one-hot targets coded ``+-1``, the
        same model regularized by a ridge penalty.

    Notes
    -----
    With a dask ``X`` the labels ``y`` are read into memory (one per row);
    ``X`` is read chunk by chunk, as in the regressor.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from sksam import SAMKernelClassifier
    >>> X, y = make_moons(200, noise=0.2, random_state=0)
    >>> clf = SAMKernelClassifier(gamma=2.0, max_iter=300).fit(X, y)
    >>> clf.classes_
    array([0, 1])
    >>> clf.decision_function(X[:3]).shape
    (3,)
    >>> bool(clf.score(X, y) > 0.9)
    True
    """
    )

    _parameter_constraints: dict = {
        **_BaseSAMKernel._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        solver="sam",
        rho=0.05,
        *,
        kernel="rbf",
        gamma=None,
        degree=3,
        coef0=1,
        kernel_params=None,
        learning_rate="auto",
        max_iter=10000,
        tol=None,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=10,
        class_weight=None,
        sharpness="rho",
        random_state=None,
        verbose=0,
        n_components=None,
        centers=None,
        device=None,
        dtype=None,
    ):
        # the base stores the regressor's parameters: hand it ours but class_weight
        params = {k: v for k, v in locals().items() if k not in ("self", "class_weight")}
        _BaseSAMKernel.__init__(self, **params)
        self.class_weight = class_weight

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = False
        return tags

    _y_checks = {}
    _scale_hint = "standardize X"

    def _encode_targets(self, X, y, sw):
        """``+-1`` columns of the classes (one for two), the class weights applied."""
        if is_dask(y):
            y = y.compute()
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        check_classification_targets(y)
        binarizer = LabelBinarizer(pos_label=1, neg_label=-1).fit(y)
        classes = binarizer.classes_
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, "
                f"but the data contain only one class: {classes.tolist()[0]!r}."
            )
        Y = binarizer.transform(y).astype(np.float64)
        if self.class_weight is not None:
            _check_class_weight(self.class_weight)
            # the loss is a weighted mean: the products' scale is not the model's
            sw = sw * compute_sample_weight(self.class_weight, y)
            sw = rescale_weights(sw, "sample_weight times class_weight")
        return Targets(
            Y,
            sw,
            ravel_coef=False,
            ravel_decision=len(classes) == 2,
            stratify=y,  # used by the validation split only
            fitted={"classes_": classes},
        )

    def _validation_score(self):
        return AccuracyScore()

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Run ``max_iter`` steps of the solver from ``f = 0`` on the coded classes.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            Training data, or the kernel matrix (n_samples, n_samples) if
            ``kernel='precomputed'``. A dask array is read chunk by chunk
            (``n_components`` or the primal linear path only).
        y : array-like or dask array of shape (n_samples,)
            Class labels, of any type numpy sorts.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the mean loss, multiplied by the class
            weights; integer weights are equivalent to repeated rows.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight)

    def decision_function(self, X):
        """The fitted outputs, one per class (one for two classes).

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            Samples, or their kernel against the training samples if
            ``kernel='precomputed'``.

        Returns
        -------
        scores : ndarray (dask array for dask input) of shape (n_samples,) or \
                (n_samples, n_classes)
            Outputs, computed in blocks of rows; for two classes, positive
            means ``classes_[1]``.
        """
        return self._decision(X)

    def predict(self, X):
        """The class of the largest output (two classes: of the output's sign).

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            Samples, or their kernel against the training samples if
            ``kernel='precomputed'``.

        Returns
        -------
        y_pred : ndarray (dask array for dask input) of shape (n_samples,)
            Predicted class labels.
        """
        return self._labels(self.decision_function(X))

    def staged_decision_function(self, X):
        """Yield :meth:`decision_function` after each step of the returned model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Samples (kernel against the training samples if
            ``kernel='precomputed'``).

        Yields
        ------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Outputs after each step; the last is :meth:`decision_function`'s.
        """
        yield from self._staged_decision(X)

    def staged_predict(self, X):
        """Yield :meth:`predict` after each step of the returned model.

        One fit gives the whole accuracy-versus-iterations curve.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Samples (kernel against the training samples if
            ``kernel='precomputed'``).

        Yields
        ------
        y_pred : ndarray of shape (n_samples,)
            Predicted class labels after each step.
        """
        for scores in self._staged_decision(X):
            yield self._labels(scores)

    def _labels(self, scores):
        """Class labels of outputs (numpy or dask)."""
        if is_dask(scores):
            return scores.map_blocks(
                self._labels, dtype=self.classes_.dtype, drop_axis=1 if scores.ndim == 2 else []
            )
        return self.classes_[winners(scores.reshape(len(scores), -1))]


def _check_class_weight(class_weight):
    """Refuse a class weight that is negative, infinite or NaN, naming its class.

    ``compute_sample_weight`` takes any number; a negative weight makes the
    loss unbounded below and an infinite one a NaN loss, which numpy's checks
    then reported as "must not contain infs or NaNs".
    """
    if not isinstance(class_weight, dict):
        return  # 'balanced': finite and positive by construction
    for label, weight in class_weight.items():
        if not (isinstance(weight, Real) and np.isfinite(weight) and weight >= 0):
            raise ValueError(
                f"class_weight gives class {label!r} the weight {weight!r}; class "
                "weights must be finite and non-negative."
            )
