"""SegmentAE and SegmentAEModel: the public pyspark.ml Estimator and Model.

``SegmentAE().fit(df)`` learns the preprocessing, the segments, one
autoencoder per segment and the per-segment error statistics;
``SegmentAEModel.transform(df)`` adds ``segment``, ``anomaly_score``,
``threshold`` and ``is_anomaly`` to every row, in one pass with no shuffle.
Both work inside a ``pyspark.ml.Pipeline`` and persist with ``save`` / ``load``
(see :mod:`segae_spark.artifacts` for the directory layout).
"""

from __future__ import annotations

import hashlib
import json
import time

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.functions import vector_to_array
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsWritable,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segae_spark.artifacts import ModelArtifact, read_artifact, write_artifact
from segae_spark.clustering import fit_segmenter
from segae_spark.errors import ConfigError, NotFittedError, SchemaError
from segae_spark.features.preprocessing import FEATURES_COL, build_preprocessing, feature_names
from segae_spark.features.schema import FeatureSpec, resolve_features
from segae_spark.models.dense import DenseAutoencoderConfig
from segae_spark.models.reconstruction import THRESHOLD_METRICS
from segae_spark.params import SegmentAEParams
from segae_spark.progress import logger, stage
from segae_spark.scoring import OutputColumns, ScoringPlan, score
from segae_spark.thresholds import ErrorStats, check_ratio, mean_ratio_threshold
from segae_spark.training.sampling import row_hash, sample_segments
from segae_spark.training.segments import train_segments

_SEGMENT = "__segae_segment"
_HASH = "__segae_hash"
_X = "__segae_x"


def _output_columns(params: SegmentAEParams) -> OutputColumns:
    return OutputColumns(
        segment=params.getOrDefault(params.segmentCol),
        score=params.getOrDefault(params.scoreCol),
        threshold=params.getOrDefault(params.thresholdCol),
        prediction=params.getOrDefault(params.predictionCol),
    )


