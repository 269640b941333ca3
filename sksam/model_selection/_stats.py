r"""Paired tests on resampled scores: pure functions of a table of differences.

Two learners scored on the same ``J`` train/test splits give ``J`` paired
differences :math:`d_j`. Their mean estimates the expected gain of one
learner over the other at the training-set size used. The naive variance
:math:`s^2 / J` of that mean is too small because the training sets overlap
(the :math:`d_j` are positively correlated); Nadeau & Bengio (2003) correct
it to

.. math::

    \widehat{\operatorname{Var}}(\bar d) = \left(\frac{1}{J} +
    \frac{n_\text{test}}{n_\text{train}}\right) s^2,

with :math:`J - 1` degrees of freedom. The ratio is taken from the actual
split sizes, so the correction holds for any splitter (shuffle splits,
repeated K-fold, uneven folds); for K-fold it is :math:`1 / (K - 1)`.
The Bayesian correlated t-test (Benavoli, Corani, Demšar & Zaffalon, JMLR
2017) gives the posterior of the mean difference under the same model: a
Student t with :math:`J - 1` degrees of freedom, location :math:`\bar d` and
the corrected scale; with a region of practical equivalence
:math:`[-r, r]` it gives P(worse), P(equivalent), P(better).

References
----------
C. Nadeau and Y. Bengio, "Inference for the generalization error",
Machine Learning 52, 2003.

A. Benavoli, G. Corani, J. Demšar and M. Zaffalon, "Time for a change: a
tutorial for comparing multiple classifiers through Bayesian analysis",
JMLR 18, 2017.
"""

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

__all__ = [
    "PairedTestResult",
    "corrected_paired_ttest",
    "corrected_variance_factor",
]


def corrected_variance_factor(n_train, n_test):
    """Nadeau–Bengio factor ``1/J + n_test/n_train`` from the split sizes.

    Parameters
    ----------
    n_train, n_test : array-like of shape (n_splits,)
        Training and test sizes of each split (or scalars, repeated).

    Returns
    -------
    factor : float
        Multiplies the sample variance of the differences to give the
        variance of their mean. ``n_test/n_train`` is the ratio of the
        summed sizes (the per-split ratio when all splits have the same
        sizes).
    """
    n_train, n_test = np.broadcast_arrays(
        np.atleast_1d(np.asarray(n_train, dtype=float)),
        np.atleast_1d(np.asarray(n_test, dtype=float)),
    )
    if np.any(n_train <= 0) or np.any(n_test <= 0):
        raise ValueError(
            f"n_train and n_test must be positive split sizes, got {n_train!r} and {n_test!r}."
        )
    return 1.0 / len(n_train) + n_test.sum() / n_train.sum()


@dataclass(frozen=True)
class PairedTestResult:
    """A corrected paired t-test and its Bayesian posterior (scipy-like).

    Attributes
    ----------
    statistic : float
        Mean paired difference (first learner minus second: positive means
        the first scores higher).
    pvalue : float
        p-value of the corrected resampled t-test of ``alternative``.
    tstatistic : float
        The corrected t statistic ``statistic / std_error``.
    df : int
        Degrees of freedom, ``n_splits - 1``.
    std_error : float
        Corrected standard error of ``statistic``.
    n_splits : int
        Number of paired differences.
    rope : float
        Half-width of the region of practical equivalence.
    p_worse, p_equivalent, p_better : float
        Posterior probabilities (Bayesian correlated t-test) that the mean
        difference is below ``-rope``, within ``[-rope, rope]``, above
        ``rope``.
    alternative : str
        The alternative of ``pvalue``.
    """

    statistic: float
    pvalue: float
    tstatistic: float
    df: int
    std_error: float
    n_splits: int
    rope: float
    p_worse: float
    p_equivalent: float
    p_better: float
    alternative: str = "two-sided"

    def posterior(self):
        """The posterior of the mean difference, a frozen ``scipy.stats.t``.

        Returns
        -------
        posterior : scipy.stats frozen distribution
            Student t with ``df`` degrees of freedom, location ``statistic``
            and scale ``std_error`` (a point mass is approximated by a tiny
            scale when the differences do not vary).
        """
        scale = self.std_error if self.std_error > 0 else np.finfo(float).tiny
        return stats.t(self.df, loc=self.statistic, scale=scale)

    def confidence_interval(self, confidence_level=0.95):
        """Two-sided corrected t interval of the mean difference.

        Parameters
        ----------
        confidence_level : float, default=0.95
            Coverage of the interval.

        Returns
        -------
        low, high : float
            The bounds (equal to ``statistic`` when the differences do not
            vary). The interval is also the Bayesian credible interval of
            the same level.
        """
        if not 0 < confidence_level < 1:
            raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}.")
        half = special.stdtrit(self.df, 0.5 + confidence_level / 2) * self.std_error
        return float(self.statistic - half), float(self.statistic + half)


