"""A display of :func:`sksam.model_selection.compare_solvers`' result.

A thin view in scikit-learn's Display style: ``__init__`` stores numbers,
:meth:`ComparisonDisplay.plot` draws, :meth:`ComparisonDisplay.from_result`
reads a :class:`~sksam.model_selection.SolverComparison`. One row per
contrast (solver against the baseline) in every panel, so labels never
overlap whatever the number of solvers.
"""

import numpy as np
from scipy import stats

from ._displays import drawn, target_axes

#: Height of a posterior ridge in its row (rows are one unit apart).
_RIDGE = 0.7


class ComparisonDisplay:
    """Paired differences per split, their posterior, and the cost, one row per solver.

    Use :meth:`from_result` on the result of
    :func:`~sksam.model_selection.compare_solvers`.

    Parameters
    ----------
    contrasts : list of str
        The solvers compared with ``baseline``.
    differences : ndarray of shape (n_splits, n_contrasts)
        Per-split score of each contrast minus the baseline's.
    statistic, std_error : ndarray of shape (n_contrasts,)
        Mean difference and its corrected standard error.
    df : int
        Degrees of freedom of the t posterior (``n_splits - 1``).
    probabilities : ndarray of shape (n_contrasts, 3)
        Posterior P(worse), P(equivalent), P(better).
    fit_time_ratio : ndarray of shape (n_contrasts,)
        Mean fit time of each contrast over the baseline's.
    baseline : str
        The baseline's label.
    rope : float
        Half-width of the region of practical equivalence.
    scoring : str, default='score'
        Name of the score.

    Attributes
    ----------
    axes_ : ndarray of 3 matplotlib Axes
        Differences, posterior, cost.
    figure_ : matplotlib Figure
        The figure holding ``axes_``.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.model_selection import compare_solvers
    >>> from sksam.inspection import ComparisonDisplay
    >>> X, y = load_diabetes(return_X_y=True)
    >>> result = compare_solvers(SAMKernelRegressor(max_iter=100), X, y / 100)
    >>> display = ComparisonDisplay.from_result(result)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        contrasts,
        differences,
        statistic,
        std_error,
        df,
        probabilities,
        fit_time_ratio,
        baseline,
        rope,
        scoring="score",
    ):
        self.contrasts = list(contrasts)
        self.differences = np.asarray(differences, dtype=float).reshape(-1, len(self.contrasts))
        self.statistic = np.asarray(statistic, dtype=float)
        self.std_error = np.asarray(std_error, dtype=float)
        self.df = df
        self.probabilities = np.asarray(probabilities, dtype=float)
        self.fit_time_ratio = np.asarray(fit_time_ratio, dtype=float)
        self.baseline = baseline
        self.rope = rope
        self.scoring = scoring

    @classmethod
    def from_result(cls, result, *, axes=None):
        """Draw a :class:`~sksam.model_selection.SolverComparison`.

        Parameters
        ----------
        result : SolverComparison
            The result of :func:`~sksam.model_selection.compare_solvers`.
        axes : array-like of 3 matplotlib Axes, default=None
            Where to draw; a new figure when omitted.

        Returns
        -------
        display : ComparisonDisplay
            The display, drawn.
        """
        display = cls(
            contrasts=result.contrasts,
            differences=np.column_stack([result.differences(c) for c in result.contrasts]),
            statistic=result.statistic,
            std_error=result.std_error,
            df=len(result.n_train) - 1,
            probabilities=np.column_stack([result.p_worse, result.p_equivalent, result.p_better]),
            fit_time_ratio=result.fit_time_ratio,
            baseline=result.baseline,
            rope=result.rope,
            scoring=result.scoring,
        )
        return display.plot(axes=axes)

    def plot(self, axes=None):
        """Draw the three panels.

        Parameters
        ----------
        axes : array-like of 3 matplotlib Axes, default=None
            Where to draw the differences, the posterior and the cost; a
            new 1x3 figure (taller with more solvers) when omitted.

        Returns
        -------
        self : ComparisonDisplay
            This display, with ``axes_`` and ``figure_`` set.
        """
        height = 1.6 + 0.55 * len(self.contrasts)
        figure = {"figsize": (11, height), "layout": "constrained", "width_ratios": [3, 3, 2]}
        axes = np.asarray(target_axes(self, axes, ncols=3, **figure)).ravel()
        rows = np.arange(len(self.contrasts))
        names = [f"{c} - {self.baseline}" for c in self.contrasts]
        self._plot_differences(axes[0], rows, names)
        self._plot_posterior(axes[1], rows)
        self._plot_cost(axes[2], rows)
        return drawn(self, axes, "axes_")

    @staticmethod
    def _label_rows(ax, rows, xlabel, title, names=None):
        """One row per contrast, the first on top; only the first panel names them."""
        ax.set_yticks(rows, [""] * len(rows) if names is None else names)
        ax.set_ylim(rows[-1] + 0.6, -0.6)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9)

    def _rope_band(self, ax):
        ax.axvline(0, color="0.3", lw=0.8)
        if self.rope > 0:
            ax.axvspan(-self.rope, self.rope, color="0.85", zorder=0)

    def _plot_differences(self, ax, rows, names):
        n_splits = self.differences.shape[0]
        spread = np.linspace(-0.25, 0.25, n_splits)  # split k drawn at the same offset in each row
        for row in rows:
            ax.plot(self.differences[:, row], row + spread, "o", ms=3, color="0.45", alpha=0.7)
        half = stats.t.ppf(0.975, self.df) * self.std_error
        ax.errorbar(self.statistic, rows, xerr=half, fmt="D", color="C3", capsize=4)
        self._rope_band(ax)
        title = "paired differences\n(dots: splits; diamond: mean, 95% CI)"
        self._label_rows(ax, rows, f"{self.scoring} difference per split", title, names)

    def _plot_posterior(self, ax, rows):
        scale = np.where(self.std_error > 0, self.std_error, 1e-12)
        low = np.min(self.statistic - 4 * scale)
        high = np.max(self.statistic + 4 * scale)
        grid = np.linspace(min(low, -2 * self.rope), max(high, 2 * self.rope), 400)
        for row in rows:
            density = stats.t.pdf(grid, self.df, loc=self.statistic[row], scale=scale[row])
            ridge = row + 0.35 - _RIDGE * density / density.max()  # rows grow downwards
            ax.fill_between(grid, row + 0.35, ridge, color=f"C{row % 10}", alpha=0.5)
            worse, equivalent, better = self.probabilities[row]
            ax.text(
                0.01,
                row + 0.45,
                f"P worse {worse:.2f} | equiv. {equivalent:.2f} | better {better:.2f}",
                transform=ax.get_yaxis_transform(),
                fontsize=7,
                va="center",
            )
        self._rope_band(ax)
        title = "posterior of the mean difference\n(grey: region of practical equivalence)"
        self._label_rows(ax, rows, f"mean {self.scoring} difference", title)

    def _plot_cost(self, ax, rows):
        bars = ax.barh(rows, self.fit_time_ratio, color=[f"C{r % 10}" for r in rows], alpha=0.7)
        ax.bar_label(bars, fmt="%.2fx", fontsize=8, padding=2)
        ax.axvline(1, color="0.3", lw=0.8)
        ax.set_xlim(0, 1.25 * max(1.0, np.nanmax(self.fit_time_ratio)))
        title = "cost\n(final fit, mean over splits)"
        self._label_rows(ax, rows, f"fit time / {self.baseline}'s", title)
