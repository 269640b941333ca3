"""Displays: data kept, lines drawn, estimators fitted per solver."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin

from sksam.inspection import (
    GainMapDisplay,
    SharpnessCurveDisplay,
    SolverComparisonDisplay,
    TrainingCurveDisplay,
)

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


class _ShrinkRegressor(RegressorMixin, BaseEstimator):
    """Predicts a shrunken mean: 'sam' shrinks more, so results differ by solver."""

    def __init__(self, solver="gd", rho=0.1):
        self.solver = solver
        self.rho = rho

    def fit(self, X, y):
        shrink = 1.0 if self.solver == "gd" else 1.0 / (1.0 + self.rho)
        self.mean_ = shrink * np.mean(y)
        self.loss_curve_ = np.geomspace(1.0, 1e-3 * shrink, num=5)
        self.sharpness_ = 2.0 * shrink
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(20, 2)), rng.normal(loc=1.0, size=20)


def test_training_curves_drawn_with_solver_labels(data):
    X, y = data
    fits = [_ShrinkRegressor(solver=s).fit(X, y) for s in ("gd", "sam")]
    display = TrainingCurveDisplay.from_estimators(fits)
    assert [line.get_label() for line in display.lines_] == ["gd", "sam (rho=0.1)"]
    np.testing.assert_array_equal(display.lines_[1].get_ydata(), fits[1].loss_curve_)
    np.testing.assert_array_equal(display.lines_[0].get_xdata(), np.arange(1, 6))
    assert display.ax_.get_yscale() == "log"
    assert display.figure_ is display.ax_.figure


def test_training_curve_needs_fitted_estimator():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TrainingCurveDisplay.from_estimator(_ShrinkRegressor())


def test_solver_comparison_fits_one_clone_per_solver(data):
    X, y = data
    template = _ShrinkRegressor(rho=0.5)
    with pytest.warns(FutureWarning, match="compare_solvers") as record:
        display = SolverComparisonDisplay.from_estimator(template, X, y, X, y)
    assert [w.filename for w in record] == [__file__]  # once, at the user's line
    assert not hasattr(template, "mean_")  # the template itself is left unfitted
    assert [e.solver for e in display.estimators_] == ["gd", "sam"]
    expected = [np.mean((y - e.mean_) ** 2) for e in display.estimators_]
    np.testing.assert_allclose(display.test_errors, expected)
    np.testing.assert_allclose(display.sharpness, [2.0, 2.0 / 1.5])
    assert display.error_name == "test MSE"
    assert len(display.axes_) == 2 and len(display.bars_) == 2


def test_missing_sharpness_is_nan(data):
    X, y = data
    with pytest.warns(FutureWarning, match="deprecated.*ComparisonDisplay"):
        display = SolverComparisonDisplay(labels=["gd"], test_errors=[1.0], sharpness=[np.nan])
    display.plot()
    assert np.isnan(display.sharpness[0])


# -- pipelines and target transformers ------------------------------------------


def _wrapped(estimator):
    """``estimator`` inside a scaler pipeline inside a target transformer."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return TransformedTargetRegressor(
        make_pipeline(StandardScaler(), estimator), transformer=StandardScaler()
    )


def test_training_curve_reads_the_final_estimator_of_a_pipeline(data):
    from sksam import SAMKernelRegressor

    X, y = data
    model = _wrapped(SAMKernelRegressor(solver="sam", rho=0.2, max_iter=7, sharpness=None))
    model.fit(X, y)
    display = TrainingCurveDisplay.from_estimator(model)
    final = model.regressor_[-1]
    np.testing.assert_array_equal(display.lines_[0].get_ydata(), final.loss_curve_)
    assert display.lines_[0].get_label() == "sam (rho=0.2)"


def test_training_curve_of_an_unfitted_pipeline_says_not_fitted():
    from sklearn.exceptions import NotFittedError
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with pytest.raises(NotFittedError):
        TrainingCurveDisplay.from_estimator(make_pipeline(StandardScaler(), _ShrinkRegressor()))


def test_solver_comparison_sets_the_solver_of_the_final_step(data):
    from sksam import SAMKernelRegressor

    X, y = data
    template = _wrapped(SAMKernelRegressor(rho=0.3, max_iter=20))
    with pytest.warns(FutureWarning, match="compare_solvers"):
        display = SolverComparisonDisplay.from_estimator(template, X, y, X, y)
    finals = [e.regressor_[-1] for e in display.estimators_]
    assert [f.solver for f in finals] == ["gd", "sam"]
    assert display.labels == ["gd", "sam (rho=0.3)"]
    np.testing.assert_allclose(display.sharpness, [f.sharpness_ for f in finals])
    expected = [np.mean((y - e.predict(X)) ** 2) for e in display.estimators_]
    np.testing.assert_allclose(display.test_errors, expected)


