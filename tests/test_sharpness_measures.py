"""Adaptive and average-case sharpness: closed forms, brute force, invariances."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from sksam.sharpness import (
    DEFAULT_OPTIONS,
    LOGIT_MEASURES,
    MEASURES,
    adaptive_rho_sharpness,
    average_sharpness,
    check_measure,
    measure_sharpness,
    normalized_logits_loss,
    quadratic_model_sharpness,
    quadratic_sharpness,
    rho_sharpness,
    top_hessian_eigenvalue,
    torch_sharpness,
)

# --------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------


def _ball_max(f, grad, dim, rho, n_starts=30, seed=0):
    """``max_{||u|| <= rho} f(u)`` by SLSQP from many starts (a lower bound)."""
    rng = np.random.default_rng(seed)
    ball = {"type": "ineq", "fun": lambda u: rho**2 - u @ u, "jac": lambda u: -2 * u}
    best = f(np.zeros(dim))
    for _ in range(n_starts):
        start = rng.standard_normal(dim)
        start *= rho * rng.uniform() ** (1 / dim) / np.linalg.norm(start)
        res = minimize(
            lambda u: -f(u),
            start,
            jac=lambda u: -grad(u),
            constraints=[ball],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 500},
        )
        u = res.x * min(1.0, rho / np.linalg.norm(res.x))
        best = max(best, f(u))
    return best


def _random_problem(p, k, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((p, p))
    H = (A + A.T) / 2
    return H, rng.standard_normal((p, k)), rng.standard_normal((p, k))


class _TorchQuadratic:
    """``L(v) = g.(v - w) + (v - w).H.(v - w) / 2`` (per output), measured at ``v = w``."""

    def __init__(self, H, G, W):
        self.H, self.G, self.W = (torch.as_tensor(a) for a in (H, G, W))
        self.v = self.W.clone().requires_grad_()

    def loss_fn(self):
        d = self.v - self.W
        return (self.G * d).sum() + 0.5 * torch.einsum("ik,ij,jk->", d, self.H, d)


# --------------------------------------------------------------------------
# closed forms of a quadratic
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("eta", [0.0, 0.3])
def test_adaptive_rho_is_the_trust_region_of_THT_and_Tg(seed, k, eta):
    H, G, W = _random_problem(3, k, seed)
    rho = 0.7
    value = quadratic_model_sharpness(H, G, W, measure="adaptive_rho", rho=rho, eta=eta)
    T = np.abs(W) + eta  # e = T * u, one ball over all outputs' u together

    def f(u):
        E = T * u.reshape(W.shape)
        return np.sum(G * E) + 0.5 * np.einsum("ik,ij,jk->", E, H, E)

    def grad(u):
        E = T * u.reshape(W.shape)
        return (T * (G + H @ E)).ravel()

    brute = _ball_max(f, grad, W.size, rho, seed=seed)
    assert value >= brute - 1e-10
    assert value == pytest.approx(brute, rel=1e-7, abs=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_average_closed_forms(k):
    H, G, W = _random_problem(4, k, 0)
    rho, eta = 0.2, 0.1
    average = quadratic_model_sharpness(H, G, W, measure="average", rho=rho)
    assert average == pytest.approx(0.5 * rho**2 * k * np.trace(H), rel=1e-12)
    adaptive = quadratic_model_sharpness(H, G, W, measure="adaptive_average", rho=rho, eta=eta)
    expected = 0.5 * rho**2 * np.sum((np.abs(W) + eta) ** 2 * np.diag(H)[:, None])
    assert adaptive == pytest.approx(expected, rel=1e-12)


def test_adaptive_with_zero_weights_and_eta_one_is_the_plain_measure():
    # |w| + eta = 1 everywhere: the ellipsoid is the ball, the noise isotropic
    H, G, _ = _random_problem(4, 2, 3)
    W = np.zeros_like(G)
    for adaptive, plain in [("adaptive_rho", "rho"), ("adaptive_average", "average")]:
        a = quadratic_model_sharpness(H, G, W, measure=adaptive, rho=0.4, eta=1.0)
        b = quadratic_model_sharpness(H, G, measure=plain, rho=0.4)
        assert a == pytest.approx(b, rel=1e-12)


def test_eigendecomposition_form_equals_the_matrix_form():
    H, G, W = _random_problem(5, 2, 4)
    lam, U = np.linalg.eigh(H)
    for measure in [
        "top_eigenvalue",
        "trace",
        "rho",
        "adaptive_rho",
        "average",
        "adaptive_average",
    ]:
        from_matrix = quadratic_model_sharpness(H, G, W, measure=measure, rho=0.3)
        from_eigen = quadratic_sharpness(
            lam, U.T @ G, measure=measure, rho=0.3, weights=W, eigenvectors=U
        )
        assert from_eigen == pytest.approx(from_matrix, rel=1e-12), measure


def test_partial_eigendecomposition_counts_missing_eigenvalues_as_zero():
    # a kernel model may hold only some eigenpairs: H = U diag(lam) U^T
    rng = np.random.default_rng(5)
    U, _ = np.linalg.qr(rng.standard_normal((5, 2)))
    lam = np.array([2.0, 0.5])
    H = (U * lam) @ U.T
    g_eig, W = rng.standard_normal(2), rng.standard_normal(5)
    for measure in ["adaptive_rho", "adaptive_average"]:
        partial = quadratic_sharpness(
            lam, g_eig, measure=measure, rho=0.5, weights=W, eigenvectors=U
        )
        full = quadratic_model_sharpness(H, U @ g_eig, W, measure=measure, rho=0.5)
        assert partial == pytest.approx(full, rel=1e-10, abs=1e-14)


# --------------------------------------------------------------------------
# torch estimates against the closed forms and brute force
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_torch_adaptive_rho_matches_the_closed_form(seed):
    H, G, W = _random_problem(4, 2, seed)
    H = H @ H.T / 4 + 0.1 * np.eye(4)  # convex: a unique maximizer on the sphere
    quad = _TorchQuadratic(H, G, W)
    exact = quadratic_model_sharpness(H, G, W, measure="adaptive_rho", rho=0.3)
    value = adaptive_rho_sharpness(quad.loss_fn, [quad.v], 0.3, max_iter=300, random_state=0)
    assert exact + 1e-10 >= value >= exact * (1 - 1e-6)


@pytest.mark.parametrize("adaptive", [False, True])
def test_torch_average_matches_the_closed_form_within_its_error(adaptive):
    H, G, W = _random_problem(6, 1, 7)
    H = H @ H.T / 6  # PSD: the expectation is well away from zero
    quad = _TorchQuadratic(H, G, W)
    measure = "adaptive_average" if adaptive else "average"
    exact = quadratic_model_sharpness(H, G, W, measure=measure, rho=0.2, eta=0.05)
    value, std = average_sharpness(
        quad.loss_fn,
        [quad.v],
        0.2,
        adaptive=adaptive,
        eta=0.05,
        n_samples=400,
        random_state=0,
        return_std=True,
    )
    assert 0 < std < 0.2 * abs(exact)
    assert abs(value - exact) < 4 * std
    # antithetic pairs: the gradient, however large, adds no noise
    quad.G *= 1e6
    assert average_sharpness(
        quad.loss_fn, [quad.v], 0.2, adaptive=adaptive, eta=0.05, n_samples=400, random_state=0
    ) == pytest.approx(value, rel=1e-6)


class _TinyNet:
    """A 2-3-1 tanh network on 8 points: 13 parameters, not quadratic."""

    def __init__(self, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.X = torch.randn(8, 2, generator=gen, dtype=torch.float64)
        self.y = torch.randn(8, 1, generator=gen, dtype=torch.float64)
        shapes = [(2, 3), (3,), (3, 1), (1,)]
        self.params = [torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes]
        for p in self.params:
            p.requires_grad_()
        self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])

    def loss_at(self, flat):
        pieces, start = [], 0
        for p in self.params:
            pieces.append(flat[start : start + p.numel()].reshape(p.shape))
            start += p.numel()
        W1, b1, W2, b2 = pieces
        return 0.5 * ((torch.tanh(self.X @ W1 + b1) @ W2 + b2 - self.y) ** 2).mean()

    def loss_fn(self):
        return self.loss_at(torch.cat([p.reshape(-1) for p in self.params]))


def test_adaptive_rho_agrees_with_brute_force_on_a_small_network():
    net = _TinyNet(1)
    rho = 0.3
    T = net.flat.abs()
    base = net.loss_at(net.flat).item()

    def f(u):
        return net.loss_at(net.flat + T * torch.as_tensor(u)).item() - base

    def grad(u):
        u = torch.as_tensor(u).requires_grad_()
        (g,) = torch.autograd.grad(net.loss_at(net.flat + T * u), u)
        return g.numpy()

    brute = _ball_max(f, grad, net.flat.numel(), rho, n_starts=40)
    value = measure_sharpness("adaptive_rho", net.loss_fn, net.params, rho=rho, random_state=0)
    assert brute > 0
    assert value <= brute * (1 + 1e-6)  # both are lower bounds; brute force has 40 starts
    assert value >= 0.98 * brute


def test_average_agrees_with_plain_monte_carlo_on_a_small_network():
    net = _TinyNet(2)
    rho = 0.1
    gen = np.random.default_rng(0)
    e = torch.as_tensor(rho * net.flat.abs().numpy() * gen.standard_normal((20000, 13)))
    with torch.no_grad():
        losses = torch.stack([net.loss_at(net.flat + row) for row in e]).numpy()
    plain = losses.mean() - net.loss_at(net.flat).item()
    plain_std = losses.std() / np.sqrt(len(losses))
    value, std = average_sharpness(
        net.loss_fn, net.params, rho, adaptive=True, n_samples=500, random_state=1, return_std=True
    )
    assert abs(value - plain) < 4 * np.hypot(std, plain_std)


# --------------------------------------------------------------------------
# invariances
# --------------------------------------------------------------------------


class _ReLUNet:
    """``a^T relu(W x + b) + c`` with 3 outputs, regression or classification."""

    def __init__(self, seed=0, scale=1.0):
        gen = torch.Generator().manual_seed(seed)
        self.X = torch.randn(30, 4, generator=gen, dtype=torch.float64)
        self.y = torch.randn(30, 3, generator=gen, dtype=torch.float64)
        self.labels = torch.randint(0, 3, (30,), generator=gen)
        W = torch.randn(4, 6, generator=gen, dtype=torch.float64)
        b = torch.randn(6, generator=gen, dtype=torch.float64)
        a = torch.randn(6, 3, generator=gen, dtype=torch.float64)
        c = torch.randn(3, generator=gen, dtype=torch.float64)
        # layer 1 times `scale`, layer 2 divided by it: the same function
        self.params = [t.requires_grad_() for t in (W * scale, b * scale, a / scale, c)]

    def outputs(self):
        W, b, a, c = self.params
        return torch.relu(self.X @ W + b) @ a + c

    def squared_loss(self):
        return 0.5 * ((self.outputs() - self.y) ** 2).sum(dim=1).mean()

    def cross_entropy(self):
        return torch.nn.functional.cross_entropy(self.outputs(), self.labels)

    def logits_fn(self):
        return self.outputs(), self.labels


@pytest.mark.parametrize("loss", ["squared_loss", "cross_entropy"])
def test_adaptive_measures_are_invariant_to_relu_rescaling(loss):
    one, other = _ReLUNet(0), _ReLUNet(0, scale=7.0)
    np.testing.assert_allclose(
        one.outputs().detach(), other.outputs().detach(), rtol=1e-12, atol=1e-12
    )
    for measure in ["adaptive_rho", "adaptive_average", "adaptive_rho_logitnorm"]:
        values = [
            measure_sharpness(
                measure,
                getattr(net, loss),
                net.params,
                rho=0.05,
                random_state=0,
                logits_fn=net.logits_fn,
            )
            for net in (one, other)
        ]
        assert values[0] > 0
        assert values[1] == pytest.approx(values[0], rel=1e-8), measure
    # the classical measures see the rescaling
    for measure in ["top_eigenvalue", "rho", "average"]:
        values = [
            measure_sharpness(measure, getattr(net, loss), net.params, rho=0.05, random_state=0)
            for net in (one, other)
        ]
        assert abs(values[1] / values[0] - 1) > 0.1, measure


def test_adaptive_rho_random_starts_are_invariant_too():
    # at an exact fit the gradient vanishes and every start is random: the
    # starts are drawn isotropic in u = e / |w|, so the rescaled network gets
    # the same ones
    one, other = _ReLUNet(0), _ReLUNet(0, scale=7.0)
    values = []
    for net in (one, other):
        net.y = net.outputs().detach()
        values.append(
            adaptive_rho_sharpness(
                net.squared_loss, net.params, 0.1, max_iter=5, n_restarts=3, random_state=0
            )
        )
    assert values[0] > 0
    assert values[1] == pytest.approx(values[0], rel=1e-10)


@pytest.mark.parametrize("k", [1, 2])
def test_adaptive_quadratic_measures_are_invariant_to_feature_rescaling(k):
    # a linear model: feature j times s_j and weight j divided by s_j is the
    # same function; then A -> S A S, g -> S g, w -> S^{-1} w
    rng = np.random.default_rng(k)
    X, Y = rng.standard_normal((50, 4)), rng.standard_normal((50, k))
    W = rng.standard_normal((4, k))
    S = np.array([1.0, 10.0, 0.1, 3.0])

    def measures(X, W, names):
        A = X.T @ X / len(X)
        G = X.T @ (X @ W - Y) / len(X)
        return [quadratic_model_sharpness(A, G, W, measure=m, rho=0.1) for m in names]

    adaptive = ["adaptive_rho", "adaptive_average"]
    np.testing.assert_allclose(measures(X * S, W / S[:, None], adaptive), measures(X, W, adaptive))
    classical = ["top_eigenvalue", "trace", "rho", "average"]
    before, after = measures(X, W, classical), measures(X * S, W / S[:, None], classical)
    assert all(abs(b / a - 1) > 0.1 for a, b in zip(before, after))


def test_logit_normalization_ignores_the_scale_of_the_logits():
    # the last layer times 5: the decisions are the same, the cross-entropy is
    # not; only the logit-normalized measure is unchanged
    one, other = _ReLUNet(1), _ReLUNet(1)
    with torch.no_grad():
        other.params[2].mul_(5.0)
        other.params[3].mul_(5.0)
    normalized = [
        measure_sharpness(
            "adaptive_rho_logitnorm",
            None,
            net.params,
            rho=0.05,
            random_state=0,
            logits_fn=net.logits_fn,
        )
        for net in (one, other)
    ]
    plain = [
        measure_sharpness("adaptive_rho", net.cross_entropy, net.params, rho=0.05, random_state=0)
        for net in (one, other)
    ]
    assert normalized[1] == pytest.approx(normalized[0], rel=1e-8)
    assert abs(plain[1] / plain[0] - 1) > 0.1


def test_normalized_logits_loss_reads_one_logit_as_two():
    z = torch.tensor([2.0, -0.5, 0.1], dtype=torch.float64)
    y = torch.tensor([1, 0, 0])
    one = normalized_logits_loss(lambda: (z, y))()
    two = normalized_logits_loss(lambda: (torch.stack([torch.zeros(3), z], dim=1), y))()
    assert one.item() == pytest.approx(two.item(), rel=1e-14)
    # centred and unit norm: (0, z) becomes (-1, 1) / sqrt(2) * sign(z)
    p_right = torch.sigmoid(torch.tensor(np.sqrt(2.0)))
    expected = -(2 * torch.log(p_right) + torch.log(1 - p_right)) / 3
    assert one.item() == pytest.approx(expected.item(), rel=1e-12)


def test_torch_measures_leave_the_parameters_bit_for_bit():
    net = _ReLUNet(2)
    before = [p.detach().clone() for p in net.params]
    for measure in MEASURES:
        measure_sharpness(
            measure,
            net.cross_entropy,
            net.params,
            rho=0.1,
            random_state=0,
            logits_fn=net.logits_fn,
            **({"n_samples": 3} if "average" in measure else {}),
        )
        assert all(torch.equal(p, b) for p, b in zip(net.params, before)), measure


# --------------------------------------------------------------------------
# one table of names
# --------------------------------------------------------------------------


def test_every_measure_has_options_and_a_quadratic_form_or_a_reason():
    assert set(DEFAULT_OPTIONS) == set(MEASURES)
    assert set(LOGIT_MEASURES) <= set(MEASURES)
    H, G, W = _random_problem(3, 2, 0)
    for measure in MEASURES:
        if measure in LOGIT_MEASURES:
            with pytest.raises(ValueError, match="a quadratic loss has none"):
                quadratic_model_sharpness(H, G, W, measure=measure, rho=0.1)
        else:
            assert np.isfinite(quadratic_model_sharpness(H, G, W, measure=measure, rho=0.1))


def test_dispatch_agrees_with_the_functions():
    net = _TinyNet(3)
    kw = {"random_state": 0}
    assert torch_sharpness(net.loss_fn, net.params, "adaptive_rho", rho=0.2, **kw) == (
        adaptive_rho_sharpness(net.loss_fn, net.params, 0.2, **kw)
    )
    assert torch_sharpness(net.loss_fn, net.params, "adaptive_average", rho=0.2, **kw) == (
        average_sharpness(net.loss_fn, net.params, 0.2, adaptive=True, **kw)
    )
    assert measure_sharpness("average", net.loss_fn, net.params, rho=0.2, **kw) == (
        average_sharpness(net.loss_fn, net.params, 0.2, **DEFAULT_OPTIONS["average"], **kw)
    )
    assert measure_sharpness("rho", net.loss_fn, net.params, rho=0.2, **kw) == (
        rho_sharpness(net.loss_fn, net.params, 0.2, **DEFAULT_OPTIONS["rho"], **kw)
    )


def test_top_eigenvalue_is_not_rescaling_invariant_but_is_unchanged():
    # the classical measure keeps its meaning: the Hessian's top eigenvalue
    net = _ReLUNet(0)
    assert measure_sharpness(
        "top_eigenvalue", net.squared_loss, net.params, rho=0.1, random_state=0
    ) == pytest.approx(
        top_hessian_eigenvalue(net.squared_loss, net.params, tol=1e-4, random_state=0)
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda n: torch_sharpness(n.squared_loss, n.params, "adaptive_rho_logitnorm", rho=0.1),
            "needs logits_fn",
        ),
        (lambda n: torch_sharpness(n.squared_loss, n.params, "average"), "needs the radius rho"),
        (
            lambda n: adaptive_rho_sharpness(n.squared_loss, n.params, 0.1, eta=-1.0),
            "eta must be non-negative",
        ),
        (
            lambda n: average_sharpness(n.squared_loss, n.params, 0.1, n_samples=0),
            "n_samples must be a positive integer",
        ),
        (lambda n: average_sharpness(n.squared_loss, n.params, -0.1), "rho must be non-negative"),
        (
            lambda n: rho_sharpness(n.squared_loss, n.params, 0.1, n_restarts=-1),
            "n_restarts must be a non-negative integer",
        ),
        (
            lambda n: check_measure("adaptive_rho_logitnorm", classifier=False),
            "measured on a classifier's logits",
        ),
    ],
)
def test_torch_errors_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(_ReLUNet(0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"measure": "adaptive_rho", "rho": 0.1}, "needs the weights w"),
        ({"measure": "adaptive_average"}, "needs the radius rho"),
        ({"measure": "adaptive_rho", "rho": 0.1, "weights": np.ones(3)}, r"weights must have"),
        (
            {"measure": "adaptive_rho", "rho": 0.1, "weights": np.ones(2), "eta": -1.0},
            "eta must be a finite number >= 0",
        ),
        (
            {"measure": "adaptive_rho", "rho": 0.1, "weights": np.ones(2), "eigenvectors": [[1.0]]},
            r"eigenvectors must have shape \(p, 2\)",
        ),
    ],
)
def test_quadratic_errors_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quadratic_sharpness([1.0, 2.0], [0.1, 0.2], **kwargs)


def test_quadratic_model_errors_are_named():
    with pytest.raises(ValueError, match="non-empty square matrix"):
        quadratic_model_sharpness(np.ones((2, 3)), np.ones(2), measure="trace")
    with pytest.raises(ValueError, match="gradient must have 2 rows"):
        quadratic_model_sharpness(np.eye(2), np.ones(3), measure="trace")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("measure", [m for m in MEASURES if m not in LOGIT_MEASURES])
def test_torch_estimators_accept_every_measure(measure):
    from sksam import SAMTwoLayerRegressor
    from sksam.net import SAMNetClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    reg = SAMTwoLayerRegressor(n_hidden=8, max_iter=5, sharpness=measure, random_state=0)
    assert np.isfinite(reg.fit(X, X[:, 1]).sharpness_)
    clf = SAMNetClassifier(max_epochs=1, sharpness=measure, random_state=0)
    assert np.isfinite(clf.fit(X, y).sharpness_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_classifiers_measure_the_logit_normalized_sharpness_on_their_logits():
    from sksam import SAMNetClassifier, SAMTwoLayerClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3)).astype(np.float32)
    y = np.digitize(X[:, 0], [-0.5, 0.5])  # three classes
    for make in [
        lambda m: SAMTwoLayerClassifier(n_hidden=8, max_iter=20, sharpness=m, random_state=0),
        lambda m: SAMNetClassifier(max_epochs=2, sharpness=m, random_state=0),
    ]:
        normalized = make("adaptive_rho_logitnorm").fit(X, y).sharpness_
        plain = make("adaptive_rho").fit(X, y).sharpness_
        assert np.isfinite(normalized) and normalized >= 0
        # the normalized logits are another loss: a different number at the same weights
        assert normalized != pytest.approx(plain, rel=1e-3)


@pytest.mark.parametrize("name", ["SAMTwoLayerRegressor", "SAMNetRegressor"])
def test_regressors_refuse_the_logit_measures_before_training(name):
    from sklearn.utils._param_validation import InvalidParameterError

    import sksam

    X = np.zeros((10, 2), dtype=np.float32)
    for measure in LOGIT_MEASURES:
        estimator = getattr(sksam, name)(sharpness=measure)
        with pytest.raises(InvalidParameterError, match="'sharpness' parameter"):
            estimator.fit(X, np.arange(10.0))


# --------------------------------------------------------------------------
# the kernel estimator answers the new measures exactly
# --------------------------------------------------------------------------


def _kernel_expected(model, X, Y, measure):
    n = len(X)
    if model.kernel == "linear":  # theta = coef_ in feature coordinates, H = X^T X / n
        W = np.atleast_2d(model.coef_).T
        A = X.T @ X / n
        return quadratic_model_sharpness(A, A @ W - X.T @ Y / n, W, measure=measure, rho=model.rho)
    from sklearn.metrics.pairwise import rbf_kernel

    K = rbf_kernel(X, X, gamma=model.gamma)
    alpha = model.dual_coef_.reshape(n, -1)
    if measure == "average":  # RKHS coordinates, as 'rho' and 'trace': H = K / n
        return 0.5 * model.rho**2 * alpha.shape[1] * np.trace(K) / n
    # the dual coefficients alpha: H = K^2 / n, g = K (K alpha - y) / n
    return quadratic_model_sharpness(
        K @ K / n, K @ (K @ alpha - Y) / n, alpha, measure=measure, rho=model.rho
    )


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("measure", ["average", "adaptive_rho", "adaptive_average"])
def test_kernel_estimator_answers_the_new_measures_exactly(kernel, measure):
    from sksam import SAMKernelRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((25, 3))
    Y = np.column_stack([X @ [1.0, -2.0, 0.5], np.sin(X[:, 0])]) + 0.1 * rng.standard_normal(
        (25, 2)
    )
    model = SAMKernelRegressor(
        kernel=kernel, gamma=0.3, sharpness=measure, rho=0.2, max_iter=200, tol=None
    ).fit(X, Y)
    expected = _kernel_expected(model, X, Y, measure)
    assert model.sharpness_ == pytest.approx(expected, rel=1e-6)
