"""Per-segment anomaly thresholds from the reconstruction errors of training rows.

Three rules, all computed from each segment's own training errors:

* ``mean_ratio`` (SegmentAE's rule, the default): mean error x ``threshold_ratio``;
* ``quantile``: the ``threshold_quantile`` quantile of the errors (e.g. 0.995);
* ``contamination``: the ``1 - contamination`` quantile, so that about that
  share of each segment's rows is flagged, the same rate in every segment.

The sorted training errors are stored with the model, so the rule and its
parameter can change at scoring time without retraining (SegmentAE's
``detections(threshold_ratio=...)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from segae_spark.errors import ConfigError

THRESHOLD_METHODS = ("mean_ratio", "quantile", "contamination")


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


@dataclass(frozen=True)
class ThresholdRule:
    """How a segment's threshold follows from its training errors."""

    method: str = "mean_ratio"
    ratio: float = 1.0
    quantile: float = 0.995
    contamination: float = 0.01

    def __post_init__(self) -> None:
        if self.method not in THRESHOLD_METHODS:
            raise ConfigError(f"threshold method must be one of {THRESHOLD_METHODS}, got {self.method!r}")
        check_ratio(self.ratio)
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"threshold_quantile must be in (0, 1), got {self.quantile!r}")
        if not 0.0 < self.contamination < 0.5:
            raise ConfigError(f"contamination must be in (0, 0.5), got {self.contamination!r}")

    def threshold(self, errors: np.ndarray) -> float:
        """The threshold for a segment whose training errors are ``errors``."""
        errors = np.asarray(errors, dtype=np.float64)
        if errors.size == 0:
            raise ConfigError("cannot compute a threshold from zero training errors")
        if self.method == "mean_ratio":
            return float(errors.mean()) * self.ratio
        q = self.quantile if self.method == "quantile" else 1.0 - self.contamination
        return float(np.quantile(errors, q))


def check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not (isinstance(ratio, (int, float)) and np.isfinite(ratio) and ratio > 0):
        raise ConfigError(f"threshold_ratio must be a positive number, got {ratio!r}")
    return float(ratio)
