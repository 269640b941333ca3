"""Bayesian SAM in the net estimators: solver='bsam', its step, its posterior's predictions."""

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from sksam import SAMNetClassifier, SAMNetRegressor
from sksam.optim import SAM, BayesianSAM

from _reference import net_weights


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:200] / 16.0).astype(np.float32), y[:200]


def _net(solver, cls=SAMNetClassifier, **kwargs):
    options = dict(
        module__hidden_layer_sizes=(16,),
        max_epochs=2,
        batch_size=50,
        sharpness=None,
        random_state=0,
        lr=0.1,
    )
    if "module" in kwargs:  # an instance: its own layers
        del options["module__hidden_layer_sizes"]
    return cls(solver=solver, **{**options, **kwargs})


def test_rho_zero_is_solver_gd_bit_for_bit(digits):
    X, y = digits
    gd = _net("gd").fit(X, y)
    bsam = _net("bsam", rho=0.0).fit(X, y)
    for a, b in zip(net_weights(gd), net_weights(bsam)):
        assert torch.equal(a, b)


def test_bsam_counts_the_training_rows_and_is_not_sam(digits):
    X, y = digits
    bsam = _net("bsam", rho=0.05, random_state=3).fit(X, y)
    rule = bsam.net_.optimizer_.rule
    assert isinstance(rule, BayesianSAM)
    assert rule.num_data == len(X) and rule.seed == 3 and rule.s is not None
    sam = _net("sam", rho=0.05, random_state=3).fit(X, y)
    assert not all(torch.equal(a, b) for a, b in zip(net_weights(sam), net_weights(bsam)))


def test_full_batch_fit_is_the_optimizers_bsam_step(digits):
    # the estimator's steps are those of SAM(rule=BayesianSAM(num_data=N)) driven by hand
    X, y = digits
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 12), torch.nn.Tanh(), torch.nn.Linear(12, 10))
    reference = copy.deepcopy(module)
    clf = _net("bsam", module=module, batch_size=None, max_epochs=4, rho=0.05, lr=0.2)
    clf.fit(X, y)
    rule = BayesianSAM(num_data=len(X), seed=0)
    opt = SAM(reference.parameters(), torch.optim.SGD, rho=0.05, lr=0.2, rule=rule)
    X_t, y_t = torch.as_tensor(X), torch.as_tensor(y)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(reference(X_t), y_t)
        loss.backward()
        return loss

    for _ in range(4):
        opt.step(closure)
    fitted = clf.net_.module_.state_dict()
    for name, value in reference.state_dict().items():
        # the rows come shuffled: the mean loss sums them in another order
        torch.testing.assert_close(fitted[name], value, rtol=1e-5, atol=1e-6)
    moved = [not torch.equal(a, b) for a, b in zip(module.parameters(), reference.parameters())]
    assert all(moved)


def test_posterior_spread_of_a_linear_model_is_its_closed_form():
    # f(x) = x . w + b with w_j ~ N(w_j, sd_j^2): Var f(x) = sum_j x_j^2 sd_j^2 + sd_b^2
    rng = np.random.RandomState(0)
    X = rng.randn(60, 3).astype(np.float32)
    y = (X @ [1.0, -2.0, 0.5] + 0.1 * rng.randn(60)).astype(np.float32)
    reg = _net("bsam", SAMNetRegressor, module=torch.nn.Linear(3, 1), max_epochs=5, rho=0.02)
    reg.fit(X, y)
    sd_w, sd_b = [t.double().numpy() for t in reg.net_.optimizer_.rule.posterior_std()]
    expected = np.sqrt((X.astype(np.float64) ** 2) @ (sd_w.ravel() ** 2) + sd_b[0] ** 2)
    draws = reg.sample_posterior(X[:5], n_draws=4000, random_state=0)
    assert draws.shape[:2] == (4000, 5)
    spread = draws.reshape(4000, 5).std(axis=0)
    np.testing.assert_allclose(spread, expected[:5], rtol=0.05)
    mean = draws.reshape(4000, 5).mean(axis=0)
    np.testing.assert_allclose(mean, reg.predict(X[:5]).ravel(), atol=4 * expected[:5].max() / 60)


def test_sample_posterior_puts_the_weights_back_and_is_seeded(digits):
    X, y = digits
    clf = _net("bsam", rho=0.05).fit(X, y)
    before = clf.predict_proba(X)
    draws = clf.sample_posterior(X[:10], n_draws=3, random_state=1)
    assert np.array_equal(clf.predict_proba(X), before)
    assert draws.shape == (3, 10, 10)
    np.testing.assert_allclose(draws.sum(axis=2), 1.0, rtol=1e-5)
    assert not np.array_equal(draws[0], draws[1])
    assert np.array_equal(draws, clf.sample_posterior(X[:10], n_draws=3, random_state=1))


def test_sample_posterior_needs_a_bsam_fit(digits):
    X, y = digits
    clf = _net("sam").fit(X, y)
    with pytest.raises(ValueError, match="fit with solver='bsam'"):
        clf.sample_posterior(X)
    bsam = _net("bsam").fit(X, y)
    with pytest.raises(ValueError, match="n_draws must be an integer"):
        bsam.sample_posterior(X, n_draws=0)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"optimizer": torch.optim.Adam}, "needs optimizer=torch.optim.SGD"),
        ({"optimizer__momentum": 0.9}, "optimizer__momentum=0.9"),
        ({"optimizer__weight_decay": 1e-3}, "optimizer__weight_decay"),
        ({"m": 2}, "m=2"),
        ({"precision": "float16"}, "precision='float16'"),
    ],
)
def test_what_bsam_cannot_take_is_named(digits, params, match):
    X, y = digits
    with pytest.raises(ValueError, match=match):
        _net("bsam", **params).fit(X, y)


def test_grid_search_over_bsam(digits):
    X, y = digits
    search = GridSearchCV(_net("sam"), {"solver": ["sam", "bsam"], "rho": [0.01, 0.05]}, cv=2)
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


# ------------------------------------------- the family rules' options in the nets


@pytest.mark.parametrize(
    "solver, params, read",
    [
        ("gsam", {"gsam_alpha": 0.7}, lambda rule: rule.alpha == 0.7),
        ("wsam", {"wsam_gamma": 0.6}, lambda rule: rule.gamma == 0.6),
        (
            "fsam",
            {"fsam_sigma": 0.5, "fsam_lmbda": 0.3},
            lambda rule: (rule.sigma, rule.lmbda) == (0.5, 0.3),
        ),
    ],
)
def test_the_family_options_reach_the_rule(digits, solver, params, read):
    X, y = digits
    clf = _net(solver, max_epochs=1, **params).fit(X, y)
    assert read(clf.net_.optimizer_.rule)


@pytest.mark.parametrize("params", [{"gsam_alpha": 0.0}, {"wsam_gamma": 0.5}])
def test_the_family_option_that_is_sam_is_sam_bit_for_bit(digits, params):
    X, y = digits
    solver = "gsam" if "gsam_alpha" in params else "wsam"
    sam = _net("sam", rho=0.2).fit(X, y)
    family = _net(solver, rho=0.2, **params).fit(X, y)
    for a, b in zip(net_weights(sam), net_weights(family)):
        assert torch.equal(a, b)


def test_grid_search_over_a_family_option(digits):
    X, y = digits
    search = GridSearchCV(_net("gsam", max_epochs=1), {"gsam_alpha": [0.0, 0.4, 1.0]}, cv=2)
    search.fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    with pytest.raises(ValueError, match="wsam_gamma"):
        _net("wsam", wsam_gamma=1.0).fit(X, y)
