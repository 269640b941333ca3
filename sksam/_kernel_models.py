"""The kernel regressor's parts: kernel, data source, parametrization, validation score.

:class:`~sksam.SAMKernelRegressor.fit` is ``select -> build -> solve ->
finish`` over these objects: a data source (:class:`InMemoryRows`,
:class:`DaskRows`), a parametrization (:class:`ExactDual`,
:class:`NystroemFeatures`, :class:`LinearPrimal`) whose ``build`` returns the
problem the path solver runs and whose ``finish`` gives the fitted
attributes, and a validation score (:class:`R2Score`, :class:`AccuracyScore`).
The user guide, :doc:`/kernel_scale`, draws the pipeline.
"""

import copy as _copy
import warnings

import numpy as np
from scipy import sparse
from sklearn.metrics.pairwise import pairwise_kernels
from sklearn.utils import check_random_state

from ._base import winners
from ._kernel_features import (
    KernelSpec,
    LinearMap,
    Moments,
    NystroemMap,
    block_rows,
    check_memory,
    dask_moments,
    is_dask,
    stream_moments,
)
from ._kernel_path import (
    dual_dynamics,
    flush_subnormal,
    primal_dynamics,
    symmetric_eigh,
    top_eigenvalue,
)
from .sharpness import LOGIT_MEASURES, MEASURES, quadratic_sharpness

#: Sharpness measures the kernel models compute exactly: all of
#: :data:`sksam.sharpness.MEASURES` but the logit-normalized ones, which are
#: defined on a cross-entropy's logits (a squared loss has none); those are
#: refused by name at fit.
KERNEL_MEASURES = tuple(m for m in MEASURES if m not in LOGIT_MEASURES)

#: The measures that scale the perturbation by ``|w|`` elementwise: they need
#: the weights in the model's parameter coordinates.
ADAPTIVE_MEASURES = ("adaptive_rho", "adaptive_average")

#: Largest kernel eigenvalue below which float64 loses the kernel: its products
#: (K^2 in the Krylov basis, the loss) reach the subnormal range.
SMALLEST_KERNEL_SCALE = 1e-150


# ------------------------------------------------------------------ kernel


class KernelFunction:
    """The kernel as :class:`sklearn.kernel_ridge.KernelRidge` evaluates it, checked finite."""

    def __init__(self, kernel, gamma=None, degree=3, coef0=1, kernel_params=None):
        self.kernel, self.gamma, self.degree = kernel, gamma, degree
        self.coef0, self.kernel_params = coef0, kernel_params

    @property
    def precomputed(self):
        return isinstance(self.kernel, str) and self.kernel == "precomputed"

    def __call__(self, X, Y=None):
        if callable(self.kernel):
            params = self.kernel_params or {}
        else:
            params = {"gamma": self.gamma, "degree": self.degree, "coef0": self.coef0}
            # gamma=None: each kernel's own default (chi2's is 1, not None)
            params = {key: value for key, value in params.items() if value is not None}
        K = pairwise_kernels(X, Y, metric=self.kernel, filter_params=True, **params)
        K = K.toarray() if sparse.issparse(K) else np.asarray(K, dtype=np.float64)
        if not np.isfinite(K).all():
            raise ValueError(f"The kernel {self.kernel!r} returned NaN or infinite values.")
        return K

    def train(self, X):
        """Kernel matrix of the training data, checked to be symmetric."""
        K = self(X)
        if self.precomputed or callable(self.kernel):
            # the named kernels are symmetric by construction; these may not be
            scale = max(np.abs(K).max(), np.finfo(float).tiny)
            if not np.allclose(K, K.T, rtol=0, atol=1e-10 * scale):
                raise ValueError(
                    "The kernel matrix is not symmetric; gradient descent on kernel "
                    "regression needs a symmetric positive semi-definite kernel."
                )
            K = (K + K.T) / 2
        return K

    def spec(self):
        """The kernel for the feature maps (numpy, or torch for the common names)."""
        name = self.kernel if isinstance(self.kernel, str) else None
        return KernelSpec(self, name, self.gamma, self.degree, self.coef0)

    def check_scale(self, lam_max, X):
        """Refuse a kernel too small for float64 (it underflowed, or soon will)."""
        if lam_max >= SMALLEST_KERNEL_SCALE:
            return
        x_scale = None
        if not (self.precomputed or callable(self.kernel) or is_dask(X)):
            values = X.data if sparse.issparse(X) else X
            x_scale = float(np.abs(values).max(initial=0.0))
        if lam_max <= 0 and not x_scale:
            return  # a zero kernel on zero data: nothing to learn
        scale = "" if x_scale is None else f" on features of magnitude up to {x_scale:.3g}"
        if lam_max == 0:  # exactly zero: underflow, or parameters that cancel the kernel
            raise ValueError(
                f"The kernel {self.kernel!r}{scale} gives a zero matrix, so every "
                "gradient is zero: its values are too small for float64 (they "
                "underflow), or its parameters cancel it (gamma="
                f"{self.gamma!r}, coef0={self.coef0!r}; gamma=0 with coef0=0 makes the "
                "polynomial and sigmoid kernels 0). Standardize X (e.g. "
                "sklearn.preprocessing.StandardScaler) or change the kernel's parameters."
            )
        raise ValueError(
            f"The kernel {self.kernel!r}{scale} is too small for float64: the largest "
            f"eigenvalue of its matrix is {lam_max:.3g} (below "
            f"{SMALLEST_KERNEL_SCALE:.0e}), so its values underflow. Standardize X "
            "(e.g. sklearn.preprocessing.StandardScaler) or rescale the kernel."
        )


