"""Displays for training curves, sharpness and GD-vs-SAM comparisons."""

from ._comparison import ComparisonDisplay
from ._displays import (
    GainMapDisplay,
    LossLandscapeDisplay,
    SharpnessCurveDisplay,
    SharpnessSpectrumDisplay,
    SolverComparisonDisplay,
    TrainingCurveDisplay,
)

__all__ = [
    "ComparisonDisplay",
    "GainMapDisplay",
    "LossLandscapeDisplay",
    "SharpnessCurveDisplay",
    "SharpnessSpectrumDisplay",
    "SolverComparisonDisplay",
    "TrainingCurveDisplay",
]
