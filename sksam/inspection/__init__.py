"""Displays for training curves, sharpness and GD-vs-SAM comparisons."""

from ._displays import (
    GainMapDisplay,
    SharpnessCurveDisplay,
    SolverComparisonDisplay,
    TrainingCurveDisplay,
)

__all__ = [
    "GainMapDisplay",
    "SharpnessCurveDisplay",
    "SolverComparisonDisplay",
    "TrainingCurveDisplay",
]