class _PrecomputedSpec:
    """Kernel against the centres = columns of a precomputed kernel matrix."""

    name = None

    def numpy_kernel(self, X, C):
        return np.asarray(X[:, C.astype(np.intp)], dtype=np.float64)


# ------------------------------------------------------------- data sources


class InMemoryRows:
    """numpy / scipy.sparse (or torch-backed) rows read in blocks."""

    def __init__(self, ops=None):
        self.ops = ops

    def moments(self, X, Y, weights, feature_map):
        return stream_moments(X, Y, weights, feature_map, self.ops)

    def max_abs(self, Y):
        return float(np.abs(Y).max(initial=0.0))

    def apply(self, features, X, right):
        """``features(X) @ right``, in blocks of rows."""
        rows = block_rows(right.shape[0])
        parts = [features(X[start : start + rows]) @ right for start in range(0, X.shape[0], rows)]
        return np.vstack(parts) if parts else np.empty((0, right.shape[1]))


class DaskRows(InMemoryRows):
    """The row chunks of a dask array: map-reduce on the active scheduler."""

    def moments(self, X, Y, weights, feature_map):
        return dask_moments(X, Y, weights, feature_map, self.ops)

    def max_abs(self, Y):
        return float(abs(Y).max().compute()) if is_dask(Y) else super().max_abs(Y)

    def apply(self, features, X, right):
        X = X.rechunk({1: X.shape[1]})
        return X.map_blocks(
            _apply_block, features, right, chunks=(X.chunks[0], (right.shape[1],)), dtype=np.float64
        )


def _apply_block(X, features, right):
    return InMemoryRows().apply(features, X, right)


def data_source(X, y=None, ops=None):
    """The data source of ``X`` (and ``y``): dask chunks, or rows in memory."""
    return DaskRows(ops) if is_dask(X) or is_dask(y) else InMemoryRows(ops)


def check_dask(X, y, estimator_name):
    """Shape checks of dask inputs (their values are read chunk by chunk)."""
    if X.ndim != 2:
        raise ValueError(f"Expected a 2D dask array X, got {X.ndim}D.")
    unknown = [name for name, a in (("X", X), ("y", y)) if any(np.isnan(c) for c in a.shape)]
    if unknown:
        calls = " and ".join(f"{name}.compute_chunk_sizes()" for name in unknown)
        raise ValueError(
            f"The dask array {' and '.join(unknown)} has unknown chunk sizes (X.shape="
            f"{X.shape}, y.shape={y.shape}), as after boolean indexing; call {calls} "
            "before fit."
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(
            f"Found array with {X.shape[0]} sample(s) and {X.shape[1]} feature(s) "
            f"(shape={X.shape}) while a minimum of 1 is required by {estimator_name}."
        )
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"y must have shape ({X.shape[0]},) or ({X.shape[0]}, n_outputs), got {y.shape}."
        )
    return X, y


