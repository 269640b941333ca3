"""Sharpness of fitted estimators: one reading of the loss, exact for kernels, errors stated."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksam import (
    SAMKernelClassifier,
    SAMKernelRegressor,
    SAMNetClassifier,
    SAMNetRegressor,
    SAMTwoLayerClassifier,
    SAMTwoLayerRegressor,
)
from sksam.datasets import make_teacher_student
from sksam.sharpness import (
    estimator_sharpness,
    estimator_spectrum,
    fitted_loss,
    hessian_trace,
    top_hessian_eigenvalues,
)

KERNEL_MEASURES = ["top_eigenvalue", "trace", "rho", "average", "adaptive_rho", "adaptive_average"]


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X[:120], (y[:120] - y.mean()) / y.std()


@pytest.fixture(scope="module")
def teacher():
    return make_teacher_student(n_samples=80, random_state=0)


@pytest.mark.parametrize("measure", KERNEL_MEASURES)
@pytest.mark.parametrize("path", [{}, {"n_components": 30}, {"kernel": "linear"}])
def test_kernel_values_are_the_exact_sharpness_the_fit_reports(diabetes, measure, path):
    X, y = diabetes
    model = SAMKernelRegressor(max_iter=30, rho=0.1, sharpness=measure, **path).fit(X, y)
    result = estimator_sharpness(model, X, y, measure=measure)
    assert result.exact and result.stderr.tolist() == [0.0]
    assert result.value == pytest.approx(model.sharpness_, rel=1e-9)


def test_kernel_classifier_with_class_weights_matches_its_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.where(X[:, 0] + 0.3 * rng.normal(size=60) > 0, "a", "b")
    model = SAMKernelClassifier(
        max_iter=20, sharpness="rho", rho=0.1, class_weight={"a": 2.0, "b": 1.0}
    ).fit(X, y)
    assert estimator_sharpness(model, X, y, measure="rho").value == pytest.approx(
        model.sharpness_, rel=1e-9
    )


def test_kernel_sharpness_through_a_pipeline_uses_the_transformed_rows(diabetes):
    X, y = diabetes
    pipe = make_pipeline(StandardScaler(), SAMKernelRegressor(max_iter=20, sharpness="trace"))
    pipe.fit(X, y)
    assert estimator_sharpness(pipe, X, y, measure="trace").value == pytest.approx(
        pipe[-1].sharpness_, rel=1e-12
    )


def test_two_layer_value_matches_the_fit_and_the_layers_are_the_hessian_blocks(teacher):
    X, y = teacher
    model = SAMTwoLayerRegressor(n_hidden=6, random_state=0, sharpness="top_eigenvalue")
    model.fit(X, y)
    whole = estimator_sharpness(model, X, y, random_state=0)
    # the fit measures in float32, the reading in float64
    assert whole.value == pytest.approx(model.sharpness_, rel=1e-4)
    layers = estimator_sharpness(model, X, y, by="layer", random_state=0)
    assert layers.groups == ["hidden", "output"]
    loss = fitted_loss(model, X, y)
    for name, value in zip(layers.groups, layers.values):
        dense = _dense_top_eigenvalue(loss, loss.groups[name])
        assert value == pytest.approx(dense, rel=1e-6)


def _dense_top_eigenvalue(loss, indices):
    """Largest eigenvalue of the dense Hessian block of ``params[indices]``."""
    block = [loss.params[i] for i in indices]
    flat = torch.cat([p.detach().reshape(-1) for p in block])

    def flat_loss(vector):
        tensors, start = list(loss.params), 0
        for i, p in zip(indices, block):
            tensors[i] = vector[start : start + p.numel()].reshape(p.shape)
            start += p.numel()
        return loss.loss_of(tensors)

    hessian = torch.autograd.functional.hessian(flat_loss, flat)
    return float(np.linalg.eigvalsh(hessian.numpy())[-1])


def test_trace_error_is_the_spread_of_the_probes(teacher):
    X, y = teacher
    model = SAMTwoLayerRegressor(n_hidden=6, random_state=0).fit(X, y)
    result = estimator_sharpness(model, X, y, measure="trace", n_probes=30, random_state=0)
    loss = fitted_loss(model, X, y)
    seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max, size=3)[0])
    # the same probes as hessian_trace with that seed: the same value and error
    value, std = hessian_trace(
        loss.loss_fn, loss.params, n_probes=30, random_state=seed, return_std=True
    )
    assert len(result.samples[0]) == 30
    assert (result.value, result.stderr[0]) == pytest.approx((value, std), rel=1e-10)


def test_seeded_measures_report_the_spread_over_seeds(teacher):
    X, y = teacher
    model = SAMTwoLayerRegressor(n_hidden=6, random_state=0).fit(X, y)
    result = estimator_sharpness(model, X, y, measure="rho", rho=0.1, n_seeds=4, random_state=0)
    assert len(result.samples[0]) == 4
    assert result.stderr[0] == pytest.approx(np.std(result.samples[0], ddof=1) / 2)
    frame = result.to_frame()
    assert frame.columns.tolist() == ["group", "value", "stderr", "n_estimates"]
    assert frame["n_estimates"].tolist() == [4]


def test_the_subsample_used_is_stated(teacher):
    X, y = teacher
    model = SAMTwoLayerRegressor(n_hidden=6, random_state=0).fit(X, y)
    result = estimator_sharpness(model, X, y, measure="trace", max_samples=25, random_state=0)
    assert result.n_samples == 25 and len(np.unique(result.sample_index)) == 25
    full = estimator_sharpness(model, X, y, measure="trace", random_state=0)
    assert full.n_samples == 80 and full.sample_index.tolist() == list(range(80))


def test_net_reading_leaves_weights_and_train_mode_exactly_as_they_were():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    net = SAMNetClassifier(max_epochs=2, random_state=0, sharpness="top_eigenvalue").fit(X, y)
    module = net.module_
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = estimator_sharpness(net, X, y, by="layer", random_state=0)
    assert result.groups == ["layers.0", "layers.2"]
    assert module.training and all(m.training for m in module.modules())
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])
    whole = estimator_sharpness(net, X, y, random_state=0)
    assert whole.value == pytest.approx(net.sharpness_, rel=1e-3)


def test_net_regressor_and_two_layer_classifier_are_read(teacher):
    X, y = teacher
    net = SAMNetRegressor(max_epochs=2, random_state=0).fit(X.astype(np.float32), y)
    assert estimator_sharpness(net, X, y, measure="trace", random_state=0).value > 0
    labels = (y > np.median(y)).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = SAMTwoLayerClassifier(n_hidden=4, random_state=0, max_iter=50).fit(X, labels)
    value = estimator_sharpness(
        clf, X, labels, measure="adaptive_rho_logitnorm", rho=0.1, random_state=0
    ).value
    assert value >= 0


def test_kernel_spectrum_is_the_exact_eigendecomposition(diabetes):
    X, y = diabetes
    model = SAMKernelRegressor(max_iter=10).fit(X, y)
    spectrum = estimator_spectrum(model, X, y, k=4)
    K = model._get_kernel(X)
    np.testing.assert_allclose(
        spectrum.top_eigenvalues[0], np.linalg.eigvalsh(K / len(X))[::-1][:4], rtol=1e-10
    )
    assert spectrum.exact


def test_torch_spectrum_per_layer_matches_top_eigenvalues(teacher):
    X, y = teacher
    model = SAMTwoLayerRegressor(n_hidden=5, random_state=0).fit(X, y)
    spectrum = estimator_spectrum(model, X, y, k=3, by="layer", n_probes=2, random_state=0)
    loss = fitted_loss(model, X, y)
    hidden = [loss.params[i] for i in loss.groups["hidden"]]
    expected = top_hessian_eigenvalues(loss.loss_fn, hidden, k=3, random_state=1)
    np.testing.assert_allclose(spectrum.top_eigenvalues[0], expected, rtol=1e-5)
    grid, density = spectrum.density("hidden")
    assert density.sum() * (grid[1] - grid[0]) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"by": "unit"}, "by must be one of 'model', 'layer'"),
        ({"n_seeds": 0}, "n_seeds must be a positive integer"),
        ({"measure": "max"}, "Unknown sharpness measure 'max'"),
        ({"max_samples": 0}, "max_samples must be a positive integer"),
    ],
)
def test_estimator_sharpness_errors_name_the_parameter(teacher, kwargs, match):
    X, y = teacher
    model = SAMTwoLayerRegressor(n_hidden=3, random_state=0, max_iter=5, tol=None).fit(X, y)
    with pytest.raises(ValueError, match=match):
        estimator_sharpness(model, X, y, **kwargs)


def test_a_foreign_estimator_is_refused_by_name(diabetes):
    from sklearn.linear_model import Ridge

    X, y = diabetes
    with pytest.raises(TypeError, match="Ridge is not a sksam estimator"):
        estimator_sharpness(Ridge().fit(X, y), X, y)


def test_a_target_transformer_is_undone_before_the_loss(diabetes):
    from sklearn.compose import TransformedTargetRegressor

    X, y = diabetes
    wrapped = TransformedTargetRegressor(
        SAMKernelRegressor(max_iter=20, sharpness="rho", rho=0.1), transformer=StandardScaler()
    ).fit(X, 50 * y + 3)
    # the loss is the one the model was fitted on: of the standardized targets
    result = estimator_sharpness(wrapped, X, 50 * y + 3, measure="rho")
    assert result.value == pytest.approx(wrapped.regressor_.sharpness_, rel=1e-9)


def test_kernel_classifier_refuses_other_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    y = np.where(X[:, 0] > 0, 1, 0)
    model = SAMKernelClassifier(max_iter=5).fit(X, y)
    with pytest.raises(ValueError, match="the classes the model was fitted on"):
        estimator_sharpness(model, X, y + 5)
