"""Errors raised by the registration library."""

from __future__ import annotations

__all__ = [
    "RegistrationError",
    "IllPosedGeometryError",
    "ConvergenceError",
    "UnverifiedResultError",
    "LandmarkInputError",
    "StartTransformError",
]


class RegistrationError(Exception):
    """Root of every error the registration library raises."""


class IllPosedGeometryError(RegistrationError, ValueError):
    """The imaging geometry does not allow a unique 2D-2D answer (e.g. edge-on plane)."""


class ConvergenceError(RegistrationError, RuntimeError):
    """The optimiser stopped without meeting its convergence criteria."""


class UnverifiedResultError(ConvergenceError):
    """A result was found but the evidence refused it (``quality.verdict`` refused).

    ``result`` is the refused :class:`RegistrationResult`, for a caller that reports it;
    the message lists its ``quality.reasons``.
    """

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class LandmarkInputError(RegistrationError, ValueError):
    """The landmark pairs themselves are unusable: the input is at fault, not the fit.

    Too few pairs for the model, non-finite or absurd coordinates, bad weights,
    degenerate (coincident or collinear) or mutually inconsistent points.
    """


class StartTransformError(IllPosedGeometryError):
    """A given starting transform maps the moving field implausibly (scale, horizon)."""
