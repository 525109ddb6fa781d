"""Scoring one Arrow batch in numpy: the core that every scoring path shares.

:func:`score_batch` takes a batch holding either the preprocessing's last
columns (numbers and one-hot slot numbers, assembled here into the feature
matrix and assigned to their nearest centroid) or each row's segment and
feature array, splits it by segment, pushes each part through its segment's
engine and returns the batch's reconstruction errors, thresholds, ratios,
flags and (when asked) the features that carry most of the error. It is a
pure function of the batch, the :class:`ScoringPlan` and the engines.

It imports numpy and pyarrow only, never pyspark or TensorFlow: Spark's
executors run it through :mod:`segae_spark.scoring`, and
:mod:`segae_spark.local_scoring` runs it on pandas frames in processes that
have no Spark at all, so both give a row the same score.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from segae_spark.clustering.nearest import nearest_center
from segae_spark.errors import ArtifactError
from segae_spark.features.arrays import ArrayAssembly, feature_matrix
from segae_spark.models.keras_engine import ScoringEngine


@dataclass(frozen=True)
class OutputColumns:
    """Names of the columns scoring adds (configurable to avoid clashes)."""

    segment: str = "segment"
    score: str = "anomaly_score"
    threshold: str = "threshold"
    score_ratio: str = "score_ratio"
    prediction: str = "is_anomaly"
    top_features: str = "top_features"

    def names(self) -> list[str]:
        """The columns every scoring adds (``top_features`` only when asked for)."""
        return [self.segment, self.score, self.threshold, self.score_ratio, self.prediction]

    @classmethod
    def from_params(cls, value: Callable[[str], str]) -> "OutputColumns":
        """The names a model's params give, read by param name (``segmentCol``, ...) with ``value``:
        the same for a live SegmentAEModel and for the params stored in its directory."""
        return cls(**{field: value(param) for field, param in _PARAM_OF_FIELD.items()})


# The SegmentAEModel param naming each output column.
_PARAM_OF_FIELD = {
    "segment": "segmentCol",
    "score": "scoreCol",
    "threshold": "thresholdCol",
    "score_ratio": "scoreRatioCol",
    "prediction": "predictionCol",
    "top_features": "topFeaturesCol",
}


@dataclass(frozen=True)
class ScoringPlan:
    """Everything an executor needs besides the weights themselves."""

    model_id: str
    segment_models: Mapping[int, str]
    thresholds: Mapping[int, float]
    metric: str
    features_col: str
    segment_col: str
    passthrough: tuple[str, ...]
    outputs: OutputColumns
    feature_errors: bool = False
    top_features: int = 0
    feature_names: tuple[str, ...] = ()
    # Stamps on every row ("" leaves a column out): which model, and when (one value per plan).
    model_id_col: str = ""
    scored_at_col: str = ""
    scored_at: dt.datetime | None = None
    # Set together: assemble the features and assign segments in numpy (the
    # rows carry the assembly's columns, not features_col / segment_col).
    assembly: ArrayAssembly | None = None
    centers: np.ndarray | None = None

    def stamps(self) -> list[tuple[str, pa.DataType, object]]:
        """(column, Arrow type, value) of each stamp column asked for."""
        stamps = [(self.model_id_col, pa.string(), self.model_id), (self.scored_at_col, SCORED_AT_TYPE, self.scored_at)]
        return [stamp for stamp in stamps if stamp[0]]


FEATURE_ERRORS_COL = "feature_errors"
# top_features: a list of {feature, share} per row.
_TOP_FEATURE_FIELDS = [pa.field("feature", pa.string(), False), pa.field("share", pa.float64(), False)]
# Spark's TimestampType in Arrow: microseconds since the epoch, UTC.
SCORED_AT_TYPE = pa.timestamp("us", tz="UTC")


def score_ratios(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``score / threshold``: how far past its own segment's threshold a row is.

    Raw reconstruction errors are on each segment's own scale (a segment of
    noisy rows has larger errors everywhere), so ranking rows of different
    segments by the raw score mixes scales; the ratio puts every segment on
    the scale its flag uses (``> 1`` is flagged). A zero threshold (a segment
    whose training rows all reconstructed exactly) gives ``inf`` for a
    positive score and 0 for a zero one.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = scores / thresholds
    return np.where(thresholds > 0, ratio, np.where(scores > 0, np.inf, 0.0))


def top_features(per_feature: np.ndarray, names: Sequence[str], k: int) -> pa.ListArray:
    """Each row's ``k`` features with the largest share of its squared reconstruction error.

    A list of ``{feature, share}`` per row, largest share first (ties: the
    earlier feature); shares are of the row's summed squared error in the
    model's (scaled, encoded) feature space, so a one-hot slot shows as
    ``column=value``. A row reconstructed exactly has shares 0.
    """
    rows, width = per_feature.shape
    k = min(k, width)
    remaining = per_feature.copy()
    order = np.empty((rows, k), dtype=np.int64)
    for i in range(k):  # k argmax passes: cheaper than a full sort for small k; ties go to the first index
        order[:, i] = np.argmax(remaining, axis=1)
        remaining[np.arange(rows), order[:, i]] = -np.inf
    total = per_feature.sum(axis=1, keepdims=True)
    top = np.take_along_axis(per_feature, order, axis=1)
    shares = np.divide(top, total, out=np.zeros_like(top), where=total > 0)
    entries = pa.StructArray.from_arrays(
        [pa.array(names, pa.string()).take(order.ravel()), pa.array(shares.ravel())], fields=_TOP_FEATURE_FIELDS
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * k), entries)


def score_batch(batch: pa.RecordBatch, plan: ScoringPlan, engines: Mapping[str, ScoringEngine]) -> pa.RecordBatch:
    """Score one Arrow batch; pure function of the batch, the plan and the engines."""
    rows = batch.num_rows
    if plan.assembly is not None:
        x64 = plan.assembly.matrix(batch)
        segments = nearest_center(x64, plan.centers)
        x = x64.astype(np.float32)
    else:
        segments = batch.column(plan.segment_col).to_numpy(zero_copy_only=False).astype(np.int32)
        x = feature_matrix(batch.column(plan.features_col), rows) if rows else None
    scores = np.zeros(rows, dtype=np.float64)
    thresholds = np.zeros(rows, dtype=np.float64)
    per_feature = None
    if rows:
        for segment in np.unique(segments):
            segment = int(segment)
            if segment not in plan.segment_models:
                raise ArtifactError(f"row assigned to segment {segment}, which the model does not have")
            idx = np.flatnonzero(segments == segment)
            x_seg = x[idx]
            engine = engines[plan.segment_models[segment]]
            thresholds[idx] = plan.thresholds[segment]
            if plan.feature_errors or plan.top_features:
                if per_feature is None:
                    per_feature = np.zeros(x.shape, dtype=np.float64)
                scores[idx], per_feature[idx] = engine.errors(x_seg, plan.metric)
            else:
                scores[idx] = engine.row_errors(x_seg, plan.metric)
    flags = (scores > thresholds).astype(np.int32)
    ratios = score_ratios(scores, thresholds)
    out = plan.outputs
    fields = [batch.schema.field(name) for name in plan.passthrough]
    fields += [
        pa.field(out.segment, pa.int32()),
        pa.field(out.score, pa.float64()),
        pa.field(out.threshold, pa.float64()),
        pa.field(out.score_ratio, pa.float64()),
        pa.field(out.prediction, pa.int32()),
    ]
    arrays = [batch.column(name) for name in plan.passthrough]
    arrays += [pa.array(segments), pa.array(scores), pa.array(thresholds), pa.array(ratios), pa.array(flags)]
    if plan.top_features:
        per_row = per_feature if per_feature is not None else np.zeros((0, len(plan.feature_names)))
        fields.append(pa.field(out.top_features, pa.list_(pa.struct(_TOP_FEATURE_FIELDS)), False))
        arrays.append(top_features(per_row, plan.feature_names, plan.top_features))
    if plan.feature_errors:
        width = per_feature.shape[1] if per_feature is not None else 0
        values = pa.array(per_feature.ravel() if per_feature is not None else np.zeros(0))
        fields.append(pa.field(FEATURE_ERRORS_COL, pa.list_(pa.float64())))
        arrays.append(pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * width), values))
    for name, arrow_type, value in plan.stamps():
        fields.append(pa.field(name, arrow_type, False))
        arrays.append(pa.repeat(pa.scalar(value, arrow_type), rows))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