def corrected_paired_ttest(differences, n_train, n_test, *, rope=0.0, alternative="two-sided"):
    """Nadeau–Bengio corrected resampled t-test and Bayesian correlated t-test.

    Parameters
    ----------
    differences : array-like of shape (n_splits,)
        Score of the first learner minus score of the second, one per split
        (both scored on the same split). At least two.
    n_train, n_test : int or array-like of shape (n_splits,)
        Training and test sizes of the splits.
    rope : float, default=0.0
        Half-width of the region of practical equivalence, in score units.
    alternative : {'two-sided', 'greater', 'less'}, default='two-sided'
        Alternative hypothesis of ``pvalue`` about the mean difference
        (``'greater'``: the first learner scores higher).

    Returns
    -------
    result : PairedTestResult
        The statistic, p-value, corrected standard error and the posterior
        probabilities.

    Notes
    -----
    The t statistic is :math:`\\bar d / \\sqrt{(1/J + n_\\text{test} /
    n_\\text{train}) s^2}` with :math:`s^2` the sample variance (``ddof=1``)
    and :math:`J - 1` degrees of freedom. When the differences do not vary
    the standard error is 0: the p-value is 1 for a zero mean and 0
    otherwise, and the posterior is a point mass at the mean.
    """
    d = np.asarray(differences, dtype=float).ravel()
    if d.size < 2 or not np.all(np.isfinite(d)):
        raise ValueError(
            f"differences must hold at least 2 finite values, got {d.size} "
            f"({np.sum(~np.isfinite(d))} not finite)."
        )
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(
            f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}."
        )
    if not rope >= 0:
        raise ValueError(f"rope must be a float >= 0, got {rope!r}.")
    n_train = np.broadcast_to(n_train, d.shape)
    n_test = np.broadcast_to(n_test, d.shape)
    factor = corrected_variance_factor(n_train, n_test)
    mean, df = float(d.mean()), d.size - 1
    std_error = float(np.sqrt(factor * d.var(ddof=1)))
    tstat, pvalue = _t_and_pvalue(mean, std_error, df, alternative)
    p_worse, p_equivalent, p_better = _rope_probabilities(mean, std_error, df, rope)
    return PairedTestResult(
        statistic=mean,
        pvalue=pvalue,
        tstatistic=tstat,
        df=df,
        std_error=std_error,
        n_splits=d.size,
        rope=float(rope),
        p_worse=p_worse,
        p_equivalent=p_equivalent,
        p_better=p_better,
        alternative=alternative,
    )


def _t_and_pvalue(mean, std_error, df, alternative):
    if std_error == 0:  # every split gave the same difference: no noise to test against
        tstat = 0.0 if mean == 0 else np.copysign(np.inf, mean)
    else:
        tstat = mean / std_error
    # scipy.special's Student t cdf: the same numbers as scipy.stats.t without
    # its per-call overhead (simulations call this thousands of times)
    if alternative == "greater":
        pvalue = special.stdtr(df, -tstat)
    elif alternative == "less":
        pvalue = special.stdtr(df, tstat)
    else:
        pvalue = 2 * special.stdtr(df, -abs(tstat))
    return float(tstat), float(min(pvalue, 1.0))


def _rope_probabilities(mean, std_error, df, rope):
    """P(mu < -rope), P(|mu| <= rope), P(mu > rope) under the t posterior."""
    if std_error == 0:
        below, above = float(mean < -rope), float(mean > rope)
    else:
        below = float(special.stdtr(df, (-rope - mean) / std_error))
        above = float(special.stdtr(df, (mean - rope) / std_error))
    return below, max(0.0, 1.0 - below - above), above
