"""The batch-scoring transform: one pass over Arrow batches, numpy on executors.

Rows arrive with their segment and their preprocessed feature array; each
Arrow batch is split by segment, pushed through that segment's autoencoder in
numpy, and leaves with its reconstruction error, its segment's threshold and
the flag. No shuffle, no collect: the output has exactly the input's rows.

Weights travel as one broadcast of ``.npz`` bytes and are decoded once per
Python worker process (a module-level cache keyed by model id), never once per
batch. Nothing on this path imports TensorFlow, unless the model is a user's
Keras model that the numpy engine cannot run: that one is scored with Keras.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, DoubleType, IntegerType, StructField, StructType

from segae_spark.errors import ArtifactError
from segae_spark.features.arrays import feature_matrix
from segae_spark.models.keras_engine import ScoringEngine, load_scoring_engine


@dataclass(frozen=True)
class OutputColumns:
    """Names of the columns scoring adds (configurable to avoid clashes)."""

    segment: str = "segment"
    score: str = "anomaly_score"
    threshold: str = "threshold"
    score_ratio: str = "score_ratio"
    prediction: str = "is_anomaly"

    def names(self) -> list[str]:
        return [self.segment, self.score, self.threshold, self.score_ratio, self.prediction]


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


FEATURE_ERRORS_COL = "feature_errors"

# model id -> {model name -> engine}; lives as long as the Python worker process.
_ENGINES: dict[str, dict[str, ScoringEngine]] = {}


def _engines(model_id: str, weights) -> dict[str, ScoringEngine]:
    engines = _ENGINES.get(model_id)
    if engines is None:
        _ENGINES.clear()  # one model per worker at a time keeps memory bounded
        engines = {name: load_scoring_engine(**blobs) for name, blobs in weights.value.items()}
        _ENGINES[model_id] = engines
    return engines


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


def score_batch(batch: pa.RecordBatch, plan: ScoringPlan, engines: Mapping[str, ScoringEngine]) -> pa.RecordBatch:
    """Score one Arrow batch; pure function of the batch, the plan and the engines."""
    rows = batch.num_rows
    segments = batch.column(plan.segment_col).to_numpy(zero_copy_only=False).astype(np.int32)
    scores = np.zeros(rows, dtype=np.float64)
    thresholds = np.zeros(rows, dtype=np.float64)
    per_feature = None
    if rows:
        x = feature_matrix(batch.column(plan.features_col), rows)
        for segment in np.unique(segments):
            segment = int(segment)
            if segment not in plan.segment_models:
                raise ArtifactError(f"row assigned to segment {segment}, which the model does not have")
            idx = np.flatnonzero(segments == segment)
            x_seg = x[idx]
            engine = engines[plan.segment_models[segment]]
            scores[idx] = engine.row_errors(x_seg, plan.metric)
            thresholds[idx] = plan.thresholds[segment]
            if plan.feature_errors:
                if per_feature is None:
                    per_feature = np.zeros(x.shape, dtype=np.float64)
                per_feature[idx] = engine.feature_errors(x_seg)
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
    if plan.feature_errors:
        width = per_feature.shape[1] if per_feature is not None else 0
        values = pa.array(per_feature.ravel() if per_feature is not None else np.zeros(0))
        fields.append(pa.field(FEATURE_ERRORS_COL, pa.list_(pa.float64())))
        arrays.append(pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * width), values))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _score_partition(batches: Iterator[pa.RecordBatch], plan: ScoringPlan, weights) -> Iterator[pa.RecordBatch]:
    engines = _engines(plan.model_id, weights)
    for batch in batches:
        yield score_batch(batch, plan, engines)


def output_schema(prepared: DataFrame, plan: ScoringPlan) -> StructType:
    fields = [prepared.schema[name] for name in plan.passthrough]
    out = plan.outputs
    fields += [
        StructField(out.segment, IntegerType(), False),
        StructField(out.score, DoubleType(), False),
        StructField(out.threshold, DoubleType(), False),
        StructField(out.score_ratio, DoubleType(), False),
        StructField(out.prediction, IntegerType(), False),
    ]
    if plan.feature_errors:
        fields.append(StructField(FEATURE_ERRORS_COL, ArrayType(DoubleType()), True))
    return StructType(fields)


def score(prepared: DataFrame, plan: ScoringPlan, weights) -> DataFrame:
    """Add the score columns to ``prepared`` (which holds the features and segment).

    ``weights`` is a broadcast of ``{model name: npz bytes}``.
    """
    return prepared.mapInArrow(
        functools.partial(_score_partition, plan=plan, weights=weights), output_schema(prepared, plan)
    )
