"""Displays for training curves and GD-vs-SAM comparisons."""

from ._displays import SolverComparisonDisplay, TrainingCurveDisplay

__all__ = ["SolverComparisonDisplay", "TrainingCurveDisplay"]
