"""Paired, nested comparisons of solvers, and the statistics behind them.

:func:`compare_solvers` fits every solver on the same outer splits, tunes
each inside the outer training parts and returns a
:class:`SolverComparison`; :func:`corrected_paired_ttest` is the statistics
alone, on any table of paired differences.
"""

from ._compare import DEFAULT_RHOS, DEFAULT_SAM_EVERY, compare_solvers
from ._result import SolverComparison
from ._stats import PairedTestResult, corrected_paired_ttest, corrected_variance_factor

__all__ = [
    "DEFAULT_RHOS",
    "DEFAULT_SAM_EVERY",
    "PairedTestResult",
    "SolverComparison",
    "compare_solvers",
    "corrected_paired_ttest",
    "corrected_variance_factor",
]