class SegmentAE(Estimator, SegmentAEParams, DefaultParamsWritable, DefaultParamsReadable):
    """Segment-wise autoencoder anomaly detector (the SegmentAE method) on Spark.

    >>> model = SegmentAE(labelCol="is_fraud", nClusters=4, thresholdRatio=2.0).fit(train_df)
    >>> scored = model.transform(new_df)   # + segment, anomaly_score, threshold, is_anomaly
    """

    @keyword_only
    def __init__(self, **kwargs):
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs) -> "SegmentAE":
        return self._set(**self._input_kwargs)

    def setThresholdRatio(self, value: float) -> "SegmentAE":
        return self._set(thresholdRatio=value)

    def _validate(self, df: DataFrame) -> tuple[FeatureSpec, DenseAutoencoderConfig]:
        get = self.getOrDefault
        label = get(self.labelCol)
        if label and label not in df.columns:
            raise SchemaError(f"labelCol {label!r} is not a column of the training data; columns: {df.columns}")
        if get(self.thresholdMetric) not in THRESHOLD_METRICS:
            raise ConfigError(f"thresholdMetric must be one of {THRESHOLD_METRICS}, got {get(self.thresholdMetric)!r}")
        check_ratio(get(self.thresholdRatio))
        if get(self.maxRowsPerSegment) < 10:
            raise ConfigError(f"maxRowsPerSegment must be >= 10, got {get(self.maxRowsPerSegment)}")
        if get(self.minRowsPerSegment) < 2:
            raise ConfigError(f"minRowsPerSegment must be >= 2, got {get(self.minRowsPerSegment)}")
        outputs = _output_columns(self).names()
        if len(set(outputs)) != len(outputs):
            raise ConfigError(f"output column names must differ, got {outputs}")
        exclude = list(get(self.excludeCols)) + [c for c in (label, get(self.idCol), get(self.dateCol)) if c and c in df.columns]
        spec = resolve_features(df.schema, get(self.numericCols), get(self.categoricalCols), exclude)
        return spec, DenseAutoencoderConfig.from_dict(get(self.autoencoder))

    def _fit(self, dataset: DataFrame) -> "SegmentAEModel":
        get = self.getOrDefault
        spec, ae_config = self._validate(dataset)
        seed = get(self.seed)
        timings: dict[str, float] = {}
        label = get(self.labelCol)
        train = dataset.filter(F.col(label) == 0) if label else dataset
        id_col = get(self.idCol)
        key_cols = list(spec.columns) + ([id_col] if id_col and id_col in dataset.columns else [])
        logger.info("fit: %d numeric and %d categorical features: %s", len(spec.numeric), len(spec.categorical), list(spec.columns))
        rows = train.count()
        if rows < 2:
            raise SchemaError(f"need at least 2 training rows, got {rows}" + (f" with {label} == 0" if label else ""))
        # Lay the rows out by their content hash, so the quantiles, the
        # clustering and the samples below do not depend on the input's order
        # or partitioning: the same rows give the same model.
        partitions = min(1000, max(4, rows // 500_000 + 1))
        train = train.withColumn(_HASH, row_hash(seed, key_cols)).repartition(partitions, _HASH).sortWithinPartitions(_HASH)

        with stage("fit preprocessing", timings):
            preprocessing = build_preprocessing(spec, get(self.imputeStrategy), get(self.scaler)).fit(train)
            names = feature_names(preprocessing, spec)
            features = preprocessing.transform(train).select(_HASH, FEATURES_COL).cache()
        with stage("fit clustering", timings):
            segmenter = fit_segmenter(
                features, FEATURES_COL, _SEGMENT, get(self.clusterModel), get(self.nClusters), seed
            )
            assigned = segmenter.transform(features)
            counts = {int(r[0]): int(r[1]) for r in assigned.groupBy(_SEGMENT).count().collect()}  # small: one row per segment
            counts = {seg: counts.get(seg, 0) for seg in range(get(self.nClusters))}
            logger.info("fit: %d training rows in segments %s", rows, counts)
        with stage("sample training rows", timings):
            samples = sample_segments(
                assigned.withColumn(_X, vector_to_array(F.col(FEATURES_COL), "float32")),
                _SEGMENT, _HASH, _X, counts, get(self.maxRowsPerSegment),
            )
        features.unpersist()
        with stage("train autoencoders", timings):
            models, fits = train_segments(samples, ae_config, seed, get(self.thresholdMetric), get(self.minRowsPerSegment))
        segments = [
            {"segment": fit.segment, "rows": counts[fit.segment], "model": fit.model, "train_errors": fit.stats.to_dict()}
            for fit in fits
        ]
        artifact = ModelArtifact(
            spec=spec,
            feature_names=names,
            preprocessing=preprocessing,
            segmenter=segmenter,
            models=models,
            segments=segments,
            training={"rows": rows, "timings": timings, "autoencoder": ae_config.to_dict()},
        )
        model = SegmentAEModel(artifact)
        self._copyValues(model)
        return model


class SegmentAEModel(Model, SegmentAEParams, MLWritable, MLReadable):
    """A fitted SegmentAE: preprocessing, segmenter, per-segment autoencoders and thresholds."""

    def __init__(self, artifact: ModelArtifact | None = None):
        super().__init__()
        self._artifact = artifact
        self._weights = None

    def setThresholdRatio(self, value: float) -> "SegmentAEModel":
        """Change the threshold ratio without retraining (thresholds follow)."""
        check_ratio(value)
        return self._set(thresholdRatio=value)

    @property
    def artifact(self) -> ModelArtifact:
        if self._artifact is None:
            raise NotFittedError("this SegmentAEModel holds no fitted state; fit a SegmentAE or load a saved model")
        return self._artifact

    @property
    def model_id(self) -> str:
        """Content hash of the weights and training statistics: names this exact model."""
        digest = hashlib.sha256()
        for name in sorted(self.artifact.models):
            digest.update(name.encode())
            digest.update(self.artifact.models[name].npz)
        digest.update(json.dumps(self.artifact.segments, sort_keys=True).encode())
        return digest.hexdigest()[:16]

    @property
    def feature_names(self) -> list[str]:
        return list(self.artifact.feature_names)

    @property
    def thresholds(self) -> dict[int, float]:
        """Per-segment thresholds at the current threshold ratio."""
        ratio = self.getOrDefault(self.thresholdRatio)
        return {
            s["segment"]: mean_ratio_threshold(ErrorStats(**s["train_errors"]), ratio) for s in self.artifact.segments
        }

    def segment_summary(self) -> list[dict]:
        """One dict per segment: training rows, model used, threshold and error stats."""
        thresholds = self.thresholds
        return [{**s, "threshold": thresholds[s["segment"]]} for s in self.artifact.segments]

    def _broadcast_weights(self, spark):
        if self._weights is None:
            blobs = {name: m.npz for name, m in self.artifact.models.items()}
            self._weights = spark.sparkContext.broadcast(blobs)
        return self._weights

    def _transform(self, dataset: DataFrame) -> DataFrame:
        artifact = self.artifact
        artifact.spec.check_input(dataset.schema)
        outputs = _output_columns(self)
        clash = [c for c in outputs.names() if c in dataset.columns]
        if clash:
            raise SchemaError(
                f"input already has output column(s) {clash}; drop them or rename the outputs "
                "(segmentCol, scoreCol, thresholdCol, predictionCol)"
            )
        passthrough = tuple(dataset.columns)
        prepared = artifact.segmenter.transform(artifact.preprocessing.transform(dataset)).select(
            *[F.col(f"`{c}`") for c in passthrough],
            F.col(_SEGMENT).cast("int").alias(_SEGMENT),
            vector_to_array(F.col(FEATURES_COL), "float32").alias(_X),
        )
        plan = ScoringPlan(
            model_id=self.model_id,
            segment_models={s["segment"]: s["model"] for s in artifact.segments},
            thresholds=self.thresholds,
            metric=self.getOrDefault(self.thresholdMetric),
            features_col=_X,
            segment_col=_SEGMENT,
            passthrough=passthrough,
            outputs=outputs,
        )
        return score(prepared, plan, self._broadcast_weights(dataset.sparkSession))

    def write(self) -> MLWriter:
        return _SegmentAEModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _SegmentAEModelReader(cls)


class _SegmentAEModelWriter(MLWriter):
    def __init__(self, instance: SegmentAEModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        write_artifact(path, self.instance, self.sparkSession)


class _SegmentAEModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> SegmentAEModel:
        start = time.perf_counter()
        artifact, params = read_artifact(path)
        model = self.cls(artifact)
        model._set(**{k: v for k, v in params.items() if model.hasParam(k)})
        logger.info("loaded model %s from %s in %.1fs", model.model_id, path, time.perf_counter() - start)
        return model
