"""SAMNetRegressor: the regression twin of SAMNetClassifier, on the same machinery."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from sksam import SAMNetRegressor
from sksam.modules import MLP
from sksam.net import SAMNetClassifier, _BaseSAMNet

from _reference import net_weights, sam_gradient


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    return X[:300], ((y[:300] - y.mean()) / y.std()).astype(np.float32)


def _small(**params):
    defaults = dict(max_epochs=3, lr=0.05, random_state=0, sharpness=None)
    return SAMNetRegressor(**{**defaults, **params})


def test_one_full_batch_epoch_equals_the_sam_equation(diabetes):
    # w1 = w0 - lr * grad L(w0 + rho g / ||g||), L the mean squared error
    X, y = diabetes
    rho, lr = 0.5, 0.1
    torch.manual_seed(0)
    module = MLP(10, 1, hidden_layer_sizes=(16,))
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y).reshape(-1, 1)
    params = list(module.parameters())
    loss0 = nn.functional.mse_loss(module(Xt), yt)
    g_shifted = sam_gradient(module, lambda m: nn.functional.mse_loss(m(Xt), yt), rho)
    expected = torch.cat([(p - lr * gi).detach().reshape(-1) for p, gi in zip(params, g_shifted)])
    reg = _small(module=module, rho=rho, lr=lr, max_epochs=1, batch_size=None).fit(X, y)
    torch.testing.assert_close(net_weights(reg), expected, rtol=1e-5, atol=1e-6)
    assert reg.loss_curve_[0] == pytest.approx(loss0.item(), rel=1e-6)


def test_one_and_two_dimensional_targets(diabetes):
    X, y = diabetes
    one = _small().fit(X, y)
    assert one.n_outputs_ == 1 and one.predict(X).shape == (len(X),)
    column = _small().fit(X, y[:, None])
    assert column.predict(X).shape == (len(X), 1)
    # a column is the same problem as a vector: the same weights
    assert torch.equal(net_weights(one), net_weights(column))
    two = _small().fit(X, np.c_[y, -y])
    assert two.n_outputs_ == 2 and two.predict(X).shape == (len(X), 2)
    with pytest.raises(ValueError, match="y has 1 output"):
        _small(warm_start=True).fit(X, np.c_[y, -y]).fit(X, y)


def test_trains_and_scores(diabetes):
    X, y = diabetes
    reg = _small(max_epochs=20, sharpness="top_eigenvalue").fit(X, y)
    assert reg.score(X, y) > 0.45
    assert reg.sharpness_ > 0
    assert reg.loss_curve_[-1] < reg.loss_curve_[0]


def test_rho_zero_is_gd_bit_for_bit(diabetes):
    X, y = diabetes
    gd = _small(solver="gd", module__dropout=0.2).fit(X, y)
    sam = _small(rho=0.0, module__dropout=0.2).fit(X, y)
    assert torch.equal(net_weights(gd), net_weights(sam))


def test_warm_start_and_partial_fit_equal_one_fit(diabetes):
    X, y = diabetes
    params = dict(module__dropout=0.2, optimizer__momentum=0.9)
    once = _small(max_epochs=4, **params).fit(X, y)
    twice = _small(max_epochs=2, warm_start=True, **params).fit(X, y).fit(X, y)
    assert torch.equal(net_weights(once), net_weights(twice))
    partial = _small(**params)
    for _ in range(4):
        partial.partial_fit(X, y)
    assert torch.equal(net_weights(once), net_weights(partial)) and partial.n_iter_ == 4


def test_pickle_clone_and_grid_search(diabetes):
    X, y = diabetes
    reg = _small(optimizer__momentum=0.9).fit(X, y)
    restored = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(reg.predict(X), restored.predict(X))
    assert clone(reg).get_params()["optimizer__momentum"] == 0.9
    search = GridSearchCV(
        _small(max_epochs=2), {"rho": [0.0, 0.1], "module__hidden_layer_sizes": [(8,)]}, cv=2
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 2


def test_raw_targets_that_blow_up_are_an_error_naming_y(diabetes):
    X, _ = diabetes
    _, y_raw = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match="standardize X and y"):
        SAMNetRegressor(random_state=0, sharpness=None, max_epochs=3).fit(X, y_raw[:300])


def test_the_constant_prediction_bar_is_the_variance_of_each_target():
    y = torch.tensor([[1.0, 0.0], [3.0, 4.0]])  # variances 1 and 4
    assert SAMNetRegressor()._baseline_loss(y) == pytest.approx(2.5)
    assert SAMNetRegressor()._baseline_loss(torch.ones(3, 1)) is None


def test_healthy_fit_is_silent(diabetes):
    X, y = diabetes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _small(max_epochs=5).fit(X, y)


def test_a_learning_rate_too_small_is_not_called_divergence():
    # batches of 16 standardized targets scatter (batch losses 0.6-2.4) while
    # lr=1e-4 barely moves the weights: the largest batch loss is 1.5 times the
    # first and the fit ends at the mean's loss, but nothing diverged, and
    # "Lower lr" would be the wrong advice
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    y = (y - y.mean()) / y.std()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SAMNetRegressor(lr=1e-4, batch_size=16, max_epochs=3, random_state=0).fit(X, y)


def test_the_fit_loop_is_shared_not_copied():
    # the two estimators differ only in targets, loss and prediction
    for cls in (SAMNetClassifier, SAMNetRegressor):
        assert issubclass(cls, _BaseSAMNet)
        for name in ("_train", "_build_net", "_sharpness", "set_params", "get_params"):
            assert name not in vars(cls), f"{cls.__name__} overrides {name}"
    assert SAMNetRegressor._get_param_names() == SAMNetClassifier._get_param_names()


@pytest.mark.filterwarnings("ignore::sksam.exceptions.DivergenceWarning")
@parametrize_with_checks(
    [SAMNetRegressor()], expected_failed_checks=lambda est: {}, xfail_strict=True
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_history_attributes_carry_the_shared_text():
    from sksam._base import HISTORY_ATTRIBUTES_DOC

    for cls in (SAMNetClassifier, SAMNetRegressor):
        assert HISTORY_ATTRIBUTES_DOC in cls.__doc__, cls.__name__


def test_string_targets_are_an_error_naming_y(diabetes):
    X, _ = diabetes
    with pytest.raises(ValueError, match="SAMNetRegressor is a regressor: y must be numeric"):
        _small().fit(X[:6], np.array(["a", "b"] * 3))


def test_a_module_with_the_wrong_output_width_is_a_clear_error(diabetes):
    # 3 outputs for a 1-D y: MSELoss broadcast the target over the columns and
    # predict returned 3 values per sample
    X, y = diabetes

    class Three(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(X.shape[1], 3)

        def forward(self, X):
            return self.layer(X)

    with pytest.raises(ValueError, match=r"output of shape \(2, 3\).*needs \(2, 1\)"):
        _small(module=Three).fit(X, y)
