"""Displays in scikit-learn's style: training curves and GD-vs-SAM comparisons.

Each display stores its data in ``__init__``, draws in ``plot`` (returning
``self`` with the matplotlib handles as attributes ending in ``_``) and is
built from fitted estimators by a ``from_*`` class method. matplotlib is
imported only when something is drawn.
"""

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.metrics import accuracy_score, mean_squared_error
from sklearn.utils.validation import check_is_fitted


def _pyplot(caller):
    """matplotlib.pyplot, or an ImportError saying who needs it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"{caller} requires matplotlib: pip install matplotlib") from exc
    return plt


def _label_of(estimator):
    """``'sam (rho=0.1)'``-style label of a fitted sksam estimator."""
    solver = getattr(estimator, "solver", type(estimator).__name__)
    rho = getattr(estimator, "rho", None)
    if solver == "gd" or rho is None:
        return str(solver)
    return f"{solver} (rho={rho:g})"


def _sharpness_or_nan(estimator):
    """``sharpness_``, or NaN when the estimator was fitted with ``sharpness=None``."""
    value = getattr(estimator, "sharpness_", None)
    return np.nan if value is None else value


def _default_error(estimator):
    """Test error used when none is given: MSE, or 1 - accuracy."""
    if is_classifier(estimator):
        return "error rate", lambda y_true, y_pred: 1.0 - accuracy_score(y_true, y_pred)
    return "test MSE", mean_squared_error


class TrainingCurveDisplay:
    """Training loss along the iterations of one or more fitted estimators.

    Use :meth:`from_estimators` (or :meth:`from_estimator`) to build it from
    fitted sksam estimators, which all record ``loss_curve_``.

    Parameters
    ----------
    loss_curves : list of array-like
        One training-loss curve per estimator.
    labels : list of str, default=None
        Legend entries; ``'curve 0'``, ``'curve 1'``, ... when omitted.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes drawn on.
    figure_ : matplotlib Figure
        The figure holding ``ax_``.
    lines_ : list of matplotlib Line2D
        One line per curve.

    Examples
    --------
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.inspection import TrainingCurveDisplay
    >>> from sklearn.datasets import load_diabetes
    >>> X, y = load_diabetes(return_X_y=True)
    >>> fits = [SAMKernelRegressor(solver=s, rho=0.1, max_iter=50).fit(X, y)
    ...         for s in ("gd", "sam")]
    >>> display = TrainingCurveDisplay.from_estimators(fits)  # doctest: +SKIP
    """

    def __init__(self, *, loss_curves, labels=None):
        self.loss_curves = loss_curves
        self.labels = labels

    def plot(self, ax=None, *, log_scale=True, **line_kwargs):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure is made when omitted.
        log_scale : bool, default=True
            Logarithmic y axis (losses span decades).
        **line_kwargs : dict
            Passed to every ``ax.plot`` call.

        Returns
        -------
        self : TrainingCurveDisplay
        """
        plt = _pyplot(f"{type(self).__name__}.plot")

        if ax is None:
            _, ax = plt.subplots()
        labels = self.labels or [f"curve {i}" for i in range(len(self.loss_curves))]
        self.lines_ = [
            ax.plot(np.arange(1, len(curve) + 1), curve, label=label, **line_kwargs)[0]
            for curve, label in zip(self.loss_curves, labels)
        ]
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss")
        ax.legend()
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_estimators(cls, estimators, *, labels=None, ax=None, log_scale=True):
        """Plot the ``loss_curve_`` of several fitted estimators.

        Parameters
        ----------
        estimators : list of fitted estimators
            Each must have a ``loss_curve_`` attribute.
        labels : list of str, default=None
            Legend entries; built from ``solver`` and ``rho`` when omitted.
        ax : matplotlib Axes, default=None
            Axes to draw on.
        log_scale : bool, default=True
            Logarithmic y axis.

        Returns
        -------
        display : TrainingCurveDisplay
        """
        for estimator in estimators:
            check_is_fitted(estimator, "loss_curve_")
        if labels is None:
            labels = [_label_of(estimator) for estimator in estimators]
        display = cls(loss_curves=[np.asarray(e.loss_curve_) for e in estimators], labels=labels)
        return display.plot(ax=ax, log_scale=log_scale)

    @classmethod
    def from_estimator(cls, estimator, *, label=None, ax=None, log_scale=True):
        """Plot the ``loss_curve_`` of one fitted estimator.

        Parameters
        ----------
        estimator : fitted estimator
            Must have a ``loss_curve_`` attribute.
        label : str, default=None
            Legend entry; built from ``solver`` and ``rho`` when omitted.
        ax : matplotlib Axes, default=None
            Axes to draw on.
        log_scale : bool, default=True
            Logarithmic y axis.

        Returns
        -------
        display : TrainingCurveDisplay
        """
        labels = None if label is None else [label]
        return cls.from_estimators([estimator], labels=labels, ax=ax, log_scale=log_scale)