# -- SharpnessCurveDisplay -------------------------------------------------------


class _CountingRegressor(_ShrinkRegressor):
    """Sharpness = steps trained so far (x 2 for 'sam'), with warm_start."""

    def __init__(self, solver="gd", rho=0.1, max_iter=5, warm_start=False, sharpness="trace"):
        super().__init__(solver=solver, rho=rho)
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.sharpness = sharpness

    def fit(self, X, y):
        done = getattr(self, "n_iter_", 0) if self.warm_start else 0
        self.n_iter_ = done + self.max_iter
        self.sharpness_ = self.n_iter_ * (2.0 if self.solver == "sam" else 1.0)
        self.mean_ = np.mean(y)
        return self


def test_sharpness_curve_trains_warm_between_checkpoints(data):
    X, y = data
    display = SharpnessCurveDisplay.from_estimator(
        _CountingRegressor(), X, y, checkpoints=[3, 10, 25]
    )
    np.testing.assert_array_equal(display.sharpness, [[3, 10, 25], [6, 20, 50]])
    assert [e.n_iter_ for e in display.estimators_] == [25, 25]
    assert display.measure == "trace" and display.ax_.get_ylabel() == "trace"
    np.testing.assert_array_equal(display.lines_[1].get_xdata(), [3, 10, 25])


def test_sharpness_curve_in_a_pipeline(data):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = data
    display = SharpnessCurveDisplay.from_estimator(
        make_pipeline(StandardScaler(), _CountingRegressor()), X, y, checkpoints=[4, 8]
    )
    np.testing.assert_array_equal(display.sharpness, [[4, 8], [8, 16]])


