"""Model selection along the path: :class:`SAMKernelRegressorCV`, :class:`SAMKernelClassifierCV`."""

import functools
import time
from abc import ABC, abstractmethod
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    _fit_context,
    is_classifier,
)
from sklearn.metrics.pairwise import PAIRWISE_KERNEL_FUNCTIONS
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._base import FitTransaction, numeric_target, sample_weights
from ._kernel_classifier import SAMKernelClassifier
from ._kernel_docs import cv_sections_doc
from ._kernel_models import R2Score
from .kernel import SAMKernelRegressor, SharedBuild
from .model_selection._stats import corrected_paired_ttest

#: Parameters passed through to every :class:`SAMKernelRegressor` fitted.
_KERNEL_PARAMS = (
    "kernel",
    "gamma",
    "degree",
    "coef0",
    "kernel_params",
    "learning_rate",
    "n_components",
    "centers",
    "device",
    "dtype",
    "random_state",
)


class _BaseKernelCV(BaseEstimator, ABC):
    """The search shared by the CV estimators: one path per fold and ``(solver, rho)``.

    ``__init__`` takes the regressor search's parameters; a subclass names
    the estimator searched and implements the abstract hooks.
    """

    _parameter_constraints: dict = {
        # the parameters passed on are checked as the estimator checks them
        **{name: SAMKernelRegressor._parameter_constraints[name] for name in _KERNEL_PARAMS},
        "sharpness": SAMKernelRegressor._parameter_constraints["sharpness"],
        "kernel": [StrOptions(set(PAIRWISE_KERNEL_FUNCTIONS)), callable],  # not 'precomputed'
        "solvers": ["array-like"],
        "rhos": ["array-like"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "cv": ["cv_object"],
        "selection": [StrOptions({"one_se", "rope", "best"})],
        "rope": [Interval(Real, 0, None, closed="left")],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        solvers=("gd", "sam"),
        rhos=(0.01, 0.05, 0.1, 0.5),
        *,
        max_iter=10000,
        cv=5,
        kernel="rbf",
        gamma=None,
        degree=3,
        coef0=1,
        kernel_params=None,
        learning_rate="auto",
        n_components=None,
        centers=None,
        device=None,
        dtype=None,
        sharpness="rho",
        selection="rope",
        rope=0.01,
        n_jobs=None,
        random_state=None,
        verbose=0,
    ):
        self.solvers = solvers
        self.rhos = rhos
        self.max_iter = max_iter
        self.cv = cv
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.kernel_params = kernel_params
        self.learning_rate = learning_rate
        self.n_components = n_components
        self.centers = centers
        self.device = device
        self.dtype = dtype
        self.sharpness = sharpness
        self.selection = selection
        self.rope = rope
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @property
    @abstractmethod
    def _estimator_class(self):
        """The estimator whose paths are searched (a class attribute)."""

    @property
    @abstractmethod
    def _passed_params(self):
        """The names of the parameters passed on to it (a class attribute)."""

    @abstractmethod
    def _validate_targets(self, X, y):
        """Checked ``X`` and ``y``."""

    @abstractmethod
    def _check_folds(self, folds, n_samples):
        """Refuse folds the search cannot score."""

    @staticmethod
    @abstractmethod
    def _stage_score(pred, y_test):
        """The test-fold score of the predictions ``pred`` of one stage of a path."""

    def _grid(self):
        solvers = [str(s) for s in np.atleast_1d(self.solvers)]
        rhos = [float(r) for r in np.atleast_1d(self.rhos)]
        bad = [s for s in solvers if s not in ("gd", "sam", "usam")]
        if not solvers or bad:
            raise ValueError(
                f"solvers must be a non-empty list of 'gd', 'sam', 'usam', got {self.solvers!r}."
            )
        if not rhos or min(rhos) < 0 or not np.all(np.isfinite(rhos)):
            raise ValueError(f"rhos must be a non-empty list of finite floats >= 0, got {rhos!r}.")
        return solvers, rhos

    def _estimator(self, solver, rho, max_iter, sharpness=None):
        params = {name: getattr(self, name) for name in self._passed_params}
        # the number of steps is chosen by cross-validation: every fit (the folds'
        # and the refit) uses all its rows, without early stopping's validation part
        return self._estimator_class(
            solver=solver,
            rho=rho,
            max_iter=max_iter,
            sharpness=sharpness,
            early_stopping=False,
            **params,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Score every step of every ``(solver, rho)`` path per fold; refit the best.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets (class labels for a classifier).
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the training loss (the fold scores are unweighted, as
            ``GridSearchCV``'s default scoring).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        with FitTransaction(self):  # the search assigns as it goes: a rollback only
            return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight):
        X, y = self._validate_targets(X, y)
        sw = sample_weights(sample_weight, X.shape[0])
        solvers, rhos = self._grid()
        folds = list(check_cv(self.cv, y, classifier=is_classifier(self)).split(X, y))
        self._check_folds(folds, len(y))
        # one path per fold and (solver, rho); 'gd' is the same path for every rho.
        # One job per fold: its model (kernel matrix or A, b, and the Krylov basis
        # or eigendecomposition) is built once for all its paths, and only the
        # folds running at the same time hold one in memory
        paths = sorted({(s, 0.0 if s == "gd" else r) for s in solvers for r in rhos})
        estimators = [self._estimator(s, r, self.max_iter) for s, r in paths]
        scores = Parallel(n_jobs=self.n_jobs, verbose=self.verbose)(
            delayed(_fold_scores)(estimators, X, y, sw, train, test, self._stage_scorer)
            for train, test in folds
        )
        by_job = {
            (k, s, r): path_scores
            for k, fold_scores in enumerate(scores)
            for (s, r), path_scores in zip(paths, fold_scores)
        }
        self.cv_results_ = self._results(solvers, rhos, len(folds), by_job)
        self.best_index_, self.gain_test_ = _select_with_gain(
            self.cv_results_, folds, self.selection, self.rope
        )
        self.gain_ = None if self.gain_test_ is None else self.gain_test_.statistic
        self.gain_std_error_ = None if self.gain_test_ is None else self.gain_test_.std_error
        self.best_params_ = self.cv_results_["params"][self.best_index_]
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.solver_ = self.best_params_["solver"]
        self.rho_ = self.best_params_["rho"]
        self.n_iter_ = self.best_params_["max_iter"]
        self.estimator_ = self._estimator(self.solver_, self.rho_, self.n_iter_, self.sharpness)
        start = time.perf_counter()
        self.estimator_.fit(X, y, sample_weight=sw)
        self.refit_time_ = time.perf_counter() - start
        self.sharpness_ = self.estimator_.sharpness_
        return self

    def _results(self, solvers, rhos, n_folds, by_job):
        """``cv_results_`` in ``ParameterGrid`` order (max_iter, rho, solver)."""
        params = [
            {"max_iter": t, "rho": r, "solver": s}
            for t in range(1, self.max_iter + 1)
            for r in rhos
            for s in solvers
        ]
        split = np.empty((n_folds, len(params)))
        for k in range(n_folds):
            for i, p in enumerate(params):
                key = (k, p["solver"], 0.0 if p["solver"] == "gd" else p["rho"])
                split[k, i] = by_job[key][p["max_iter"] - 1]
        results = {"params": params}
        for name in ("max_iter", "rho", "solver"):
            results[f"param_{name}"] = np.ma.MaskedArray(
                [p[name] for p in params], mask=False, dtype=object
            )
        for k in range(n_folds):
            results[f"split{k}_test_score"] = split[k]
        mean = split.mean(axis=0)
        results["mean_test_score"] = mean
        results["std_test_score"] = split.std(axis=0)
        results["rank_test_score"] = rankdata(-mean, method="min").astype(np.int32)
        return results

    @classmethod
    def _stage_scorer(cls, y_test):
        """``score(pred)`` of one stage on the test fold ``y_test``."""
        return functools.partial(cls._stage_score, y_test=y_test)

    def _check_X(self, X):
        check_is_fitted(self)
        # feature names are checked here, as scikit-learn does; the inner model
        # was fitted on the validated array
        return validate_data(self, X, accept_sparse=("csr", "csc"), reset=False)

    def predict(self, X):
        """Predict with the refitted best model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictions; for the classifier, class labels of shape (n_samples,).
        """
        X = self._check_X(X)  # first: an unfitted search has no estimator_
        return self.estimator_.predict(X)


class SAMKernelRegressorCV(RegressorMixin, _BaseKernelCV):
    __doc__ = (
        r"""Kernel regression by GD or SAM, the solver, ``rho`` and number of steps chosen by CV.

    In the style of scikit-learn's ``RidgeCV``: for every fold and
    every ``(solver, rho)``, one :class:`SAMKernelRegressor` is fitted with
    ``max_iter`` steps and scored (:math:`R^2` on the held-out fold) at
    **every** step of its path, which costs no more fits since the path
    gives every intermediate model (:meth:`SAMKernelRegressor.staged_predict`).
    The candidate grid is thus ``solvers x rhos x {1, ..., max_iter}``, the
    same as a :class:`~sklearn.model_selection.GridSearchCV` over
    ``{'solver': solvers, 'rho': rhos, 'max_iter': range(1, max_iter + 1)}``,
    for ``len(solvers) * len(rhos)`` paths per fold instead of ``max_iter``
    times as many fits; the paths of a fold share one kernel matrix and one
    Krylov basis (or eigendecomposition), built once, since they depend on
    neither the solver nor ``rho``. The best candidate is refitted on all
    the data. These fits
    run without early stopping (``early_stopping=False``, whatever the size of
    the data): the search chooses the number of steps, on all the rows of each
    training fold.
"""
        + cv_sections_doc(
            "SAMKernelRegressor",
            ":math:`R^2`",
            max_iter="""\
        The default is :class:`SAMKernelRegressor`'s (large data need that
        many steps). The search costs about linearly in ``max_iter`` (every
        step of every path is scored): on 500 samples the default grid takes
        about 6 s with ``max_iter=1000`` and 57 s with 10000 on one core, and
        small data rarely need more than 1000 steps.
""",
            cv_split="KFold",
        )
        + r"""
    See Also
    --------
    SAMKernelRegressor : One solver, radius and number of steps.
    sklearn.model_selection.GridSearchCV : The same choice, one fit per
        candidate.

    Examples
    --------
    >>> import numpy as np
    >>> from sksam import SAMKernelRegressorCV
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-3, 3, size=(100, 1))
    >>> y = np.sin(X).ravel() + 0.3 * rng.randn(100)
    >>> search = SAMKernelRegressorCV(rhos=[0.05, 0.2], max_iter=200, cv=3).fit(X, y)
    >>> sorted(search.best_params_)
    ['max_iter', 'rho', 'solver']
    """
    )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    _estimator_class = SAMKernelRegressor
    _passed_params = _KERNEL_PARAMS

    def _validate_targets(self, X, y):
        X, y = validate_data(
            self, X, y, accept_sparse=("csr", "csc"), multi_output=True, y_numeric=True
        )
        return X, numeric_target(y, type(self).__name__)

    def _check_folds(self, folds, n_samples):
        smallest = min(len(test) for _, test in folds)
        if smallest < 2:
            # R^2 of one sample is undefined: GridSearchCV scores it NaN, and the
            # path's R^2 would read 0 or 1 and pick a step silently
            raise ValueError(
                f"cv={self.cv!r} gives a test fold of {smallest} sample; R^2 needs at "
                f"least 2 test samples per fold. Use fewer folds (n_samples={n_samples})."
            )

    @staticmethod
    def _stage_score(pred, y_test):
        """R^2 of one stage (the validation score of the regressor's early stopping)."""
        Y_test = y_test.reshape(len(y_test), -1)
        return R2Score().rows(pred.reshape(Y_test.shape), Y_test)

    @classmethod
    def _stage_scorer(cls, y_test):
        """R^2 of one stage, its sums of the fold's targets computed once."""
        Y_test = y_test.reshape(len(y_test), -1)
        score = R2Score().scorer(Y_test)
        return lambda pred: score(pred.reshape(Y_test.shape))


def _fold_scores(estimators, X, y, sw, train, test, stage_scorer):
    """The scores on the test fold after each step of every estimator's path.

    The estimators differ only in solver and ``rho``: the paths share the
    fold's model (:class:`~sksam.kernel.SharedBuild`) and one
    ``stage_scorer(y_test)``, set up once per fold.
    """
    shared = SharedBuild()
    X_train, y_train, sw_train, X_test = X[train], y[train], sw[train], X[test]
    score = stage_scorer(y[test])
    fold_scores = []
    for estimator in estimators:
        # a fresh estimator per fold (the folds may run in threads), its parameters
        # the same objects (not clone's copies: a callable kernel is the user's)
        estimator = type(estimator)(**estimator.get_params(deep=False))
        estimator._validate_params()
        estimator._fit(X_train, y_train, sw_train, shared=shared)
        scores = [score(pred) for pred in estimator.staged_predict(X_test)]
        if len(scores) != estimator.max_iter:  # pragma: no cover - tol is None: every step
            raise RuntimeError(f"the path has {len(scores)} steps, expected {estimator.max_iter}")
        fold_scores.append(np.asarray(scores))
    return fold_scores


def _select_with_gain(cv_results, folds, selection, rope):
    """The chosen candidate, and the paired test of SAM's best against GD's best.

    The test is ``gain_test_``'s (the class docstrings define the gain);
    being optimistic for SAM, it makes keeping GD within noise the safer
    side. Without GD or without another solver: no test, the best candidate.
    """
    mean = cv_results["mean_test_score"]
    best = int(np.argmin(cv_results["rank_test_score"]))
    is_gd = np.array([p["solver"] == "gd" for p in cv_results["params"]])
    if is_gd.all() or not is_gd.any():
        return best, None
    best_gd = int(np.flatnonzero(is_gd)[np.argmax(mean[is_gd])])
    best_sam = int(np.flatnonzero(~is_gd)[np.argmax(mean[~is_gd])])
    split = np.array([cv_results[f"split{k}_test_score"] for k in range(len(folds))])
    test = corrected_paired_ttest(
        split[:, best_sam] - split[:, best_gd],
        [len(train) for train, _ in folds],
        [len(held_out) for _, held_out in folds],
        rope=rope,
    )
    if selection == "best" or is_gd[best]:
        return best, test
    keep_sam = test.statistic > test.std_error if selection == "one_se" else test.p_better >= 0.95
    return (best if keep_sam else best_gd), test


class SAMKernelClassifierCV(ClassifierMixin, _BaseKernelCV):
    __doc__ = (
        r"""Kernel classification by GD or SAM; solver, ``rho`` and number of steps chosen by CV.

    :class:`SAMKernelRegressorCV`'s search for :class:`SAMKernelClassifier`,
    in the style of scikit-learn's ``RidgeClassifierCV``: for
    every fold and every ``(solver, rho)``, one classifier is fitted with
    ``max_iter`` steps and its **accuracy** on the held-out fold is taken at
    every step of its path (:meth:`SAMKernelClassifier.staged_predict`). The
    candidates are ``solvers x rhos x {1, ..., max_iter}``, as for a
    :class:`~sklearn.model_selection.GridSearchCV` over
    ``{'solver': solvers, 'rho': rhos, 'max_iter': range(1, max_iter + 1)}``
    with ``scoring='accuracy'``, which picks the same candidate (the first in
    ``cv_results_`` order among equal mean accuracies). The best candidate is
    refitted on all the data.
"""
        + cv_sections_doc(
            "SAMKernelClassifier",
            "accuracy",
            max_iter="        As in :class:`SAMKernelRegressorCV` (whose note on the cost\n"
            "        applies).\n",
            cv_split="StratifiedKFold",
            class_weight="""\
    class_weight : dict, 'balanced' or None, default=None
        Class weights of the training loss, as in
        :class:`SAMKernelClassifier` (computed on each fold's training part);
        the fold accuracies are unweighted.
""",
            classes="""\
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
""",
        )
        + r"""
    See Also
    --------
    SAMKernelClassifier : One solver, radius and number of steps.
    SAMKernelRegressorCV : The same search for regression.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from sksam import SAMKernelClassifierCV
    >>> X, y = make_moons(120, noise=0.3, random_state=0)
    >>> search = SAMKernelClassifierCV(rhos=[0.05], gamma=2.0, max_iter=100, cv=3).fit(X, y)
    >>> sorted(search.best_params_)
    ['max_iter', 'rho', 'solver']
    """
    )

    _parameter_constraints: dict = {
        **_BaseKernelCV._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        solvers=("gd", "sam"),
        rhos=(0.01, 0.05, 0.1, 0.5),
        *,
        max_iter=10000,
        cv=5,
        kernel="rbf",
        gamma=None,
        degree=3,
        coef0=1,
        kernel_params=None,
        learning_rate="auto",
        class_weight=None,
        n_components=None,
        centers=None,
        device=None,
        dtype=None,
        sharpness="rho",
        selection="rope",
        rope=0.01,
        n_jobs=None,
        random_state=None,
        verbose=0,
    ):
        # the base stores the regressor's parameters: hand it ours but class_weight
        params = {k: v for k, v in locals().items() if k not in ("self", "class_weight")}
        _BaseKernelCV.__init__(self, **params)
        self.class_weight = class_weight

    _estimator_class = SAMKernelClassifier
    _passed_params = _KERNEL_PARAMS + ("class_weight",)

    def _validate_targets(self, X, y):
        X, y = validate_data(self, X, y, accept_sparse=("csr", "csc"))
        check_classification_targets(y)
        return X, y

    def _check_folds(self, folds, n_samples):
        """Any fold does: accuracy is defined on one sample."""

    @staticmethod
    def _stage_score(pred, y_test):
        """Accuracy of one stage, as ``scoring='accuracy'``."""
        return float(np.mean(pred == y_test))

    @property
    def classes_(self):
        """The class labels, sorted (those of ``estimator_``)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.classes_

    def decision_function(self, X):
        """Compute the outputs of the refitted best model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Outputs; for two classes, positive means ``classes_[1]``.
        """
        X = self._check_X(X)
        return self.estimator_.decision_function(X)