# ---------------------------------------------------------- validation scores


class _Score:
    """A validation score: ``scorer(Y, w)`` fixes the targets, ``rows`` scores once."""

    def rows(self, pred, Y, w=None):
        """From outputs ``pred`` of (coded) targets ``Y`` (2D), weights ``w``."""
        return self.scorer(Y, w)(pred)


class R2Score(_Score):
    """:math:`R^2` averaged over outputs, as ``sklearn.metrics.r2_score``.

    Written out because early stopping scores every step: ``r2_score``'s input
    validation costs about 170 us a call against 13 us here, which over 1000
    steps is more than a whole small fit. Tested against ``r2_score``.

    A constant target scores as ``r2_score`` (``force_finite=True``) says:
    1 for a perfect prediction, else 0. The total sum of squares of a
    constant column is taken as exactly zero: computed, it is the rounding
    of the mean (``1e-33`` for ten rows of 0.1), and dividing by it gave
    scores of about ``-1e31`` that decided the step of early stopping and of
    the CV estimators.
    """

    name = "R^2"

    def scorer(self, Y, w=None):
        """``score(pred)`` for fixed targets ``Y`` (2D) and weights ``w``."""
        # r2_score's sums: unnormalized weights, the mean of np.average
        mean = np.average(Y, axis=0, weights=w)
        w = np.ones((len(Y), 1)) if w is None else np.asarray(w, dtype=np.float64)[:, None]
        ss_tot = np.sum(w * (Y - mean) ** 2, axis=0)
        ss_tot[_constant_columns(Y, w)] = 0.0

        def score(pred):
            return self.from_sums(np.sum(w * (Y - pred) ** 2, axis=0), ss_tot)

        return score

    @staticmethod
    def from_sums(ss_res, ss_tot):
        """From the residual and total sums of squares per output."""
        safe = ss_tot > 0
        scores = np.where(
            safe, 1 - ss_res / np.where(safe, ss_tot, 1), np.where(ss_res == 0, 1.0, 0.0)
        )
        return float(scores.mean())

    def moments(self, stats, V):
        """Score of ``theta = V a`` from the validation moments (no rows kept).

        ``||Phi_val theta - y||_W^2 / n_val = a^T (V^T A_val V) a - 2 a^T V^T b_val
        + y_sq``, per output. ``ss_tot = y_sq - y_mean^2`` cancels to a few
        roundings of ``y_sq`` for a constant target: below that it is taken as
        zero (the moments do not keep the rows to check them).
        """
        G, h = V.T @ stats.A @ V, V.T @ stats.b
        ss_tot = stats.y_sq - stats.y_mean**2
        ss_tot = np.where(ss_tot > _MOMENT_ROUNDING * stats.y_sq, ss_tot, 0.0)

        def score(a):
            ss_res = np.einsum("ik,ij,jk->k", a, G, a) - 2 * np.sum(a * h, 0) + stats.y_sq
            return self.from_sums(np.maximum(ss_res, 0.0), ss_tot)

        return score


#: Relative rounding of ``y_sq - y_mean^2`` from streamed moments: a variance
#: below this fraction of the mean square is indistinguishable from zero.
_MOMENT_ROUNDING = 64 * np.finfo(np.float64).eps


def _constant_columns(Y, w):
    """Columns of ``Y`` constant over the rows of positive weight."""
    rows = Y[w[:, 0] > 0]
    if rows.shape[0] == 0:
        return np.ones(Y.shape[1], dtype=bool)
    return np.all(rows == rows[:1], axis=0)


class AccuracyScore(_Score):
    """Accuracy of ``+-1``-coded outputs, weighted, as ``sklearn.metrics.accuracy_score``.

    The class of a row is :func:`~sksam._base.winners`'s, as in ``predict``,
    so the validation score and ``predict`` agree.
    """

    name = "accuracy"

    def scorer(self, Y, w=None):
        """``score(pred)`` for fixed coded targets ``Y`` (2D) and weights ``w``."""
        w = np.ones(len(Y)) if w is None else np.asarray(w, dtype=np.float64)
        total = w.sum()
        truth = winners(Y)

        def score(pred):
            # the weighted count, divided once: unit weights give k / n exactly
            return float(w @ (winners(pred) == truth)) / total

        return score