@pytest.mark.parametrize(
    "checkpoints, match",
    [([], "positive step counts"), ([0, 5], "positive step counts"), ([5, 3], "increasing")],
)
def test_sharpness_curve_rejects_bad_checkpoints(data, checkpoints, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        SharpnessCurveDisplay.from_estimator(_CountingRegressor(), X, y, checkpoints=checkpoints)


def test_sharpness_curve_needs_a_measure(data):
    X, y = data
    with pytest.raises(ValueError, match="sharpness=None"):
        SharpnessCurveDisplay.from_estimator(
            _CountingRegressor(sharpness=None), X, y, checkpoints=[1]
        )


def test_sharpness_curve_needs_a_step_parameter(data):
    X, y = data
    with pytest.raises(ValueError, match="neither max_iter nor max_epochs"):
        SharpnessCurveDisplay.from_estimator(_ShrinkRegressor(), X, y, checkpoints=[1])


def test_sharpness_curve_needs_warm_start(data):
    from sksam import SAMKernelRegressor

    X, y = data
    with pytest.raises(ValueError, match="SAMKernelRegressor has no warm_start parameter"):
        SharpnessCurveDisplay.from_estimator(SAMKernelRegressor(), X, y, checkpoints=[1, 2])


def test_training_curve_of_a_fitted_estimator_without_loss_curve_says_so(data):
    # a fitted Ridge is not "not fitted": it has no loss curve
    from sklearn.linear_model import Ridge

    X, y = data
    with pytest.raises(ValueError, match="Ridge has no loss_curve_"):
        TrainingCurveDisplay.from_estimators([Ridge().fit(X, y)])


def test_sharpness_curve_of_a_real_two_layer_net_matches_one_long_fit():
    from sksam import SAMTwoLayerRegressor
    from sksam.datasets import make_teacher_student

    X, y = make_teacher_student(n_samples=60, n_features=3, random_state=0)
    model = SAMTwoLayerRegressor(n_hidden=8, rho=0.1, tol=None, sharpness="trace", random_state=0)
    display = SharpnessCurveDisplay.from_estimator(model, X, y, checkpoints=[5, 12])
    for fitted, solver in zip(display.estimators_, ("gd", "sam")):
        one_fit = SAMTwoLayerRegressor(**{**model.get_params(), "solver": solver, "max_iter": 12})
        one_fit.fit(X, y)
        np.testing.assert_allclose(fitted.coefs_[0], one_fit.coefs_[0], rtol=1e-5, atol=1e-7)
    assert display.sharpness[:, -1] == pytest.approx([e.sharpness_ for e in display.estimators_])


# -- GainMapDisplay ---------------------------------------------------------------


def test_gain_map_is_one_minus_the_error_ratio():
    reference = np.array([[1.0, 0.5, 0.8], [2.0, 4.0, 8.0]])
    errors = np.array([[1.5, 0.5, 0.4], [1.0, 1.0, 1.0]])
    display = GainMapDisplay.from_errors(
        reference, errors, row_values=["a", "b"], column_values=[1, 2, 3]
    )
    np.testing.assert_allclose(display.gain, [[-0.5, 0.0, 0.5], [0.5, 0.75, 0.875]])
    np.testing.assert_array_equal(display.best_column, [1, 0])
    np.testing.assert_allclose(display.best_gain, [1 - 0.4 / 0.5, 1 - 1.0 / 2.0])
    assert [t.get_text() for t in display.texts_[:3]] == ["-50%", "+0%", "+50%"]
    assert len(display.texts_) == 6 + 2
    np.testing.assert_allclose(display.markers_.get_xdata(), [1.5, 0.5])
    assert display.figure_ is display.ax_.figure
    errors[0, 2] = 0.9  # the method's best is now at column 1
    display = GainMapDisplay.from_errors(
        reference, errors, row_values=["a", "b"], column_values=[1, 2, 3], draw=False
    )
    np.testing.assert_allclose(display.best_gain, [0.0, 0.5])
    assert not hasattr(display, "ax_")


def test_gain_map_without_best_stop_has_no_marks():
    display = GainMapDisplay.from_errors(
        np.ones((1, 2)), np.ones((1, 2)), row_values=[0], column_values=[1, 2], best_stop=False
    )
    assert display.markers_ is None and display.best_gain is None
    assert len(display.texts_) == 2


@pytest.mark.parametrize(
    "reference, errors, rows, match",
    [
        (np.ones((2, 2)), np.ones((2, 3)), [0, 1], "same shape"),
        (np.zeros((2, 2)), np.ones((2, 2)), [0, 1], "positive"),
        (np.ones((2, 2)), np.ones((2, 2)), [0], "row_values"),
    ],
)
def test_gain_map_rejects_bad_grids(reference, errors, rows, match):
    with pytest.raises(ValueError, match=match):
        GainMapDisplay.from_errors(reference, errors, row_values=rows, column_values=[1, 2])


# -- silent wrong pictures (each failed before its fix) ---------------------------


class _StoppingRegressor(_CountingRegressor):
    """A `_CountingRegressor` whose tol ends training for good at step 261."""

    def fit(self, X, y):
        super().fit(X, y)
        self.n_iter_ = min(self.n_iter_, 261)
        self.sharpness_ = float(self.n_iter_)
        return self


def test_sharpness_curve_draws_no_point_at_steps_that_never_ran(data):
    X, y = data
    with pytest.warns(UserWarning, match="stopped at step 261 before the checkpoint 2000"):
        display = SharpnessCurveDisplay.from_estimator(
            _StoppingRegressor(), X, y, checkpoints=[100, 2000, 3000], solvers=("gd",)
        )
    # the point is where training ended, and nothing is drawn after it
    np.testing.assert_array_equal(display.lines_[0].get_xdata(), [100, 261])
    np.testing.assert_array_equal(display.lines_[0].get_ydata(), [100, 261])
    assert np.isnan(display.sharpness[0, 2])


@pytest.mark.parametrize("checkpoints", [[2.5, 10], [1, np.nan]])
def test_sharpness_curve_refuses_fractional_checkpoints(data, checkpoints):
    X, y = data
    with pytest.raises(ValueError, match="checkpoints must be whole step counts"):
        SharpnessCurveDisplay.from_estimator(_CountingRegressor(), X, y, checkpoints=checkpoints)


def test_training_curves_refuse_fewer_labels_than_estimators(data):
    X, y = data
    fits = [_ShrinkRegressor(solver=s).fit(X, y) for s in ("gd", "sam")]
    with pytest.raises(ValueError, match="labels must hold one entry per curve: got 1 label"):
        TrainingCurveDisplay.from_estimators(fits, labels=["a"])


def test_training_curve_of_a_net_counts_epochs():
    from sksam import SAMNetRegressor

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)).astype(np.float32), rng.normal(size=30)
    net = SAMNetRegressor(max_epochs=2, random_state=0).fit(X, y)
    assert TrainingCurveDisplay.from_estimator(net).ax_.get_xlabel() == "epoch"
    fits = [_ShrinkRegressor().fit(X, y)]
    assert TrainingCurveDisplay.from_estimators(fits).ax_.get_xlabel() == "iteration"


def test_gain_map_never_marks_a_missing_cell_as_best_stop():
    reference = np.array([[np.nan, 0.9, 0.5], [np.nan, np.nan, np.nan]])
    errors = np.array([[0.5, 0.45, 0.4], [1.0, 1.0, 1.0]])
    display = GainMapDisplay.from_errors(
        reference, errors, row_values=[0, 1], column_values=[1, 2, 3]
    )
    assert display.best_column.tolist() == [2, -1]
    np.testing.assert_allclose(display.best_gain, [1 - 0.4 / 0.5, np.nan])
    np.testing.assert_array_equal(display.markers_.get_xdata(), [2.5])
