"""The batch-scoring transform: one pass over Arrow batches, numpy on executors.

Rows arrive either with the preprocessing's last columns (numbers and one-hot
slot numbers), which are assembled into the feature matrix and assigned to
their nearest centroid here in numpy (KMeans and the sample-fitted
clusterers), or with their segment and feature array computed by Spark
(bisecting KMeans, Gaussian mixtures). Each Arrow batch is split by segment,
pushed through that segment's autoencoder in numpy, and leaves with its
reconstruction error, its segment's threshold, their ratio, the flag and (when
asked) the features that carry most of the error. No shuffle, no collect: the
output has exactly the input's rows. The function is handed over as an
:class:`~segae_spark.io.arrow_map.ArrowMap`, so a delta-rs write runs it in the
task that writes the files.

The batch itself is scored by :func:`segae_spark.arrow_scoring.score_batch`
(numpy and pyarrow only), which local pandas scoring shares; this module is
the Spark side: the output schema, the per-process engine cache and the
:class:`ArrowMap`.

Weights travel as one broadcast of ``.npz`` bytes and are decoded once per
Python worker process (a module-level cache keyed by model id), never once per
batch. Nothing on this path imports TensorFlow, unless the model is a user's
Keras model that the numpy engine cannot run: that one is scored with Keras.
"""

from __future__ import annotations

import functools
from typing import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, DoubleType, IntegerType, StringType, StructField, StructType, TimestampType

from segae_spark.arrow_scoring import (
    FEATURE_ERRORS_COL,
    SCORED_AT_TYPE,
    OutputColumns,
    ScoringPlan,
    score_batch,
    score_ratios,
    top_features,
)
from segae_spark.io.arrow_map import ArrowMap
from segae_spark.models.keras_engine import ScoringEngine, load_scoring_engine

# The batch-level names live in segae_spark.arrow_scoring (no pyspark); importable from here too.
__all__ = [
    "FEATURE_ERRORS_COL",
    "TOP_FEATURE_TYPE",
    "OutputColumns",
    "ScoringPlan",
    "output_schema",
    "score",
    "score_batch",
    "score_ratios",
    "top_features",
]

# top_features in Spark: a list of {feature, share} per row.
TOP_FEATURE_TYPE = ArrayType(StructType([StructField("feature", StringType(), False), StructField("share", DoubleType(), False)]))

# model id -> {model name -> engine}; lives as long as the Python worker process.
_ENGINES: dict[str, dict[str, ScoringEngine]] = {}


def _engines(model_id: str, weights) -> dict[str, ScoringEngine]:
    engines = _ENGINES.get(model_id)
    if engines is None:
        _ENGINES.clear()  # one model per worker at a time keeps memory bounded
        engines = {name: load_scoring_engine(**blobs) for name, blobs in weights.value.items()}
        _ENGINES[model_id] = engines
    return engines


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
    if plan.top_features:
        fields.append(StructField(out.top_features, TOP_FEATURE_TYPE, False))
    if plan.feature_errors:
        fields.append(StructField(FEATURE_ERRORS_COL, ArrayType(DoubleType()), True))
    spark_types = {pa.string(): StringType(), SCORED_AT_TYPE: TimestampType()}
    fields += [StructField(name, spark_types[arrow_type], False) for name, arrow_type, _ in plan.stamps()]
    return StructType(fields)


def score(prepared: DataFrame, plan: ScoringPlan, weights) -> ArrowMap:
    """The passthrough and score columns of ``prepared`` (which holds the features and segment).

    ``weights`` is a broadcast of ``{model name: npz bytes}``. Returned as an
    :class:`ArrowMap`, so a delta-rs write scores and writes in one Python pass.
    """
    return ArrowMap(prepared, functools.partial(_score_partition, plan=plan, weights=weights), output_schema(prepared, plan))
