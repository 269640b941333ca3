"""Sample weights enter every objective as a weighted mean: their scale is not the model's.

Before the shared :func:`sksam._base.sample_weights`, weights of 1e-170 made
the kernel estimators blame the kernel ("too small for float64") and weights
of 1e308 blamed the learning rate or the features, though the weighted mean
loss :math:`\\sum_i w_i \\ell_i / \\sum_i w_i` is the same for ``c * w``.
"""

import inspect

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import sksam
from sksam._base import rescale_weights, sample_weights

#: Each estimator that takes ``sample_weight``, small and seeded.
_ESTIMATORS = {
    "SAMKernelRegressor": dict(max_iter=30),
    "SAMKernelClassifier": dict(max_iter=30),
    "SAMKernelRegressorCV": dict(max_iter=10, cv=3),
    "SAMKernelClassifierCV": dict(max_iter=10, cv=3),
    "SAMTwoLayerRegressor": dict(n_hidden=8, max_iter=15, tol=None, random_state=0),
    "SAMTwoLayerClassifier": dict(n_hidden=8, max_iter=15, tol=None, random_state=0),
}

#: Parametrizations and options that handle the weights on another route.
_VARIANTS = {
    "SAMKernelRegressor": [
        dict(n_components=10, random_state=0),
        dict(kernel="linear"),
        dict(early_stopping=True, random_state=0),
    ],
    "SAMKernelClassifier": [dict(class_weight="balanced")],
    "SAMTwoLayerRegressor": [dict(batch_size=16, early_stopping=True)],
    "SAMTwoLayerClassifier": [dict(batch_size=16, early_stopping=True)],
}


def _cases():
    for name, params in _ESTIMATORS.items():
        yield pytest.param(name, params, id=name)
        for extra in _VARIANTS.get(name, []):
            label = "-".join(f"{k}={v}" for k, v in extra.items())
            yield pytest.param(name, {**params, **extra}, id=f"{name}-{label}")


def _data(classifier):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = X[:, 0] + 0.1 * rng.standard_normal(40)
    # at most 1: 1e308 times the weights stays finite
    return X, (y > 0).astype(int) if classifier else y, rng.uniform(0.1, 1.0, 40)


def _outputs(model, X):
    return model.decision_function(X) if hasattr(model, "decision_function") else model.predict(X)


def test_every_estimator_with_sample_weight_is_covered():
    takes = {
        name
        for name in sksam.__all__
        if name.startswith("SAM")
        and name != "SAM"
        and "sample_weight" in inspect.signature(getattr(sksam, name).fit).parameters
    }
    assert takes == set(_ESTIMATORS)


@pytest.mark.parametrize("scale", [1e-170, 1e308])
@pytest.mark.parametrize("name, params", list(_cases()))
def test_uniformly_scaled_weights_give_the_same_model(name, params, scale):
    estimator = getattr(sksam, name)
    X, y, w = _data("Classifier" in name)
    reference = estimator(**params).fit(X, y, sample_weight=w)
    scaled = estimator(**params).fit(X, y, sample_weight=scale * w)
    assert_allclose(_outputs(scaled, X), _outputs(reference, X), rtol=1e-9, atol=1e-12)
    if hasattr(reference, "loss_curve_"):  # the CV estimators have none
        assert_allclose(scaled.loss_curve_, reference.loss_curve_, rtol=1e-9)


def test_sample_weights_rescales_to_mean_one_and_checks():
    weights = sample_weights([1e308, 5e307, 0.0], 3)
    assert_allclose(weights / weights.mean(), [2.0, 1.0, 0.0], rtol=1e-15)
    assert 0.5 <= weights.mean() < 1
    assert_array_equal(sample_weights(None, 2), [0.5, 0.5])
    assert_array_equal(sample_weights(2.0**-1000, 2), [0.5, 0.5])
    w = np.random.default_rng(0).uniform(0, 3, 10)
    assert_array_equal(sample_weights(2.0**-600 * w, 10), sample_weights(w, 10))  # exact
    with pytest.raises(ValueError, match=r"^sample_weight must contain at least one non-zero"):
        sample_weights(np.zeros(4), 4)
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        sample_weights([1.0, -1.0], 2)
    with pytest.raises(ValueError, match="sample_weight contains infinity"):
        sample_weights([1.0, np.inf], 2)
    with pytest.raises(ValueError, match=r"class_weight must be finite, but a weight is inf"):
        rescale_weights(np.array([1.0, np.inf]), "class_weight")


def test_zero_class_weights_name_both_weights():
    X, y, w = _data(classifier=True)
    model = sksam.SAMKernelClassifier(max_iter=5, class_weight={0: 0.0, 1: 0.0})
    with pytest.raises(ValueError, match="sample_weight times class_weight must contain"):
        model.fit(X, y, sample_weight=w)
