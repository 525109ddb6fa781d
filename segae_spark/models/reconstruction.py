"""Reconstruction errors: how far a model's output is from its input, per row.

SegmentAE scores a row by one of these errors and compares it with its
segment's threshold, so training (thresholds) and scoring must compute them
identically; both call this module. numpy only.

Errors are accumulated in float64: the difference of two float32 arrays is
taken with a float64 result (exact for all but extreme exponent gaps), so a
mean over many features does not lose the small errors of good rows.
Non-finite inputs give non-finite errors rather than an exception; scoring
decides what to do with them.
"""

from __future__ import annotations

import numpy as np

from segae_spark.errors import ConfigError

__all__ = ["THRESHOLD_METRICS", "feature_errors", "row_errors"]

THRESHOLD_METRICS = ("mse", "mae", "rmse", "max_error")
"""Row error metrics, by SegmentAE's names (its ``threshold_metric``)."""


def _difference(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    x_hat = np.asarray(x_hat)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (rows, features), got shape {x.shape}")
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat has shape {x_hat.shape} but x has shape {x.shape}; they must match")
    for name, a in (("x", x), ("x_hat", x_hat)):
        if a.dtype.kind not in "fiub":
            raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if x.shape[1] == 0:
        raise ValueError("x has no features (shape (n, 0)); a reconstruction error needs at least one")
    return np.subtract(x, x_hat, dtype=np.float64)


def row_errors(x: np.ndarray, x_hat: np.ndarray, metric: str = "mse") -> np.ndarray:
    """Reconstruction error of each row, float64 of shape ``(n,)``.

    ``metric`` is one of :data:`THRESHOLD_METRICS`: ``mse`` (mean squared
    error over features), ``mae`` (mean absolute error), ``rmse`` (square
    root of ``mse``) or ``max_error`` (largest absolute error in the row).
    """
    if metric not in THRESHOLD_METRICS:
        raise ConfigError(f"threshold_metric {metric!r} is not supported; expected one of {list(THRESHOLD_METRICS)}")
    diff = _difference(x, x_hat)
    if metric in ("mse", "rmse"):
        np.square(diff, out=diff)
        errors = diff.mean(axis=1)
        return np.sqrt(errors, out=errors) if metric == "rmse" else errors
    np.abs(diff, out=diff)
    return diff.mean(axis=1) if metric == "mae" else diff.max(axis=1)


def feature_errors(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """Squared error of each feature of each row, float64 of shape ``(n, d)``.

    The feature-level view of a row's ``mse`` (its row mean): which columns a
    model failed to reconstruct.
    """
    diff = _difference(x, x_hat)
    return np.square(diff, out=diff)
