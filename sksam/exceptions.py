"""Warnings raised by sksam's estimators."""

from sklearn.exceptions import ConvergenceWarning

__all__ = ["DivergenceWarning"]


class DivergenceWarning(ConvergenceWarning):
    """Training diverged: the fitted model is not a usable solution.

    A subclass of :class:`~sklearn.exceptions.ConvergenceWarning`, so that
    filters on convergence warnings also see it. The message gives the cause
    (for example the loss grew by orders of magnitude, or every hidden unit
    died) and the remedy (standardize the data, lower the learning rate).

    Examples
    --------
    >>> import warnings
    >>> from sksam.exceptions import DivergenceWarning
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", DivergenceWarning)
    """
