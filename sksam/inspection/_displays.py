"""Displays in scikit-learn's style: training curves, GD-vs-SAM comparisons, landscapes.

Each display stores its data in ``__init__``, draws in ``plot`` (returning
``self`` with the matplotlib handles as attributes ending in ``_``) and is
built from fitted estimators by a ``from_*`` class method. matplotlib is
imported only when something is drawn.
"""

import importlib
import warnings

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.compose import TransformedTargetRegressor
from sklearn.metrics import accuracy_score, mean_squared_error
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._base import user_stacklevel


def require(module, caller):
    """``module`` imported, or an ImportError saying who needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.partition(".")[0]
        raise ImportError(f"{caller} requires {package}: pip install {package}") from exc


def target_axes(display, ax, **subplots_kwargs):
    """``ax``, or the axes of a new figure (pyplot is imported only to make one)."""
    if ax is None:
        plt = require("matplotlib.pyplot", f"{type(display).__name__}.plot")
        _, ax = plt.subplots(**subplots_kwargs)
    return ax


def drawn(display, ax, attribute="ax_"):
    """``display`` with its axes (``ax_``, or ``axes_`` for a row of panels) and ``figure_`` set."""
    setattr(display, attribute, ax)
    display.figure_ = ax[0].figure if isinstance(ax, np.ndarray) else ax.figure
    return display


def final_estimator(estimator):
    """The fitted model inside a fitted Pipeline / TransformedTargetRegressor.

    Displays read ``loss_curve_``, ``sharpness_``, ``solver`` and ``rho`` from
    the sksam estimator that a pipeline (or a target transformer) wraps.
    """
    while True:
        if isinstance(estimator, Pipeline):
            check_is_fitted(estimator)
            estimator = estimator[-1]
        elif isinstance(estimator, TransformedTargetRegressor):
            check_is_fitted(estimator, "regressor_")
            estimator = estimator.regressor_
        else:
            return estimator


def param_prefix(estimator):
    """The ``set_params`` prefix that reaches the final (unfitted) model.

    ``''`` for a bare estimator, ``'samkernelregressor__'`` for
    ``make_pipeline(StandardScaler(), SAMKernelRegressor())``,
    ``'regressor__samkernelregressor__'`` inside a
    ``TransformedTargetRegressor``, and so on.
    """
    prefix = ""
    while True:
        if isinstance(estimator, Pipeline):
            name, estimator = estimator.steps[-1]
            prefix += f"{name}__"
        elif isinstance(estimator, TransformedTargetRegressor):
            estimator = estimator.regressor
            prefix += "regressor__"
        else:
            return prefix, estimator


def _label_of(estimator):
    """``'sam (rho=0.1)'``-style label of a fitted sksam estimator."""
    estimator = final_estimator(estimator)
    solver = getattr(estimator, "solver", type(estimator).__name__)
    rho = getattr(estimator, "rho", None)
    if solver == "gd" or rho is None:
        return str(solver)
    return f"{solver} (rho={rho:g})"


def sharpness_or_nan(estimator):
    """``sharpness_``, or NaN when the estimator was fitted with ``sharpness=None``."""
    value = getattr(final_estimator(estimator), "sharpness_", None)
    return np.nan if value is None else value


def _error_of(estimator, error):
    """The test error and its axis label: ``error``, else MSE or 1 - accuracy."""
    if error is not None:
        return getattr(error, "__name__", "test error"), error
    if is_classifier(estimator):
        return "error rate", lambda y_true, y_pred: 1.0 - accuracy_score(y_true, y_pred)
    return "test MSE", mean_squared_error


def _check_labels(labels, n, what):
    """Raise unless there is one label per curve (``zip`` would drop the extra ones)."""
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of strings, one per curve; got {labels!r}.")
    if len(labels) != n:
        raise ValueError(
            f"labels must hold one entry per curve: got {len(labels)} label(s) for {n} {what}."
        )


def _labels_for(estimators, labels):
    if labels is None:
        labels = [_label_of(estimator) for estimator in estimators]
    _check_labels(labels, len(estimators), "estimators")
    return list(labels)


def _check_test_data(X_test, y_test):
    if (X_test is None) != (y_test is None):
        raise ValueError("Give both X_test and y_test, or neither.")
    return X_test is not None


def _curve_unit(finals):
    """``'epoch'`` when every estimator records a loss per epoch (the nets)."""
    per_epoch = ["max_epochs" in f.get_params(deep=False) for f in finals]
    if all(per_epoch):
        return "epoch"
    if any(per_epoch):
        return "iteration (epoch for the nets)"
    return "iteration"


class TrainingCurveDisplay:
    """Training loss along the iterations of one or more fitted estimators.

    Use :meth:`from_estimators` (or :meth:`from_estimator`) to build it from
    fitted sksam estimators, which all record ``loss_curve_``. A fitted
    :class:`~sklearn.pipeline.Pipeline` or
    :class:`~sklearn.compose.TransformedTargetRegressor` is accepted too: the
    curve is that of the sksam estimator it ends with.

    Parameters
    ----------
    loss_curves : list of array-like
        One training-loss curve per estimator.
    labels : list of str, default=None
        Legend entries; ``'curve 0'``, ``'curve 1'``, ... when omitted.
    x_label : str, default='iteration'
        What one point of a curve is: ``'iteration'`` (a step of the kernel
        and two-layer estimators) or ``'epoch'`` (the torch nets record one
        loss per epoch).

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

    def __init__(self, *, loss_curves, labels=None, x_label="iteration"):
        self.loss_curves = loss_curves
        self.labels = labels
        self.x_label = x_label

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
            This display, with the matplotlib handles set.
        """
        ax = target_axes(self, ax)
        labels = self.labels or [f"curve {i}" for i in range(len(self.loss_curves))]
        _check_labels(labels, len(self.loss_curves), "loss curves")
        self.lines_ = [
            ax.plot(np.arange(1, len(curve) + 1), curve, label=label, **line_kwargs)[0]
            for curve, label in zip(self.loss_curves, labels)
        ]
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel(self.x_label)
        ax.set_ylabel("training loss")
        ax.legend()
        return drawn(self, ax)

    @classmethod
    def from_estimators(cls, estimators, *, labels=None, ax=None, log_scale=True):
        """Plot the ``loss_curve_`` of several fitted estimators.

        Parameters
        ----------
        estimators : list of fitted estimators
            Each must have a ``loss_curve_`` attribute, or be a pipeline
            (or target transformer) that ends with one that has.
        labels : list of str, default=None
            Legend entries; built from ``solver`` and ``rho`` when omitted.
        ax : matplotlib Axes, default=None
            Axes to draw on.
        log_scale : bool, default=True
            Logarithmic y axis.

        Returns
        -------
        display : TrainingCurveDisplay
            The display, drawn.
        """
        finals = [final_estimator(estimator) for estimator in estimators]
        for final in finals:
            check_is_fitted(final)
            if not hasattr(final, "loss_curve_"):
                raise ValueError(
                    f"{type(final).__name__} has no loss_curve_: TrainingCurveDisplay "
                    "plots the training loss that sksam's estimators record."
                )
        display = cls(
            loss_curves=[np.asarray(f.loss_curve_) for f in finals],
            labels=_labels_for(finals, labels),
            x_label=_curve_unit(finals),
        )
        return display.plot(ax=ax, log_scale=log_scale)

    @classmethod
    def from_estimator(cls, estimator, *, label=None, ax=None, log_scale=True):
        """Plot the ``loss_curve_`` of one fitted estimator.

        Parameters
        ----------
        estimator : fitted estimator
            Must have a ``loss_curve_`` attribute, or be a pipeline (or
            target transformer) that ends with one that has.
        label : str, default=None
            Legend entry; built from ``solver`` and ``rho`` when omitted.
        ax : matplotlib Axes, default=None
            Axes to draw on.
        log_scale : bool, default=True
            Logarithmic y axis.

        Returns
        -------
        display : TrainingCurveDisplay
            The display, drawn.
        """
        labels = None if label is None else [label]
        return cls.from_estimators([estimator], labels=labels, ax=ax, log_scale=log_scale)


#: Said by :class:`SolverComparisonDisplay` (and so by its ``from_estimator``).
SOLVER_COMPARISON_DEPRECATION = (
    "SolverComparisonDisplay is deprecated in 0.1.0 and will be removed in 0.3.0: it "
    "fits one split at one rho and shows no error bars. Use "
    "sksam.model_selection.compare_solvers (paired splits, rho chosen inside each "
    "training part, corrected intervals) and draw its result with "
    "sksam.inspection.ComparisonDisplay.from_result instead."
)


class SolverComparisonDisplay:
    """Test error and sharpness of the same model trained by several solvers.

    .. deprecated:: 0.1.0
        ``SolverComparisonDisplay`` is deprecated and will be removed in
        0.3.0: it fits one split at one ``rho`` with no error bars. Use
        :func:`sksam.model_selection.compare_solvers` and
        :meth:`ComparisonDisplay.from_result
        <sksam.inspection.ComparisonDisplay.from_result>` instead.

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

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.inspection import SolverComparisonDisplay
    >>> X, y = load_diabetes(return_X_y=True)
    >>> y = (y - y.mean()) / y.std()
    >>> display = SolverComparisonDisplay.from_estimator(
    ...     SAMKernelRegressor(rho=0.1, max_iter=50), X[:300], y[:300],
    ...     X[300:], y[300:])  # doctest: +SKIP
    >>> display.labels  # doctest: +SKIP
    ['gd', 'sam (rho=0.1)']
    """

    def __init__(self, *, labels, test_errors, sharpness, error_name="test error"):
        # here rather than in from_estimator, so that both ways in warn once
        warnings.warn(SOLVER_COMPARISON_DEPRECATION, FutureWarning, stacklevel=user_stacklevel())
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
            This display, with the matplotlib handles set.
        """
        axes = np.asarray(
            target_axes(self, axes, ncols=2, figsize=(9, 3.5), layout="constrained")
        ).ravel()
        colors = [f"C{i}" for i in range(len(self.labels))]
        self.bars_ = []
        for ax, values, name in zip(
            axes, (self.test_errors, self.sharpness), (self.error_name, "sharpness")
        ):
            self.bars_.append(ax.bar(self.labels, values, color=colors))
            ax.bar_label(self.bars_[-1], fmt="%.3g")
            ax.set_ylabel(name)
        return drawn(self, axes, "axes_")

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
        estimator : estimator
            An unfitted sksam estimator, or a Pipeline or
            TransformedTargetRegressor that ends with one: the template,
            cloned with ``solver`` set to each of ``solvers`` (all other
            parameters, ``rho`` included, kept). In a pipeline the solver of
            its final step is set.
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
            The display, drawn.
        """
        error_name, error = _error_of(estimator, error)
        prefix, _ = param_prefix(estimator)
        fitted = [
            clone(estimator).set_params(**{prefix + "solver": solver}).fit(X, y)
            for solver in solvers
        ]
        display = cls(
            labels=[_label_of(e) for e in fitted],
            test_errors=np.array([error(y_test, e.predict(X_test)) for e in fitted]),
            sharpness=np.array([sharpness_or_nan(e) for e in fitted], dtype=float),
            error_name=error_name,
        )
        display.estimators_ = fitted
        return display.plot(axes=axes)


def _step_param(estimator):
    """Name of the parameter that counts training steps (or epochs)."""
    params = estimator.get_params(deep=False)
    for name in ("max_iter", "max_epochs"):
        if name in params:
            if "warm_start" not in params:
                raise ValueError(
                    f"{type(estimator).__name__} has no warm_start parameter; "
                    "SharpnessCurveDisplay continues one fit from checkpoint to "
                    "checkpoint. (For kernel regression the Hessian does not depend "
                    "on the iterate: its sharpness is the same at every step.)"
                )
            return name
    raise ValueError(
        f"{type(estimator).__name__} has neither max_iter nor max_epochs; "
        "SharpnessCurveDisplay needs an estimator trained in steps or epochs."
    )


def _check_checkpoints(checkpoints):
    """Increasing positive integer step counts (a float such as 2.5 would be cut to 2)."""
    raw = np.asarray(checkpoints)
    if raw.ndim != 1 or len(raw) == 0 or not np.issubdtype(raw.dtype, np.number):
        raise ValueError(
            f"checkpoints must be positive step counts in a 1-d list; got {checkpoints!r}."
        )
    if not (np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))):
        raise ValueError(
            f"checkpoints must be whole step counts; got {checkpoints!r} (a step count "
            "such as 2.5 would be cut to 2 silently)."
        )
    raw = raw.astype(int)
    if np.any(raw <= 0):
        raise ValueError(f"checkpoints must be positive step counts; got {checkpoints!r}.")
    if np.any(np.diff(raw) <= 0):
        raise ValueError(f"checkpoints must be increasing; got {checkpoints!r}.")
    return raw


def _steps_done(model, planned):
    """The steps (epochs) the warm-started model has run in all: ``n_iter_``, cumulative."""
    n_iter = getattr(final_estimator(model), "n_iter_", None)
    return planned if n_iter is None else min(int(n_iter), planned)


def _warn_stopped(solver, done, target, last):
    warnings.warn(
        f"SharpnessCurveDisplay: solver={solver!r} stopped at step {done} before the "
        f"checkpoint {target} (its tol ended training); its curve ends there, and no "
        f"point is drawn at the checkpoints up to {last}. Set tol=None to train to "
        "every checkpoint.",
        UserWarning,
        stacklevel=3,
    )


class SharpnessCurveDisplay:
    """Sharpness of the weights along training, one curve per solver.

    Use :meth:`from_estimator` to train one clone of an estimator per solver
    with ``warm_start=True``, stopping at each of ``checkpoints`` to read its
    ``sharpness_`` (the measure set by its ``sharpness`` parameter).

    Parameters
    ----------
    steps : array-like of shape (n_checkpoints,) or (n_curves, n_checkpoints)
        Training steps (or epochs) at which the sharpness was measured; one
        row per curve when the curves stopped at different steps (NaN where
        a curve has no point: its training stopped before that checkpoint).
    sharpness : array-like of shape (n_curves, n_checkpoints)
        One row per solver (NaN where there is no point).
    labels : list of str
        Legend entries, one per row of ``sharpness``.
    measure : str, default='sharpness'
        Axis label: the name of the measure.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes drawn on.
    figure_ : matplotlib Figure
        The figure holding ``ax_``.
    lines_ : list of matplotlib Line2D
        One line per solver.
    estimators_ : list of fitted estimators
        Set by :meth:`from_estimator`: the fitted clones, one per solver,
        at the last checkpoint.

    Examples
    --------
    >>> from sksam import SAMTwoLayerRegressor
    >>> from sksam.datasets import make_teacher_student
    >>> from sksam.inspection import SharpnessCurveDisplay
    >>> X, y = make_teacher_student(n_samples=100, random_state=0)
    >>> model = SAMTwoLayerRegressor(n_hidden=20, rho=0.1, tol=None,
    ...                              random_state=0)
    >>> display = SharpnessCurveDisplay.from_estimator(
    ...     model, X, y, checkpoints=[10, 20, 40])  # doctest: +SKIP
    """

    def __init__(self, *, steps, sharpness, labels, measure="sharpness"):
        self.steps = steps
        self.sharpness = sharpness
        self.labels = labels
        self.measure = measure

    def plot(self, ax=None, *, log_scale=False, **line_kwargs):
        """Draw one line per solver.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure is made when omitted.
        log_scale : bool, default=False
            Logarithmic step axis.
        **line_kwargs : dict
            Passed to every ``ax.plot`` call.

        Returns
        -------
        self : SharpnessCurveDisplay
            This display, with the matplotlib handles set.
        """
        ax = target_axes(self, ax)
        kwargs = {"marker": "o", **line_kwargs}
        values = np.atleast_2d(np.asarray(self.sharpness, dtype=float))
        steps = np.broadcast_to(np.asarray(self.steps, dtype=float), values.shape)
        _check_labels(self.labels, len(values), "sharpness curves")
        self.lines_ = []
        for row_steps, row, label in zip(steps, values, self.labels):
            ran = np.isfinite(row_steps)  # a curve ends where its training stopped
            self.lines_.append(ax.plot(row_steps[ran], row[ran], label=label, **kwargs)[0])
        if log_scale:  # ticks at the steps reached, written in full
            ticks = np.unique(steps[np.isfinite(steps)]).astype(int)
            ax.set_xscale("log")
            ax.set_xticks(ticks, [str(step) for step in ticks])
            ax.minorticks_off()
        ax.set_xlabel("step")
        ax.set_ylabel(self.measure)
        ax.legend()
        return drawn(self, ax)

    @classmethod
    def from_estimator(
        cls, estimator, X, y, *, checkpoints, solvers=("gd", "sam"), ax=None, log_scale=False
    ):
        """Train one clone per solver and measure its sharpness at checkpoints.

        Parameters
        ----------
        estimator : estimator
            An unfitted sksam estimator, or a Pipeline or
            TransformedTargetRegressor that ends with one: the template, with
            a ``sharpness`` measure set (not None) and
            a ``max_iter`` (or ``max_epochs``) parameter. Each clone gets
            ``warm_start=True`` and the solver, and is fitted again from the
            weights of the previous checkpoint, so the whole curve costs one
            training run per solver (plus one sharpness computation per
            checkpoint). In a pipeline, the transformers are refitted at each
            checkpoint; they must be deterministic (as scalers are).
        X, y : array-like
            Training data; the sharpness is that of the training loss on it.
        checkpoints : array-like of int
            Increasing step (or epoch) counts at which to measure.
        solvers : sequence of str, default=('gd', 'sam')
            Solvers to compare.
        ax : matplotlib Axes, default=None
            Axes to draw on.
        log_scale : bool, default=False
            Logarithmic step axis.

        Returns
        -------
        display : SharpnessCurveDisplay
            The display, drawn.
        """
        checkpoints = _check_checkpoints(checkpoints)
        prefix, final = param_prefix(estimator)
        step_param = prefix + _step_param(final)
        measure = final.get_params().get("sharpness")
        if measure is None:
            raise ValueError(
                "SharpnessCurveDisplay needs a sharpness measure; the estimator has "
                "sharpness=None. Set sharpness='top_eigenvalue', 'trace' or 'rho'."
            )
        steps = np.full((len(solvers), len(checkpoints)), np.nan)
        values = np.full_like(steps, np.nan)
        fitted = []
        for row, solver in enumerate(solvers):
            model = clone(estimator).set_params(
                **{prefix + "solver": solver, prefix + "warm_start": True}
            )
            done = 0
            for column, target in enumerate(checkpoints):
                model.set_params(**{step_param: int(target - done)}).fit(X, y)
                done = _steps_done(model, done + int(target - done))
                steps[row, column] = done
                values[row, column] = sharpness_or_nan(model)
                if done < target:  # stopped by its tol: the later checkpoints never run
                    _warn_stopped(solver, done, target, checkpoints[-1])
                    break
            fitted.append(model)
        if np.all(steps == steps[0]):  # every curve reached every checkpoint
            steps = steps[0]
        display = cls(
            steps=steps,
            sharpness=values,
            labels=[_label_of(m) for m in fitted],
            measure=measure,
        )
        display.estimators_ = fitted
        return display.plot(ax=ax, log_scale=log_scale)


def _best_stops(reference, errors):
    """Each row's best column of ``reference`` and the gain of the best cells.

    Missing cells (NaN: a run that failed or was not made) are never a best
    stop: ``argmin`` would return the first NaN. A row with no value gets
    ``-1`` (no mark) and a NaN gain.
    """
    best_column = np.full(reference.shape[0], -1)
    best_gain = np.full(reference.shape[0], np.nan)
    for i, (ref_row, row) in enumerate(zip(reference, errors)):
        if np.any(np.isfinite(ref_row)):
            best_column[i] = np.nanargmin(ref_row)
            if np.any(np.isfinite(row)):
                best_gain[i] = 1.0 - np.nanmin(row) / np.nanmin(ref_row)
    return best_column, best_gain


class GainMapDisplay:
    """Heat map of one method's relative gain over a reference on a 2-d grid.

    The gain in each cell is ``1 - error / reference_error`` (``0.2``: 20%
    lower error than the reference; negative: worse). Columns are usually a
    training length, rows a property of the data (label noise, say). A
    marker shows, in each row, the column where the reference error is
    smallest (the reference stopped early at its best), and an optional last
    column gives the gain when both are stopped at their best column.

    Use :meth:`from_errors` to build it from two error grids.

    Parameters
    ----------
    gain : array-like of shape (n_rows, n_columns)
        Relative gain in each cell.
    row_values, column_values : array-like
        Tick labels of the rows and columns.
    row_name, column_name : str
        Axis labels.
    best_column : array-like of int of shape (n_rows,), default=None
        Column to mark in each row (none marked when omitted; ``-1``: no mark
        in that row).
    best_gain : array-like of shape (n_rows,), default=None
        Gain of the method's best cell of each row over the reference's best
        cell; drawn as an extra column on the right when given.
    reference_name : str, default='reference'
        Name of the reference in the legend (e.g. ``'GD'``).

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes drawn on.
    figure_ : matplotlib Figure
        The figure holding ``ax_``.
    mesh_ : matplotlib QuadMesh
        The coloured cells of the grid.
    texts_ : list of matplotlib Text
        The value written in each cell (row by row, extra column last).
    markers_ : matplotlib Line2D or None
        The marks of ``best_column``.

    Examples
    --------
    >>> import numpy as np
    >>> from sksam.inspection import GainMapDisplay
    >>> gd = np.array([[1.0, 0.8, 0.9], [1.0, 1.2, 1.5]])
    >>> sam = np.array([[1.1, 0.8, 0.7], [0.9, 0.9, 0.9]])
    >>> display = GainMapDisplay.from_errors(
    ...     gd, sam, row_values=[0.1, 1.0], column_values=[10, 100, 1000],
    ...     draw=False)
    >>> display.gain.round(2).tolist()
    [[-0.1, 0.0, 0.22], [0.1, 0.25, 0.4]]
    >>> display.best_column.tolist()
    [1, 0]
    """

    def __init__(
        self,
        *,
        gain,
        row_values,
        column_values,
        row_name="",
        column_name="",
        best_column=None,
        best_gain=None,
        reference_name="reference",
    ):
        self.gain = gain
        self.row_values = row_values
        self.column_values = column_values
        self.row_name = row_name
        self.column_name = column_name
        self.best_column = best_column
        self.best_gain = best_gain
        self.reference_name = reference_name

    def plot(self, ax=None, *, limit=None, cmap="RdBu", fmt="{:+.0%}"):
        """Draw the map.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure is made when omitted.
        limit : float, default=None
            Colour scale from ``-limit`` to ``limit`` (gain 0 is white);
            the largest absolute gain when omitted.
        cmap : str, default='RdBu'
            Diverging matplotlib colour map (blue: gain, red: loss).
        fmt : str, default='{:+.0%}'
            Format of the value written in each cell.

        Returns
        -------
        self : GainMapDisplay
            This display, with the matplotlib handles set.
        """
        plt = require("matplotlib.pyplot", f"{type(self).__name__}.plot")
        gain = np.asarray(self.gain, dtype=float)
        extra = None if self.best_gain is None else np.asarray(self.best_gain, dtype=float)
        ax = target_axes(self, ax, layout="constrained")
        if limit is None:
            values = gain if extra is None else np.concatenate([gain.ravel(), extra])
            finite = np.abs(values[np.isfinite(values)])
            limit = max(float(finite.max()) if finite.size else 0.0, 1e-12)
        cells = {"cmap": cmap, "norm": plt.Normalize(-limit, limit), "edgecolors": "white"}
        n_rows, n_cols = gain.shape
        self.mesh_ = ax.pcolormesh(gain, **cells)

        def write(x, y, value):  # white on the darkest cells
            color = "white" if abs(value) > 0.6 * limit else "black"
            return ax.text(x, y, fmt.format(value), ha="center", va="center", color=color)

        self.texts_ = [
            write(j + 0.5, i + 0.5, gain[i, j]) for i in range(n_rows) for j in range(n_cols)
        ]
        columns = list(np.arange(n_cols) + 0.5)
        column_labels = [str(v) for v in self.column_values]
        if extra is not None:
            left = n_cols + 0.25
            ax.pcolormesh([left, left + 1], np.arange(n_rows + 1), extra[:, None], **cells)
            self.texts_ += [write(left + 0.5, i + 0.5, extra[i]) for i in range(n_rows)]
            columns.append(left + 0.5)
            column_labels.append("both at\nbest stop")
        self.markers_ = None
        if self.best_column is not None:
            best = np.asarray(self.best_column)
            marked = best >= 0  # -1: a row without any value has no best stop
            self.markers_ = ax.plot(
                best[marked] + 0.5,
                np.arange(n_rows)[marked] + 0.8,
                linestyle="none",
                marker="v",
                color="black",
                label=f"{self.reference_name}'s best stop",
            )[0]
            ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        ax.set_xticks(columns, column_labels)
        ax.set_yticks(np.arange(n_rows) + 0.5, [str(v) for v in self.row_values])
        ax.set_xlabel(self.column_name)
        ax.set_ylabel(self.row_name)
        ax.set_xlim(0, columns[-1] + 0.5)
        ax.figure.colorbar(
            self.mesh_, ax=ax, label="relative gain", format="{x:+.0%}", extend="both"
        )
        return drawn(self, ax)

    @classmethod
    def from_errors(
        cls,
        reference_errors,
        errors,
        *,
        row_values,
        column_values,
        row_name="",
        column_name="",
        reference_name="reference",
        best_stop=True,
        ax=None,
        draw=True,
        **plot_kwargs,
    ):
        """Gain of ``errors`` over ``reference_errors``, cell by cell.

        Parameters
        ----------
        reference_errors : array-like of shape (n_rows, n_columns)
            Errors of the reference (for instance GD); positive.
        errors : array-like of shape (n_rows, n_columns)
            Errors of the method compared (for instance SAM).
        row_values, column_values : array-like
            Tick labels of the rows and columns.
        row_name, column_name : str
            Axis labels.
        reference_name : str, default='reference'
            Name of the reference in the legend (e.g. ``'GD'``).
        best_stop : bool, default=True
            Mark, in each row, the column where the reference error is
            smallest, and add the column "both stopped at their best":
            ``1 - min(errors) / min(reference_errors)`` over each row
            (columns are then training lengths). NaN cells (missing runs)
            are skipped; a row with none but NaN has no mark.
        ax : matplotlib Axes, default=None
            Axes to draw on.
        draw : bool, default=True
            Draw the map (False only computes it).
        **plot_kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : GainMapDisplay
            The display, drawn.
        """
        reference = np.asarray(reference_errors, dtype=float)
        errors = np.asarray(errors, dtype=float)
        if reference.ndim != 2 or reference.shape != errors.shape:
            raise ValueError(
                "reference_errors and errors must be 2-d arrays of the same shape; got "
                f"{reference.shape} and {errors.shape}."
            )
        if np.any(reference <= 0):  # NaN compares False: missing cells are allowed
            raise ValueError("reference_errors must be positive to define a relative gain.")
        if reference.shape != (len(row_values), len(column_values)):
            raise ValueError(
                f"errors have shape {reference.shape} but there are {len(row_values)} "
                f"row_values and {len(column_values)} column_values."
            )
        best_column = best_gain = None
        if best_stop:
            best_column, best_gain = _best_stops(reference, errors)
        display = cls(
            gain=1.0 - errors / reference,
            row_values=row_values,
            column_values=column_values,
            row_name=row_name,
            column_name=column_name,
            best_column=best_column,
            best_gain=best_gain,
            reference_name=reference_name,
        )
        return display.plot(ax=ax, **plot_kwargs) if draw else display


# --------------------------------------------------------------------------
# pictures of sharpness: loss landscapes and Hessian spectra
# --------------------------------------------------------------------------


class LossLandscapeDisplay:
    """The training (and test) loss along lines or planes through fitted weights.

    Three kinds, each built by a class method:

    * :meth:`from_interpolation`: the line from one estimator's weights to
      another's (GD's to SAM's, trained from the same initialization);
    * :meth:`from_estimators` with ``dims=1``: each estimator's loss along one
      random filter-normalized direction (Li et al., NeurIPS 2018), drawn
      with the same seed for all, overlaid;
    * :meth:`from_estimators` with ``dims=2``: the plane of two such
      directions, one panel per estimator.

    Directions, batching and the exact kernel case are described in
    :func:`sksam.sharpness.filter_normalized_direction` and
    :func:`sksam.sharpness.loss_along`. The estimators are left exactly as
    they were (weights, and the nets' train/eval flags).

    Parameters
    ----------
    kind : {'interpolation', '1d', '2d'}
        What the coordinates mean.
    coordinates : ndarray or tuple of two ndarrays
        The positions along the line (``(alphas, betas)`` for ``'2d'``).
    train_losses : list of ndarray
        One per curve (shape ``(resolution,)``, or ``(resolution,
        resolution)`` for ``'2d'``, rows along ``betas``).
    test_losses : list of ndarray, default=None
        The same on held-out data.
    labels : list of str, default=None
        One per curve.

    Attributes
    ----------
    ax_ : matplotlib Axes or ndarray of Axes
        The axes drawn on (one per estimator for ``'2d'``).
    figure_ : matplotlib Figure
    lines_ : list of matplotlib artists
        The curves (or contour sets) drawn.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.inspection import LossLandscapeDisplay
    >>> X, y = load_diabetes(return_X_y=True)
    >>> y = (y - y.mean()) / y.std()
    >>> fits = [SAMKernelRegressor(solver=s, max_iter=20, early_stopping=False).fit(X, y)
    ...         for s in ("gd", "sam")]
    >>> display = LossLandscapeDisplay.from_interpolation(
    ...     *fits, X, y, resolution=5, draw=False)
    >>> display.coordinates.tolist()  # 0: GD's fit, 1: SAM's
    [-0.5, 0.0, 0.5, 1.0, 1.5]
    >>> display.train_losses[0].round(3).tolist()  # exact: a closed form
    [0.487, 0.487, 0.487, 0.488, 0.489]
    """

    def __init__(self, *, kind, coordinates, train_losses, test_losses=None, labels=None):
        self.kind = kind
        self.coordinates = coordinates
        self.train_losses = train_losses
        self.test_losses = test_losses
        self.labels = labels

    def plot(self, ax=None, *, log_scale=False, levels=20):
        """Draw the landscape.

        Parameters
        ----------
        ax : matplotlib Axes (or array of Axes for ``'2d'``), default=None
            Where to draw; a new figure is made when omitted.
        log_scale : bool, default=False
            Logarithmic loss axis (``'2d'``: logarithmically spaced levels).
        levels : int, default=20
            Contour levels of the ``'2d'`` kind.

        Returns
        -------
        self : LossLandscapeDisplay
            This display, with the matplotlib handles set.
        """
        labels = self.labels or [f"model {i}" for i in range(len(self.train_losses))]
        _check_labels(labels, len(self.train_losses), "landscapes")
        if self.kind == "2d":
            return self._plot_plane(ax, labels, log_scale, levels)
        ax = target_axes(self, ax, layout="constrained")
        self.lines_ = []
        tests = self.test_losses or [None] * len(self.train_losses)
        for i, (train, test, label) in enumerate(zip(self.train_losses, tests, labels)):
            color = f"C{i}"
            self.lines_ += ax.plot(self.coordinates, train, color=color, label=f"{label}: train")
            if test is not None:
                self.lines_ += ax.plot(
                    self.coordinates, test, color=color, linestyle="--", label=f"{label}: test"
                )
        if self.kind == "interpolation":
            for position in (0.0, 1.0):
                ax.axvline(position, color="0.7", linewidth=0.8, zorder=0)
            start, _, end = labels[0].partition(" -> ")
            ax.set_xlabel(f"interpolation: 0 = {start}, 1 = {end or 'the other'}")
        else:
            ax.set_xlabel("step along a filter-normalized direction")
        if log_scale:
            ax.set_yscale("log")
        ax.set_ylabel("loss")
        ax.legend()
        return drawn(self, ax)

    def _plot_plane(self, axes, labels, log_scale, levels):
        n = len(self.train_losses)
        figure = {"figsize": (4 * n, 3.6), "layout": "constrained", "squeeze": False}
        axes = np.asarray(target_axes(self, axes, ncols=n, **figure)).ravel()
        alphas, betas = self.coordinates
        low = min(float(np.min(z)) for z in self.train_losses)
        high = max(float(np.max(z)) for z in self.train_losses)
        if log_scale and low > 0:
            contour_levels = np.geomspace(low, high, levels)
        else:
            contour_levels = np.linspace(low, high, levels)
        self.lines_ = []
        for ax, train, label in zip(axes, self.train_losses, labels):
            filled = ax.contourf(alphas, betas, train, levels=contour_levels, cmap="viridis")
            self.lines_.append(filled)
            ax.plot([0], [0], marker="*", color="white", markersize=10)
            ax.set_title(label)
            ax.set_xlabel("direction 1")
            ax.set_aspect("equal")
        axes[0].set_ylabel("direction 2")
        axes[0].figure.colorbar(self.lines_[0], ax=list(axes), label="training loss")
        return drawn(self, axes)

    @classmethod
    def from_interpolation(
        cls,
        start,
        end,
        X,
        y,
        *,
        X_test=None,
        y_test=None,
        resolution=41,
        span=(-0.5, 1.5),
        labels=None,
        verbose=0,
        ax=None,
        draw=True,
    ):
        """The loss on the line through two fitted estimators' weights.

        Parameters
        ----------
        start, end : fitted estimators
            Two fits of the same architecture (for a picture of GD against
            SAM: the same ``random_state``, hence the same initialization).
        X, y : array-like
            Training data.
        X_test, y_test : array-like, default=None
            Held-out data, drawn dashed on the same axes.
        resolution : int, default=41
            Points on the line.
        span : (float, float), default=(-0.5, 1.5)
            From where to where (``0``: ``start``, ``1``: ``end``).
        labels : (str, str), default=None
            Names of the two; from their solvers when omitted.
        verbose : int, default=0
            Show progress.
        ax : matplotlib Axes, default=None
            Where to draw.
        draw : bool, default=True
            Draw (False only computes).

        Returns
        -------
        display : LossLandscapeDisplay
        """
        from ..sharpness import fitted_loss, interpolation_losses
        from ..sharpness._landscape import check_grid

        names = _labels_for([start, end], labels)
        alphas = check_grid(resolution, span)

        def line(X_, y_):
            return interpolation_losses(
                fitted_loss(start, X_, y_), fitted_loss(end, X_, y_), alphas, verbose=verbose
            )

        test = [line(X_test, y_test)] if _check_test_data(X_test, y_test) else None
        display = cls(
            kind="interpolation",
            coordinates=alphas,
            train_losses=[line(X, y)],
            test_losses=test,
            labels=[f"{names[0]} -> {names[1]}"],
        )
        return display.plot(ax=ax) if draw else display

    @classmethod
    def from_estimators(
        cls,
        estimators,
        X,
        y,
        *,
        X_test=None,
        y_test=None,
        dims=1,
        resolution=25,
        span=1.0,
        ignore="biasbn",
        random_state=0,
        labels=None,
        verbose=0,
        batch_size=64,
        ax=None,
        draw=True,
    ):
        """Each estimator's loss along random filter-normalized directions.

        Parameters
        ----------
        estimators : list of fitted estimators
            The models, overlaid (``dims=1``) or side by side (``dims=2``).
        X, y : array-like
            Training data.
        X_test, y_test : array-like, default=None
            Held-out data (``dims=1``: dashed, on the same axes; ``dims=2``:
            computed and kept in ``test_losses``).
        dims : {1, 2}, default=1
            A line or a plane.
        resolution : int, default=25
            Points per axis (``resolution**2`` loss evaluations for a plane).
        span : float or (float, float), default=1.0
            The axis runs from ``-span`` to ``span`` (or over the pair).
        ignore : {'biasbn', None}, default='biasbn'
            Biases and normalization parameters: not moved (Li et al.'s
            default), or moved along a direction of their own norm.
        random_state : int, default=0
            Seeds the directions: the same draw for every estimator, each
            normalized to its own weights.
        labels : list of str, default=None
            One per estimator; from their solvers when omitted.
        verbose : int, default=0
            Show progress (tqdm if installed).
        batch_size : int, default=64
            Grid points evaluated together.
        ax : matplotlib Axes, default=None
            Where to draw.
        draw : bool, default=True
            Draw (False only computes).

        Returns
        -------
        display : LossLandscapeDisplay
        """
        from ..sharpness import fitted_loss
        from ..sharpness._landscape import check_grid, filter_normalized_direction, loss_along

        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2; got {dims!r}.")
        labels = _labels_for(estimators, labels)
        axis = check_grid(resolution, span)
        if dims == 1:
            points, coordinates = axis[:, None], axis
        else:
            A, B = np.meshgrid(axis, axis)  # rows along direction 2
            points, coordinates = np.column_stack([A.ravel(), B.ravel()]), (axis, axis)
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        has_test = _check_test_data(X_test, y_test)
        train, test = [], []
        for estimator in estimators:
            loss = fitted_loss(estimator, X, y)
            directions = [
                filter_normalized_direction(loss, ignore=ignore, random_state=seed + k)
                for k in range(dims)
            ]
            shape = (resolution,) * dims

            def values(view):
                return loss_along(
                    view, directions, points, batch_size=batch_size, verbose=verbose
                ).reshape(shape)

            train.append(values(loss))
            if has_test:
                test.append(values(fitted_loss(estimator, X_test, y_test)))
        display = cls(
            kind=f"{dims}d",
            coordinates=coordinates,
            train_losses=train,
            test_losses=test if has_test else None,
            labels=labels,
        )
        return display.plot(ax=ax) if draw else display

    @classmethod
    def from_estimator(cls, estimator, X, y, **kwargs):
        """:meth:`from_estimators` for one estimator.

        Parameters
        ----------
        estimator : fitted estimator
            The model.
        X, y : array-like
            Training data.
        **kwargs : dict
            Passed to :meth:`from_estimators`; ``label=`` names the curve.

        Returns
        -------
        display : LossLandscapeDisplay
            The display, drawn unless ``draw=False``.
        """
        label = kwargs.pop("label", None)
        return cls.from_estimators(
            [estimator], X, y, labels=None if label is None else [label], **kwargs
        )


class SharpnessSpectrumDisplay:
    """Hessian spectra of fitted estimators: density, top eigenvalues, layers.

    Built by :meth:`from_estimators` (GD's fit against SAM's, say), which
    reads each with :func:`sksam.sharpness.estimator_spectrum` and
    :func:`sksam.sharpness.estimator_sharpness`; three panels, each with the
    standard errors of the stochastic estimates as error bars:

    * ``'density'``: the spectral density by stochastic Lanczos quadrature
      (exact eigenvalues for the kernel models), on a symmetric-log axis;
    * ``'top'``: the ``k`` largest eigenvalues;
    * ``'layers'``: a sharpness measure per layer (parameter group).

    Parameters
    ----------
    labels : list of str
        One per estimator.
    densities : list of (ndarray, ndarray)
        ``(grid, density)`` per estimator.
    top_eigenvalues, top_stderr : list of ndarray
        Per estimator.
    layers : list of str
        The layer names (shared by the estimators).
    layer_values, layer_stderr : ndarray of shape (n_estimators, n_layers)
        The per-layer measure and its standard error.
    measure : str, default='trace'
        The per-layer measure.

    Attributes
    ----------
    axes_ : ndarray of matplotlib Axes
    figure_ : matplotlib Figure
    results_ : list of (SpectrumResult, SharpnessResult)
        Set by :meth:`from_estimators`.

    Examples
    --------
    >>> from sksam import SAMTwoLayerRegressor
    >>> from sksam.datasets import make_teacher_student
    >>> from sksam.inspection import SharpnessSpectrumDisplay
    >>> X, y = make_teacher_student(n_samples=50, random_state=0)
    >>> fits = [SAMTwoLayerRegressor(n_hidden=4, solver=s, random_state=0).fit(X, y)
    ...         for s in ("gd", "sam")]
    >>> display = SharpnessSpectrumDisplay.from_estimators(
    ...     fits, X, y, k=3, n_iter=20, draw=False)
    >>> display.layers
    ['hidden', 'output']
    """

    def __init__(
        self,
        *,
        labels,
        densities,
        top_eigenvalues,
        top_stderr,
        layers,
        layer_values,
        layer_stderr,
        measure="trace",
    ):
        self.labels = labels
        self.densities = densities
        self.top_eigenvalues = top_eigenvalues
        self.top_stderr = top_stderr
        self.layers = layers
        self.layer_values = layer_values
        self.layer_stderr = layer_stderr
        self.measure = measure

    def plot(self, axes=None, *, kinds=("density", "top", "layers")):
        """Draw the panels named in ``kinds``.

        Parameters
        ----------
        axes : array-like of matplotlib Axes, default=None
            One per kind; a new row of panels when omitted.
        kinds : sequence of {'density', 'top', 'layers'}
            Which panels, in order.

        Returns
        -------
        self : SharpnessSpectrumDisplay
            This display, with the matplotlib handles set.
        """
        unknown = set(kinds) - {"density", "top", "layers"}
        if unknown or not kinds:
            raise ValueError(
                f"kinds must be a non-empty list of 'density', 'top', 'layers'; got {kinds!r}."
            )
        _check_labels(self.labels, len(self.densities), "spectra")
        figure = {"figsize": (4.2 * len(kinds), 3.4), "layout": "constrained"}
        axes = target_axes(self, axes, ncols=len(kinds), **figure)
        axes = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()
        for ax, kind in zip(axes, kinds):
            getattr(self, f"_plot_{kind}")(ax)
            ax.legend()
        return drawn(self, axes, "axes_")

    def _plot_density(self, ax):
        for i, ((grid, density), label) in enumerate(zip(self.densities, self.labels)):
            ax.plot(grid, density, color=f"C{i}", label=label)
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(1e-6, min(float(np.max(d)) for _, d in self.densities) * 1e-6))
        ax.set_xscale("symlog", linthresh=_linear_threshold(self.densities))
        ax.set_xlabel("Hessian eigenvalue")
        ax.set_ylabel("spectral density")

    def _plot_top(self, ax):
        for i, (values, errors, label) in enumerate(
            zip(self.top_eigenvalues, self.top_stderr, self.labels)
        ):
            ranks = np.arange(1, len(values) + 1) + 0.1 * (i - (len(self.labels) - 1) / 2)
            ax.errorbar(
                ranks, values, yerr=errors, marker="o", linestyle="", color=f"C{i}", label=label
            )
        ax.set_xlabel("rank")
        ax.set_ylabel("top Hessian eigenvalues")

    def _plot_layers(self, ax):
        n = len(self.labels)
        positions = np.arange(len(self.layers))
        width = 0.8 / n
        for i, label in enumerate(self.labels):
            ax.bar(
                positions + (i - (n - 1) / 2) * width,
                self.layer_values[i],
                width,
                yerr=self.layer_stderr[i],
                capsize=3,
                color=f"C{i}",
                label=label,
            )
        ax.set_xticks(positions, self.layers, rotation=30, ha="right")
        ax.set_ylabel(f"{self.measure} per layer")

    @classmethod
    def from_estimators(
        cls,
        estimators,
        X,
        y,
        *,
        k=5,
        measure="trace",
        rho=None,
        n_iter=80,
        n_probes=5,
        n_seeds=3,
        max_samples=None,
        random_state=0,
        labels=None,
        kinds=("density", "top", "layers"),
        axes=None,
        draw=True,
    ):
        """Compute and draw the spectra of several fitted estimators.

        Parameters
        ----------
        estimators : list of fitted estimators
            Of the same architecture for the ``'layers'`` panel.
        X, y : array-like
            The data of the loss (the training data).
        k : int, default=5
            Top eigenvalues.
        measure : str, default='trace'
            Per-layer measure (:data:`~sksam.sharpness.MEASURES`).
        rho : float, default=None
            Its radius, if it needs one (each estimator's ``rho`` when None).
        n_iter, n_probes : int, default=80, 5
            Lanczos steps and probes of the density.
        n_seeds : int, default=3
            Seeds of the top eigenvalues and the seeded measures.
        max_samples : int, default=None
            Rows the loss is taken on (a subsample, stated in ``results_``).
        random_state : int, default=0
            Seeds everything.
        labels : list of str, default=None
            One per estimator.
        kinds : sequence of str, default=('density', 'top', 'layers')
            Panels to draw.
        axes : array-like of Axes, default=None
            Where to draw.
        draw : bool, default=True
            Draw (False only computes).

        Returns
        -------
        display : SharpnessSpectrumDisplay
        """
        from ..sharpness import estimator_sharpness, estimator_spectrum

        labels = _labels_for(estimators, labels)
        shared = {"n_seeds": n_seeds, "max_samples": max_samples, "random_state": random_state}
        results = [
            (
                estimator_spectrum(
                    estimator, X, y, k=k, n_iter=n_iter, n_probes=n_probes, **shared
                ),
                estimator_sharpness(
                    estimator, X, y, measure=measure, rho=rho, by="layer", **shared
                ),
            )
            for estimator in estimators
        ]
        names = results[0][1].groups
        if any(r[1].groups != names for r in results):
            raise ValueError(
                "The estimators have different layers; the per-layer panel compares "
                "models of one architecture."
            )
        densities = _shared_grid_densities([r[0] for r in results])
        display = cls(
            labels=labels,
            densities=densities,
            top_eigenvalues=[r[0].top_eigenvalues[0] for r in results],
            top_stderr=[r[0].top_stderr[0] for r in results],
            layers=names,
            layer_values=np.array([r[1].values for r in results]),
            layer_stderr=np.array([r[1].stderr for r in results]),
            measure=measure,
        )
        display.results_ = results
        return display.plot(axes=axes, kinds=kinds) if draw else display


def _shared_grid_densities(spectra):
    """Each spectrum's density on one grid (so that the curves compare)."""
    nodes = np.concatenate([np.concatenate(s.nodes[0]) for s in spectra])
    low, high = float(nodes.min()), float(nodes.max())
    sigma = 0.01 * max(high - low, abs(high), 1e-12)
    grid = np.linspace(low - 5 * sigma, high + 5 * sigma, 600)
    return [s.density(0, grid=grid, sigma=sigma) for s in spectra]


def _linear_threshold(densities):
    """The symlog axis's linear range: 1% of the largest eigenvalue magnitude."""
    extent = max(float(np.max(np.abs(grid))) for grid, _ in densities)
    return max(0.01 * extent, 1e-12)