def _projected_score(score, project):
    """``score_of(path)``: the score of Ritz coordinates ``a``, rows ``project(path) @ a``."""

    def score_of(path):
        P = project(path)
        return lambda a: score(P @ a)

    return score_of


class _RowProjector:
    """``left @ Q[:, :m] @ S``, extended column by column as the basis grows."""

    def __init__(self, left):
        self.left = left
        self.product = np.zeros((left.shape[0], 0))

    def __call__(self, path):
        m = path.Qm.shape[1]
        done = self.product.shape[1]
        if m > done:
            self.product = np.hstack([self.product, self.left @ path.Qm[:, done:]])
        product = self.product[:, :m]
        return product if path.S is None else product @ path.S  # S None: eigenbasis


# ----------------------------------------------------------------- problems


class _Problem:
    """What the path solver needs: ``matrix``, ``start``, ``scale``, dynamics, score.

    ``krylov_checkpoints``: after :meth:`share`, the dict in which the paths of
    this problem and its :meth:`rescaled` copies leave their Krylov checkpoints.
    """

    krylov_checkpoints = None

    def __init__(self, matrix, start, scale, s_max, score_of):
        self.matrix, self.start = matrix, start
        self.scale = abs(scale)  # lambda_max of matrix: the deflation scale
        self.s_max = s_max  # top eigenvalue of the Hessian of the loss
        self._score_of = score_of

    def validation(self, path):
        return None if self._score_of is None else self._score_of(path)

    def share(self):
        """Let the paths solved on this problem share their Krylov basis; ``self``."""
        if self._score_of is not None:
            # the validation score holds the scaled targets: it cannot be rescaled
            raise ValueError("A shared kernel problem cannot have a validation part.")
        self.krylov_checkpoints = {}
        return self

    def rescaled(self, factor):
        """The same problem with the targets times ``factor`` (a power of two: exact).

        ``matrix``, ``scale`` and ``s_max`` do not depend on the targets; the
        copy shares the Krylov checkpoints, whose basis depends on the start
        block's direction only.
        """
        if factor == 1.0:
            return self
        if self._score_of is not None:
            raise ValueError("A kernel problem with a validation part cannot be rescaled.")
        copy = _copy.copy(self)
        copy._scale_targets(factor)
        return copy

    def _scale_targets(self, factor):
        self.start = self.start * factor


class DualProblem(_Problem):
    """Kernel space: ``matrix = W^1/2 K W^1/2``, ``n = sum w``."""

    def __init__(self, K, start, lam_max, n, score_of):
        super().__init__(K, start, lam_max, lam_max / n, score_of)
        self.n = n

    def dynamics(self, path):
        return dual_dynamics(path.theta, path.z, self.n)


class PrimalProblem(_Problem):
    """Feature space: ``matrix = A``, ``start = b`` of the training moments."""

    def __init__(self, stats, lam_max, score_of):
        super().__init__(stats.A, stats.b, lam_max, lam_max, score_of)
        self.stats = stats

    def dynamics(self, path):
        return primal_dynamics(path.theta, path.z, self.stats.yy)

    def _scale_targets(self, factor):
        stats = self.stats = _copy.copy(self.stats)
        stats.b = stats.b * factor
        stats.yy, stats.y_sq = stats.yy * factor**2, stats.y_sq * factor**2
        stats.y_mean = stats.y_mean * factor
        self.start = stats.b


# ---------------------------------------------------------- parametrizations


