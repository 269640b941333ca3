"""Displays for training curves, sharpness and GD-vs-SAM comparisons."""

from ._displays import (
    GainMapDisplay,
    LossLandscapeDisplay,
    SharpnessCurveDisplay,
    SharpnessSpectrumDisplay,
    SolverComparisonDisplay,
    TrainingCurveDisplay,
)

__all__ = [
    "GainMapDisplay",
    "LossLandscapeDisplay",
    "SharpnessCurveDisplay",
    "SharpnessSpectrumDisplay",
    "SolverComparisonDisplay",
    "TrainingCurveDisplay",
]
