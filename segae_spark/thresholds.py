"""Per-segment anomaly thresholds from the reconstruction errors of training rows.

SegmentAE's rule is ``mean(train error in segment) x threshold_ratio``; it is
kept as the default so results compare with SegmentAE's. The statistics are
stored with the model, so the threshold ratio can change at scoring time
without retraining (SegmentAE's ``detections(threshold_ratio=...)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from segae_spark.errors import ConfigError

THRESHOLD_METHODS = ("mean_ratio",)


@dataclass(frozen=True)
class ErrorStats:
    """Summary of one segment's training reconstruction errors."""

    rows: int
    mean: float
    std: float
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, errors: np.ndarray) -> "ErrorStats":
        errors = np.asarray(errors, dtype=np.float64)
        if errors.size == 0:
            raise ConfigError("cannot compute threshold statistics from zero training errors")
        p50, p95, p99 = np.quantile(errors, [0.5, 0.95, 0.99])
        return cls(
            rows=int(errors.size),
            mean=float(errors.mean()),
            std=float(errors.std()),
            p50=float(p50),
            p95=float(p95),
            p99=float(p99),
            max=float(errors.max()),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def check_ratio(ratio: float) -> float:
    if not (isinstance(ratio, (int, float)) and np.isfinite(ratio) and ratio > 0):
        raise ConfigError(f"threshold_ratio must be a positive number, got {ratio!r}")
    return float(ratio)


def mean_ratio_threshold(stats: ErrorStats, ratio: float) -> float:
    """SegmentAE's threshold: the segment's mean training error times ``ratio``."""
    return stats.mean * check_ratio(ratio)