class ExactDual:
    """``f = sum_i alpha_i k(x_i, .)`` over the training rows: the ``n x n`` kernel."""

    name = "exact"

    def __init__(self, kernel):
        self.kernel = kernel

    def build(self, X, Y, sw, train, val, metric):
        n_train, n_val = len(train), 0 if val is None else len(val)
        # K, one temporary of pairwise_kernels, the weighted copy, the validation rows
        check_memory(
            8 * n_train * (3 * n_train + n_val),
            f"The exact kernel path on {n_train} samples (an {n_train} x {n_train} matrix)",
            "Set n_components (e.g. n_components=2000) to fit a Nystroem model in a "
            "streaming pass, whose memory does not grow with n_samples.",
        )
        if self.kernel.precomputed:
            if X.shape[0] != X.shape[1]:
                raise ValueError(
                    "With kernel='precomputed', X must be the square kernel matrix of "
                    f"the training data at fit time, got shape {X.shape}."
                )
            K = self.kernel.train(X[train][:, train])
            K_val = None if val is None else self.kernel(X[val][:, train], X[train])
            # with a validation split, predict keeps the training part's columns
            self.columns = None if val is None else train
        else:
            K = self.kernel.train(X[train])
            K_val = None if val is None else self.kernel(X[val], X[train])
            self.columns = None
        self.X_fit = X[train]
        # weights: gamma = W^{-1/2} alpha follows the unweighted rule on
        # W^{1/2} K W^{1/2} and W^{1/2} y, with n the sum of the weights
        self.root_w = s = np.sqrt(sw[train])
        # flushed after the weighting, which can itself underflow an entry
        K = flush_subnormal(s[:, None] * K * s[None, :])
        n = float(sw[train].sum())
        self.lambda_max = lam_max = top_eigenvalue(K)
        self.kernel.check_scale(lam_max, X)
        score_of = None
        if K_val is not None:
            # validation predictions K_val alpha = (K_val W^{1/2}) V a
            score_of = _projected_score(
                metric.scorer(Y[val], sw[val]), _RowProjector(K_val * s[None, :])
            )
        return DualProblem(K, s[:, None] * Y[train], lam_max, n, score_of)

    def finish(self, result, coef, one_output):
        """The prediction basis and the public attributes."""
        self.basis = self.root_w[:, None] * result.path.V  # alpha = W^{1/2} V a
        alpha = self.basis @ coef
        return {"dual_coef_": alpha.ravel() if one_output else alpha, "X_fit_": self.X_fit}

    def features(self, X):
        if self.columns is not None:
            X = X[:, self.columns]
        return self.kernel(X, self.X_fit)

    def sharpness(self, measure, rho, problem, result, gradient_scale):
        """Exact sharpness of the training loss at the fitted weights.

        ``'top_eigenvalue'``, ``'trace'``, ``'rho'`` and ``'average'`` are
        taken in the RKHS (``H = K / n`` per output, ``K`` weighted): the
        coordinates of SAM's perturbation. The adaptive measures scale the
        perturbation by the dual coefficients ``|alpha|`` (``dual_coef_``), in
        which ``L(alpha) = ||W^1/2 (K alpha - y)||^2 / (2 n)`` has the Hessian
        ``K W K / n``. They are computed in ``gamma = W^{-1/2} alpha`` (the
        path's coordinates, ``H = K_w^2 / n``): an adaptive measure does not
        change under a rescaling of each coordinate, so the two agree.
        """
        theta, z, coef = result.path.theta, result.path.z, result.coef
        n, k = problem.n, coef.shape[1]
        if measure in ("trace", "average"):
            # tr(H) = tr(K) / n per output; the Krylov basis holds only some eigenvalues
            trace = float(k * np.trace(problem.matrix) / n)
            return _trace_measure(measure, rho, trace)
        if measure in ADAPTIVE_MEASURES:
            return self._adaptive_sharpness(measure, rho, problem, result, gradient_scale)
        # Hessian eigenvalues theta / n, and lambda_max(K) / n whose eigenvector may
        # lie outside the basis (it then carries no gradient).
        eigenvalues = np.append(theta, self.lambda_max) / n
        residual = (theta[:, None] * coef - z) * gradient_scale
        # g = Phi^T r / n has the coordinate sqrt(lambda_i) (u_i^T r) / n along u_i
        gradient = np.sqrt(np.clip(theta, 0, None))[:, None] * residual / n
        gradient = np.vstack([gradient, np.zeros((1, k))])
        return quadratic_sharpness(eigenvalues, gradient, measure=measure, rho=rho)

    def _adaptive_sharpness(self, measure, rho, problem, result, gradient_scale):
        """The adaptive measures in ``gamma`` (``H = K_w^2 / n``): all ``n`` coordinates.

        The perturbation ``|gamma| * u`` leaves the Krylov basis, so the Ritz
        values do not suffice: ``'adaptive_average'`` needs the diagonal of
        ``H`` (``O(n^2)``), ``'adaptive_rho'`` the eigendecomposition of
        ``K_w`` (``O(n^3)``, plus one per output).
        """
        K, n = problem.matrix, problem.n
        gamma = result.path.V @ result.coef * gradient_scale
        residual = K @ gamma - problem.start * gradient_scale
        if measure == "adaptive_average":
            # rho^2 / 2 sum_i gamma_i^2 H_ii, H_ii = sum_j K_ij^2 / n
            diagonal = np.einsum("ij,ij->i", K, K) / n
            return float(0.5 * rho**2 * np.sum(gamma**2 * diagonal[:, None]))
        lam, U = symmetric_eigh(K, driver="numpy")
        # H = U diag(lam^2) U^T / n; g = K r / n has the coordinates lam (U^T r) / n
        gradient = lam[:, None] * (U.T @ residual) / n
        return quadratic_sharpness(
            lam**2 / n, gradient, measure=measure, rho=rho, weights=gamma, eigenvectors=U
        )


