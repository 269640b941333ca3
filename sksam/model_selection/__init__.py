"""Paired, nested comparisons of solvers, and the statistics behind them."""

from ._stats import PairedTestResult, corrected_paired_ttest, corrected_variance_factor

__all__ = ["PairedTestResult", "corrected_paired_ttest", "corrected_variance_factor"]