class SolverComparisonDisplay:
    """Test error and sharpness of the same model trained by several solvers.

    Use :meth:`from_estimator` to fit one clone of an estimator per solver
    and compare them on held-out data: the question the package exists to
    answer ("does SAM beat GD here, and by how much?").

    Parameters
    ----------
    labels : list of str
        One entry per fitted solver, e.g. ``['gd', 'sam (rho=0.1)']``.
    test_errors : array-like of shape (n_solvers,)
        Held-out error of each (lower is better).
    sharpness : array-like of shape (n_solvers,)
        ``sharpness_`` of each fitted estimator (NaN where not computed).
    error_name : str, default='test error'
        Axis label for ``test_errors``.

    Attributes
    ----------
    axes_ : ndarray of matplotlib Axes
        The two axes: error on the left, sharpness on the right.
    figure_ : matplotlib Figure
        The figure holding ``axes_``.
    bars_ : list of matplotlib BarContainer
        The bars of each axes.
    estimators_ : list of fitted estimators
        Set by :meth:`from_estimator`: the fitted clones, one per solver.
    """

    def __init__(self, *, labels, test_errors, sharpness, error_name="test error"):
        self.labels = labels
        self.test_errors = test_errors
        self.sharpness = sharpness
        self.error_name = error_name

    def plot(self, axes=None):
        """Draw test error and sharpness side by side.

        Parameters
        ----------
        axes : array-like of two matplotlib Axes, default=None
            Where to draw; a new 1x2 figure is made when omitted.

        Returns
        -------
        self : SolverComparisonDisplay
        """
        plt = _pyplot(f"{type(self).__name__}.plot")

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
        axes = np.asarray(axes).ravel()
        colors = [f"C{i}" for i in range(len(self.labels))]
        self.bars_ = []
        for ax, values, name in zip(
            axes, (self.test_errors, self.sharpness), (self.error_name, "sharpness")
        ):
            self.bars_.append(ax.bar(self.labels, values, color=colors))
            ax.bar_label(self.bars_[-1], fmt="%.3g")
            ax.set_ylabel(name)
        self.axes_, self.figure_ = axes, axes[0].figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y,
        X_test,
        y_test,
        *,
        solvers=("gd", "sam"),
        error=None,
        axes=None,
    ):
        """Fit ``estimator`` once per solver and compare the fits.

        Parameters
        ----------
        estimator : sksam estimator
            Unfitted template; cloned with ``solver`` set to each of
            ``solvers`` (all other parameters, ``rho`` included, kept).
        X, y : array-like
            Training data.
        X_test, y_test : array-like
            Held-out data the errors are measured on.
        solvers : sequence of str, default=('gd', 'sam')
            Solvers to compare.
        error : callable, default=None
            ``error(y_true, y_pred) -> float``, lower is better. Mean squared
            error for regressors and ``1 - accuracy`` for classifiers when
            omitted.
        axes : array-like of two matplotlib Axes, default=None
            Where to draw.

        Returns
        -------
        display : SolverComparisonDisplay
        """
        error_name, default_error = _default_error(estimator)
        if error is None:
            error = default_error
        else:
            error_name = getattr(error, "__name__", "test error")
        fitted = [clone(estimator).set_params(solver=solver).fit(X, y) for solver in solvers]
        display = cls(
            labels=[_label_of(e) for e in fitted],
            test_errors=np.array([error(y_test, e.predict(X_test)) for e in fitted]),
            sharpness=np.array([_sharpness_or_nan(e) for e in fitted], dtype=float),
            error_name=error_name,
        )
        display.estimators_ = fitted
        return display.plot(axes=axes)