def _trace_measure(measure, rho, trace):
    """``'trace'``, or ``'average'``: E g.e + e.H.e / 2 over e ~ N(0, rho^2 I)."""
    return trace if measure == "trace" else 0.5 * rho**2 * trace


class _FeatureSpace:
    """``f = phi(x)^T theta``: the data enter through ``A`` and ``b``, one streaming pass."""

    def __init__(self, kernel, source):
        self.kernel, self.source = kernel, source

    def _width(self, X, train):
        """The number of features ``phi`` has (each parametrization says)."""
        raise NotImplementedError  # abstract: NystroemFeatures and LinearPrimal define it

    def build(self, X, Y, sw, train, val, metric):
        n = X.shape[0]
        weights = [np.where(_mask(n, train), sw, 0.0)]
        if val is not None:
            weights.append(np.where(_mask(n, val), sw, 0.0))
        width = self._width(X, train)
        # K_CC and its eigenvectors, A (train, validation) and their products, two blocks
        check_memory(
            8 * ((3 + 2 * len(weights)) * width**2 + 2 * block_rows(width + X.shape[1]) * width),
            f"The feature-space path with {width} features",
            "Use a smaller n_components.",
        )
        self.feature_map = self._feature_map(X, train)
        stats = [Moments(*m) for m in self.source.moments(X, Y, weights, self.feature_map)]
        for part in stats:
            flush_subnormal(part.A)  # the path's matrix, as the exact path's K
        self.lambda_max = lam_max = top_eigenvalue(stats[0].A)
        self.kernel.check_scale(lam_max, X)
        score_of = None
        if val is not None:
            score_of = self._scorer(metric, stats[1], X, Y, sw, val)
        return PrimalProblem(stats[0], lam_max, score_of)

    def _scorer(self, metric, stats, X, Y, sw, val):
        if hasattr(metric, "moments"):  # R^2: a quadratic form in theta
            return lambda path: metric.moments(stats, path.V)
        # other scores (accuracy) need the validation rows' features; a dask
        # array's validation rows (a fraction of the data) are read into memory
        X_val = X[val].compute() if is_dask(X) else X[val]
        X_val = X_val.toarray() if sparse.issparse(X_val) else X_val
        Phi = self.source.ops.to_numpy(self.feature_map(X_val, self.source.ops))
        return _projected_score(metric.scorer(Y[val], sw[val]), lambda path: Phi @ path.V)

    def sharpness(self, measure, rho, problem, result, gradient_scale):
        """Exact sharpness: the Hessian is ``A`` itself (in ``theta``).

        The adaptive measures are taken in the parameter coordinates
        :meth:`_parameters` gives (``coef_`` for the linear path, the centre
        coefficients for Nystroem).
        """
        A, b = problem.stats.A, problem.stats.b
        k = result.coef.shape[1]
        if measure == "top_eigenvalue":
            return float(self.lambda_max)
        if measure in ("trace", "average"):
            trace = float(k * np.trace(A))
            return _trace_measure(measure, rho, trace)
        theta = result.path.V @ result.coef * gradient_scale
        gradient = A @ theta - b * gradient_scale
        weights = None
        if measure in ADAPTIVE_MEASURES:
            A, gradient, weights = self._parameters(A, gradient, theta)
        lam, U = symmetric_eigh(A, driver="numpy")
        return quadratic_sharpness(
            lam,
            U.T @ gradient,
            measure=measure,
            rho=rho,
            weights=weights,
            eigenvectors=None if weights is None else U,
        )

    def _parameters(self, A, gradient, theta):
        """Hessian, gradient and weights in the coordinates of the adaptive measures."""
        return A, gradient, theta


class NystroemFeatures(_FeatureSpace):
    """Orthonormal Nystroem features of ``M`` centres (drawn, or given)."""

    name = "nystroem"

    def __init__(self, kernel, source, n_components, centers, random_state):
        super().__init__(kernel, source)
        self.n_components, self.centers, self.random_state = n_components, centers, random_state

    def _width(self, X, train):
        if self.centers is not None:
            return len(self.centers)
        return min(self.n_components, len(train))

    def _feature_map(self, X, train):
        if self.kernel.precomputed:
            # the centres are columns of the precomputed kernel
            idx = self._center_indices(train)
            feature_map = NystroemMap(_PrecomputedSpec(), idx.astype(np.float64), X[idx][:, idx])
            self.centers_ = idx[feature_map.kept]
        else:
            feature_map = NystroemMap(self.kernel.spec(), self._centers(X, train))
            self.centers_ = feature_map.centers
        return feature_map

    def _centers(self, X, train):
        if self.centers is not None:
            centers = np.asarray(self.centers, dtype=np.float64)
            if centers.ndim != 2 or centers.shape[1] != X.shape[1]:
                raise ValueError(
                    f"centers must have shape (n_centers, {X.shape[1]}), got {centers.shape}."
                )
            if self.n_components is not None and self.n_components != centers.shape[0]:
                raise ValueError(
                    f"n_components={self.n_components} but {centers.shape[0]} centers were given."
                )
            return centers
        centers = X[self._center_indices(train)]
        if sparse.issparse(centers):
            centers = centers.toarray()
        return np.asarray(centers, dtype=np.float64)

    def _center_indices(self, train):
        m = self.n_components
        if m > len(train):
            warnings.warn(
                f"n_components={m} is larger than the {len(train)} training samples; "
                f"using all {len(train)} of them as centres.",
                UserWarning,
                stacklevel=5,
            )
            m = len(train)
        rng = check_random_state(self.random_state)
        return np.sort(rng.choice(train, size=m, replace=False))

    def _parameters(self, A, gradient, theta):
        """In the centre coefficients ``beta = L^{-T} theta`` (``f = sum_j beta_j k(c_j, .)``).

        The coordinates the exact path's ``dual_coef_`` has: with every
        training row a centre (and none dropped) the adaptive measures agree
        with it. ``theta = L^T beta`` gives ``H_beta = L A L^T``, ``g_beta = L g``.
        """
        L = self.feature_map.cholesky
        return L @ A @ L.T, L @ gradient, self.feature_map.center_coefficients(theta)

    def finish(self, result, coef, one_output):
        # coefficients of the kernel at the centres
        self.basis = self.feature_map.center_coefficients(result.path.V)
        return {"centers_": self.centers_, "n_components_": self.feature_map.n_features_out}

    def features(self, X):
        ops = self.source.ops
        centers, _ = self.feature_map._on(ops)
        return ops.to_numpy(ops.kernel(self.feature_map.spec, ops.asarray(X), centers))


class LinearPrimal(_FeatureSpace):
    """``phi(x) = x``: the weights themselves, ``coef_``."""

    name = "linear"

    def _width(self, X, train):
        return X.shape[1]

    def _feature_map(self, X, train):
        return LinearMap(X.shape[1])

    def finish(self, result, coef, one_output):
        self.basis = result.path.V
        theta = self.basis @ coef
        return {
            "coef_": theta.T[0] if one_output else theta.T,
            "n_components_": self.feature_map.n_features_out,
        }

    def features(self, X):
        return X.toarray() if sparse.issparse(X) else X


def _mask(n, index):
    mask = np.zeros(n, dtype=bool)
    mask[index] = True
    return mask
