"""SegmentAE and SegmentAEModel: the public pyspark.ml Estimator and Model.

``SegmentAE().fit(df)`` learns the preprocessing, the segments, one
autoencoder per segment and the per-segment error statistics;
``SegmentAEModel.transform(df)`` adds ``segment``, ``anomaly_score``,
``threshold``, ``score_ratio`` (score / threshold) and ``is_anomaly`` to every row, in one pass with no shuffle.
Both work inside a ``pyspark.ml.Pipeline`` and persist with ``save`` / ``load``
(see :mod:`segae_spark.artifacts` for the directory layout).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time

import numpy as np
from pyspark import StorageLevel, keyword_only
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
from segae_spark.clustering import AUTO, check_segmenter_params, fit_segmenter, segment_sizes
from segae_spark.clustering.segmenters import nearest_centroids
from segae_spark.errors import ConfigError, NotFittedError, SchemaError
from segae_spark.evaluation import evaluate
from segae_spark.features.preprocessing import (
    FEATURES_COL,
    assembly_inputs,
    build_preprocessing,
    feature_names,
    unseen_categories,
)
from segae_spark.features.schema import FeatureSpec, resolve_features
from segae_spark.io.arrow_map import ArrowMap
from segae_spark.models.autoencoders import AutoencoderConfig, autoencoder_config_from_dict
from segae_spark.models.dense import StackAutoencoderConfig
from segae_spark.models.reconstruction import THRESHOLD_METRICS
from segae_spark.models.user_keras import UserKerasConfig
from segae_spark.params import SegmentAEParams
from segae_spark.progress import logger, stage
from segae_spark.scoring import FEATURE_ERRORS_COL, OutputColumns, ScoringPlan, score
from segae_spark.supervised import SupervisedConfig, add_probability, classifier_inputs, fit_classifier
from segae_spark.thresholds import ErrorStats, check_ratio
from segae_spark.training.backends import DATA_PARALLEL_BACKENDS, TRAINING_BACKENDS, train_models
from segae_spark.training.horovod_backend import horovod_missing
from segae_spark.training.sampling import hash_uniform, row_hash
from segae_spark.training.segments import TRAINING_MODES, model_plan

_SEGMENT = "__segae_segment"
_HASH = "__segae_hash"
_X = "__segae_x"
_STAGE_THRESHOLD = "__segae_stage_threshold"


def _output_columns(params: SegmentAEParams) -> OutputColumns:
    return OutputColumns.from_params(params.getOrDefault)


class SegmentAE(Estimator, SegmentAEParams, DefaultParamsWritable, DefaultParamsReadable):
    """Segment-wise autoencoder anomaly detector (the SegmentAE method) on Spark.

    >>> model = SegmentAE(labelCol="is_fraud", nClusters=4, thresholdRatio=2.0).fit(train_df)
    >>> scored = model.transform(new_df)   # + segment, anomaly_score, threshold, score_ratio, is_anomaly
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

    def _validate(self, df: DataFrame) -> tuple[FeatureSpec, AutoencoderConfig]:
        get = self.getOrDefault
        label = get(self.labelCol)
        if label and label not in df.columns:
            raise SchemaError(f"labelCol {label!r} is not a column of the training data; columns: {df.columns}")
        if get(self.thresholdMetric) not in THRESHOLD_METRICS:
            raise ConfigError(f"thresholdMetric must be one of {THRESHOLD_METRICS}, got {get(self.thresholdMetric)!r}")
        self.threshold_rule()
        if get(self.trainingMode) not in TRAINING_MODES:
            raise ConfigError(f"trainingMode must be one of {TRAINING_MODES}, got {get(self.trainingMode)!r}")
        if get(self.trainingBackend) not in TRAINING_BACKENDS:
            raise ConfigError(f"trainingBackend must be one of {TRAINING_BACKENDS}, got {get(self.trainingBackend)!r}")
        if get(self.maxRowsPerSegment) < 10:
            raise ConfigError(f"maxRowsPerSegment must be >= 10, got {get(self.maxRowsPerSegment)}")
        missing = horovod_missing() if get(self.trainingBackend) == "horovod" else None
        if missing:
            raise ConfigError(missing)
        if get(self.dataParallelWorkers) < 0:
            raise ConfigError(f"dataParallelWorkers must be >= 0 (0: every task slot), got {get(self.dataParallelWorkers)}")
        if get(self.minRowsPerSegment) < 2:
            raise ConfigError(f"minRowsPerSegment must be >= 2, got {get(self.minRowsPerSegment)}")
        outputs = _output_columns(self).names()
        if len(set(outputs)) != len(outputs):
            raise ConfigError(f"output column names must differ, got {outputs}")
        exclude = list(get(self.excludeCols)) + [c for c in (label, get(self.idCol), get(self.dateCol)) if c and c in df.columns]
        spec = resolve_features(df.schema, get(self.numericCols), get(self.categoricalCols), exclude)
        check_segmenter_params(
            get(self.clusterModel), get(self.nClusters), get(self.nClustersRange), get(self.clusterSampleSize), get(self.clusterRuns)
        )
        config = autoencoder_config_from_dict(get(self.autoencoder))
        if get(self.trainingBackend) in DATA_PARALLEL_BACKENDS and not isinstance(config, StackAutoencoderConfig):
            raise ConfigError(
                f"trainingBackend={get(self.trainingBackend)!r} trains dense and batchnorm autoencoders "
                f"data-parallel, got autoencoder type {config.type!r}: use trainingBackend='per_segment'"
            )
        if isinstance(config, UserKerasConfig):
            config.check_readable()
        return spec, config

    def _fit(self, dataset: DataFrame) -> "SegmentAEModel":
        prepared = self._prepare(dataset)
        try:
            return self._train(prepared, self._segment(prepared))
        finally:
            prepared.features.unpersist()

    def _prepare(self, dataset: DataFrame) -> "PreparedTraining":
        """Check the params, lay out the training rows and fit the preprocessing.

        The first step of ``fit``, shared by every candidate of a grid search
        with the same preprocessing params (see :mod:`segae_spark.optimizer`);
        the caller unpersists ``features`` when done with it.
        """
        get = self.getOrDefault
        spec, _ = self._validate(dataset)
        # Built here, before any Spark job, so a bad preprocessing option fails first.
        unfitted_preprocessing = build_preprocessing(
            spec,
            get(self.imputeStrategy),
            get(self.scaler),
            encoder=get(self.encoder),
            max_categories=get(self.maxCategories),
            categorical_impute_strategy=get(self.categoricalImputeStrategy),
        )
        seed = get(self.seed)
        label = get(self.labelCol)
        train = dataset.filter(F.col(label) == 0) if label else dataset
        id_col = get(self.idCol)
        key_cols = list(spec.columns) + ([id_col] if id_col and id_col in dataset.columns else [])
        logger.info("fit: %d numeric and %d categorical features: %s", len(spec.numeric), len(spec.categorical), list(spec.columns))
        rows = train.count()
        rows_text = f"{rows} rows" + (f" with {label} == 0" if label else "")
        if rows < 2:
            raise SchemaError(f"the training data has {rows_text}; need at least 2")
        # Lay the rows out by their content hash, so the quantiles, the
        # clustering and the samples below do not depend on the input's order
        # or partitioning: the same rows give the same model.
        # The preprocessing's stages each read these rows (imputer, encoders,
        # scaler): cached, the input is read and shuffled once, not per stage.
        partitions = min(1000, max(4, rows // 500_000 + 1))
        train = (
            train.withColumn(_HASH, row_hash(seed, key_cols))
            .select(_HASH, *spec.columns)
            .repartition(partitions, _HASH)
            .sortWithinPartitions(_HASH)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        timings: dict[str, float] = {}
        try:
            with stage("fit preprocessing", timings):
                preprocessing = unfitted_preprocessing.fit(train)
                names = feature_names(preprocessing, spec)
                features = preprocessing.transform(train).select(_HASH, FEATURES_COL).cache()
                features.count()  # materialised while the laid-out rows are still cached
        finally:
            train.unpersist()
        return PreparedTraining(spec, names, preprocessing, features, rows, rows_text, timings)

    def _segment(self, prepared: "PreparedTraining") -> "TrainingSegments":
        """Fit the clustering on the prepared rows and count each segment's rows."""
        get = self.getOrDefault
        # Cheap (the rows are counted), before the clustering is fitted; the
        # clustering checks the stricter bound (distinct feature vectors).
        if get(self.nClusters) == AUTO:
            smallest_k, name = get(self.nClustersRange)[0], "nClustersRange (config clustering.k_range) starts at"
        else:
            smallest_k, name = get(self.nClusters), "nClusters (config clustering.n_clusters) ="
        if smallest_k > prepared.rows:
            raise ConfigError(f"{name} {smallest_k}, more than the training data's {prepared.rows_text}")
        timings: dict[str, float] = {}
        with stage("fit clustering", timings):
            clustering = fit_segmenter(
                prepared.features,
                FEATURES_COL,
                _SEGMENT,
                model=get(self.clusterModel),
                n_clusters=get(self.nClusters),
                seed=get(self.seed),
                k_range=get(self.nClustersRange),
                sample_size=get(self.clusterSampleSize),
                runs=get(self.clusterRuns),
            )
            assigned = clustering.model.transform(prepared.features)
            counts = segment_sizes(assigned, _SEGMENT, clustering.n_segments)
            logger.info("fit: %d training rows in %d segments", prepared.rows, len(counts))
        return TrainingSegments(clustering, assigned, counts, timings)

    def _train(self, prepared: "PreparedTraining", segments: "TrainingSegments") -> "SegmentAEModel":
        """Train the autoencoders of the segments and assemble the fitted model."""
        get = self.getOrDefault
        ae_config = autoencoder_config_from_dict(get(self.autoencoder))
        counts = segments.counts
        plan = model_plan(counts, get(self.trainingMode), get(self.minRowsPerSegment), get(self.maxRowsPerSegment))
        timings = {**prepared.timings, **segments.timings}
        with stage("train autoencoders", timings):
            models, errors = train_models(
                get(self.trainingBackend),
                segments.assigned.withColumn(_X, vector_to_array(F.col(FEATURES_COL), "float32")),
                (_SEGMENT, _HASH, _X),
                counts,
                plan,
                ae_config,
                get(self.seed),
                get(self.maxRowsPerSegment),
                get(self.minRowsPerSegment),
                get(self.dataParallelWorkers),
                get(self.stagingDir),
            )
        metric = get(self.thresholdMetric)
        summary = [
            {
                "segment": seg,
                "rows": counts[seg],
                "model": plan[seg],
                "backend": models[plan[seg]].training["backend"],
                "threshold_from": "segment" if counts[seg] >= get(self.minRowsPerSegment) else f"all rows of {plan[seg]}",
                "train_errors": ErrorStats.of(errors[seg][metric]).to_dict(),
            }
            for seg in sorted(plan)
        ]
        artifact = ModelArtifact(
            spec=prepared.spec,
            feature_names=prepared.feature_names,
            preprocessing=prepared.preprocessing,
            segmenter=segments.clustering.model,
            models=models,
            segments=summary,
            train_errors=errors,
            training={
                "rows": prepared.rows,
                "timings": timings,
                "clustering": segments.clustering.to_dict(),
                "autoencoder": ae_config.to_dict(),
            },
        )
        model = SegmentAEModel(artifact)
        self._copyValues(model)
        return model


@dataclasses.dataclass(frozen=True)
class PreparedTraining:
    """The training rows after preprocessing: what every candidate of a grid shares.

    ``features`` (cached) holds each row's content hash and feature vector.
    """

    spec: FeatureSpec
    feature_names: list[str]
    preprocessing: object  # the fitted PipelineModel
    features: DataFrame
    rows: int
    rows_text: str
    timings: dict[str, float]


@dataclasses.dataclass(frozen=True)
class TrainingSegments:
    """A fitted clustering of the prepared rows, with each segment's row count."""

    clustering: object  # SegmenterFit
    assigned: DataFrame
    counts: dict[int, int]
    timings: dict[str, float]


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

    def _with(self, **params) -> "SegmentAEModel":
        """A copy with some params changed (``None`` values ignored); checks them first."""
        values = {self.getParam(k): v for k, v in params.items() if v is not None}
        model = self.copy(values)
        model.threshold_rule()
        if model.getOrDefault(model.thresholdMetric) not in THRESHOLD_METRICS:
            raise ConfigError(f"threshold_metric must be one of {THRESHOLD_METRICS}, got {model.getOrDefault(model.thresholdMetric)!r}")
        return model

    def detections(self, df: DataFrame, threshold_ratio: float | None = None) -> DataFrame:
        """SegmentAE's ``detections``: ``df`` with segment, score, threshold and flag.

        ``threshold_ratio`` overrides the model's for this call; no retraining.
        """
        return self._with(thresholdRatio=threshold_ratio).transform(df)

    def reconstruction(self, df: DataFrame, threshold_metric: str | None = None) -> DataFrame:
        """SegmentAE's ``reconstruction``: like ``detections`` plus per-feature errors.

        ``feature_errors`` holds the squared reconstruction error of each
        feature, in the order of :attr:`feature_names`; ``anomaly_score`` is
        the row error by ``threshold_metric`` (mse, mae, rmse, max_error).
        """
        model = self._with(thresholdMetric=threshold_metric)
        scored = model._score(df, feature_errors=True).to_dataframe()
        return model._with_supervised(scored, keep_feature_errors=True) if model.artifact.supervised is not None else scored

    def evaluation(
        self, df: DataFrame, target_col: str, threshold_ratio: float | None = None, rank_by: str = "score"
    ) -> dict:
        """SegmentAE's ``evaluation``: global and per-segment metrics against ``target_col``.

        Computed in Spark; ``threshold_ratio`` overrides the model's for this
        call without retraining. ROC-AUC and PR-AUC rank rows by the raw
        reconstruction error or, with ``rank_by="score_ratio"``, by score / the
        row's segment threshold (see :func:`segae_spark.evaluation.evaluate`).
        """
        model = self._with(thresholdRatio=threshold_ratio)
        outputs = _output_columns(model)
        scored = model.transform(df)
        if model.artifact.supervised is None:
            return evaluate(scored, target_col, outputs.score, outputs.prediction, outputs.segment, outputs.threshold, rank_by=rank_by)
        probability, fraud_prediction = model.getOrDefault(model.probabilityCol), model.getOrDefault(model.fraudPredictionCol)
        # Two evaluations read the scores: the narrow selection is cached, so
        # the table goes through the autoencoders and the classifier once.
        # (A missing column is left for evaluate to name.)
        needed = (target_col, outputs.score, outputs.prediction, outputs.segment, outputs.threshold, probability, fraud_prediction)
        scored = scored.select(*[c for c in needed if c in scored.columns]).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            metrics = evaluate(scored, target_col, outputs.score, outputs.prediction, outputs.segment, outputs.threshold, rank_by=rank_by)
            # The second stage's flag is probability > 0.5 in every segment.
            metrics["supervised"] = evaluate(
                scored.withColumn(_STAGE_THRESHOLD, F.lit(0.5)),
                target_col,
                probability,
                fraud_prediction,
                outputs.segment,
                _STAGE_THRESHOLD,
            )
        finally:
            scored.unpersist()
        return metrics

    def infer_threshold(
        self, df: DataFrame, threshold_perc: float = 95.0, per_segment: bool = True, max_rows: int = 100_000
    ) -> "SegmentAEModel":
        """alibi-detect's ``infer_threshold``: thresholds from a batch whose share of normal rows is known.

        ``threshold_perc`` is the percentage of ``df``'s rows taken to be
        normal (95 for a batch with 5% anomalies). With ``per_segment`` each
        segment's threshold becomes that percentile of the scores of its own
        rows of ``df``; a segment with fewer than ``minRowsPerSegment`` of
        them, and every segment without ``per_segment``, gets the percentile
        of all of ``df``'s scores (one global threshold).

        The batch's scores take the place of the stored training errors (for
        every threshold metric, so ``thresholdMetric`` can still change) and
        ``thresholdMethod`` becomes ``quantile`` with ``thresholdQuantile =
        threshold_perc / 100``; each segment's summary records
        ``threshold_from`` and the batch's ``threshold_errors`` statistics,
        and ``save`` keeps all of it. The model changes in place and is
        returned. The scores reach the driver (they become the stored
        errors), so a batch of more than ``max_rows`` rows is first cut to
        about ``max_rows`` by a seeded hash of each row's content: the same
        rows whatever the input's order or partitioning.
        """
        if isinstance(threshold_perc, bool) or not isinstance(threshold_perc, (int, float)) or not 0 < threshold_perc < 100:
            raise ConfigError(f"threshold_perc must be a number in (0, 100), got {threshold_perc!r}")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ConfigError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        total = df.count()
        if total > max_rows:
            df = df.filter(hash_uniform(row_hash(self.getOrDefault(self.seed), df.columns)) < F.lit(max_rows / total))
            logger.info("infer_threshold: %d rows in the batch, a seeded sample of about %d scored", total, max_rows)
        min_rows = self.getOrDefault(self.minRowsPerSegment)
        outputs = _output_columns(self)
        errors: dict[int, dict[str, np.ndarray]] = {seg: {} for seg in self.artifact.train_errors}
        own: dict[int, bool] = {}
        rows = 0
        for metric in THRESHOLD_METRICS:
            scored = self._with(thresholdMetric=metric).transform(df).select(outputs.segment, outputs.score)
            batch = scored.toPandas()  # small: about max_rows rows
            rows = len(batch)
            if not rows:
                raise SchemaError("infer_threshold needs at least one row; the batch is empty")
            segments = batch[outputs.segment].to_numpy()
            scores = batch[outputs.score].to_numpy(dtype=np.float64)
            pooled = np.sort(scores)
            for seg in errors:
                mine = scores[segments == seg]
                own[seg] = per_segment and len(mine) >= min_rows
                errors[seg][metric] = np.sort(mine) if own[seg] else pooled
        metric = self.getOrDefault(self.thresholdMetric)
        artifact = self.artifact
        segments = [
            {
                **s,
                "threshold_from": f"infer_threshold: {'segment' if own[s['segment']] else 'all rows'}",
                "threshold_errors": ErrorStats.of(errors[s["segment"]][metric]).to_dict(),
            }
            for s in artifact.segments
        ]
        inference = {"rows": rows, "threshold_perc": float(threshold_perc), "per_segment": bool(per_segment)}
        self._artifact = dataclasses.replace(
            artifact, train_errors=errors, segments=segments, training={**artifact.training, "threshold_inference": inference}
        )
        return self._set(thresholdMethod="quantile", thresholdQuantile=threshold_perc / 100.0)

    def fit_supervised(self, df: DataFrame, label_col: str, classifier: str = "random_forest", **settings) -> "SegmentAEModel":
        """A copy of this model with a supervised second stage fitted on ``df``'s labelled rows.

        The stage (see :mod:`segae_spark.supervised`) is a random forest
        (``classifier="random_forest"``) or gradient-boosted trees (``"gbt"``)
        on each row's per-feature reconstruction errors, segment and score
        ratio; ``settings`` are :class:`~segae_spark.supervised.SupervisedConfig`
        fields (num_trees, max_depth, max_iter, seed: the model's seed by
        default). The returned model's ``transform`` adds ``probabilityCol``
        (fraud probability) and ``fraudPredictionCol`` (probability > 0.5)
        next to the anomaly score; ``evaluation`` reports the stage's metrics
        under ``"supervised"``; ``save`` keeps the stage.
        """
        if label_col not in df.columns:
            raise SchemaError(f"label column {label_col!r} is not a column of the data; columns: {df.columns}")
        config = SupervisedConfig.from_dict({"classifier": classifier, "seed": self.getOrDefault(self.seed), **settings})
        outputs = _output_columns(self)
        inputs = classifier_inputs(self.reconstruction(df), FEATURE_ERRORS_COL)
        stage = fit_classifier(inputs, label_col, outputs.segment, outputs.score_ratio, config)
        model = self.copy()
        model._artifact = dataclasses.replace(self.artifact, supervised=stage)
        return model

    def _with_supervised(self, scored: DataFrame, keep_feature_errors: bool) -> DataFrame:
        """``scored`` (with per-feature errors) plus the second stage's probability and flag."""
        stage = self.artifact.supervised
        probability = add_probability(
            classifier_inputs(scored, FEATURE_ERRORS_COL),
            stage,
            self.getOrDefault(self.probabilityCol),
            self.getOrDefault(self.fraudPredictionCol),
        )
        return probability if keep_feature_errors else probability.drop(FEATURE_ERRORS_COL)

    def predict(self, df: DataFrame, return_feature_score: bool = False) -> DataFrame:
        """alibi-detect's ``predict``: the scored rows, with alibi-detect's column names as well.

        ``transform(df)`` plus ``instance_score`` (a copy of the score
        column) and ``is_outlier`` (of the flag); with
        ``return_feature_score``, ``reconstruction(df)`` plus
        ``feature_score`` (of ``feature_errors``, the squared error of each
        feature).
        """
        aliases = ["instance_score", "is_outlier"] + (["feature_score"] if return_feature_score else [])
        clash = [c for c in aliases if c in df.columns]
        if clash:
            raise SchemaError(f"input already has column(s) {clash}, which predict() adds; drop or rename them")
        outputs = _output_columns(self)
        extra = [F.col(outputs.score).alias("instance_score"), F.col(outputs.prediction).alias("is_outlier")]
        if return_feature_score:
            extra.append(F.col(FEATURE_ERRORS_COL).alias("feature_score"))
        scored = self.reconstruction(df) if return_feature_score else self.transform(df)
        return scored.select("*", *extra)

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
            model = self.artifact.models[name]
            digest.update(model.npz if model.npz is not None else model.keras)
        digest.update(json.dumps(self.artifact.segments, sort_keys=True).encode())
        if self.artifact.supervised is not None:
            digest.update(json.dumps(self.artifact.supervised.config.to_dict(), sort_keys=True).encode())
            digest.update(self.artifact.supervised.fingerprint().encode())
        return digest.hexdigest()[:16]

    @property
    def feature_names(self) -> list[str]:
        return list(self.artifact.feature_names)

    @property
    def thresholds(self) -> dict[int, float]:
        """Per-segment thresholds under the current threshold params and metric."""
        rule = self.threshold_rule()
        metric = self.getOrDefault(self.thresholdMetric)
        return {seg: rule.threshold(errors[metric]) for seg, errors in sorted(self.artifact.train_errors.items())}

    def segment_summary(self) -> list[dict]:
        """One dict per segment: training rows, model used, threshold and error stats."""
        thresholds = self.thresholds
        return [{**s, "threshold": thresholds[s["segment"]]} for s in self.artifact.segments]

    def unseen_categories(self, df: DataFrame) -> dict[str, int]:
        """Per categorical feature, how many values of ``df`` training never saw (one Spark aggregation).

        Scoring never fails on them: each encoder maps them to its documented
        value (see :mod:`segae_spark.features.encoders`).
        """
        self.artifact.spec.check_input(df.schema)
        return unseen_categories(self.artifact.preprocessing, self.artifact.spec, df)

    def _broadcast_weights(self, spark):
        if self._weights is None:
            # Built-in models travel as numpy weights only; a user model that
            # only Keras can run travels as its .keras file.
            blobs = {name: {"npz": m.npz} if m.npz is not None else {"keras": m.keras} for name, m in self.artifact.models.items()}
            self._weights = spark.sparkContext.broadcast(blobs)
        return self._weights

    def _transform(self, dataset: DataFrame) -> DataFrame:
        if self.artifact.supervised is not None:
            return self._with_supervised(self._score(dataset, feature_errors=True).to_dataframe(), keep_feature_errors=False)
        return self._score(dataset, feature_errors=False).to_dataframe()

    def arrow_transform(self, dataset: DataFrame) -> ArrowMap | DataFrame:
        """``transform(dataset)`` held back as an :class:`~segae_spark.io.arrow_map.ArrowMap`, to write.

        ``write_table(model.arrow_transform(df), path, ...)`` writes the same
        table as ``write_table(model.transform(df), ...)``; without delta-spark
        it scores each batch in the Python task that writes it (one trip of
        the rows through Python, no Spark rows built from the scores). A model
        with a supervised second stage returns ``transform(dataset)``: its
        classifier runs in Spark after the scores.
        """
        if self.artifact.supervised is not None:
            return self._transform(dataset)
        return self._score(dataset, feature_errors=False)

    def _score(self, dataset: DataFrame, feature_errors: bool) -> ArrowMap:
        artifact = self.artifact
        artifact.spec.check_input(dataset.schema)
        outputs = _output_columns(self)
        get = self.getOrDefault
        top_k = get(self.topFeatures)
        if top_k < 0:
            raise ConfigError(f"topFeatures must be >= 0, got {top_k}")
        stamps = [c for c in (get(self.modelIdCol), get(self.scoredAtCol)) if c]
        added = outputs.names() + ([outputs.top_features] if top_k else []) + ([FEATURE_ERRORS_COL] if feature_errors else []) + stamps
        passthrough = tuple(get(self.passthroughCols)) or tuple(dataset.columns)
        missing = [c for c in passthrough if c not in dataset.columns]
        if missing:
            raise SchemaError(f"passthroughCols names column(s) {missing} that the input lacks; columns: {dataset.columns}")
        clash = [c for c in added if c in passthrough]
        if clash:
            raise SchemaError(
                f"input already has output column(s) {clash}; drop them, leave them out of passthroughCols or rename "
                "the outputs (segmentCol, scoreCol, thresholdCol, scoreRatioCol, predictionCol, topFeaturesCol, "
                "modelIdCol, scoredAtCol)"
            )
        kept = [F.col(f"`{c}`") for c in passthrough]
        # Nearest-centroid segmenters: features assembled and segments assigned
        # in numpy next to the autoencoders (see ArrayAssembly); others in Spark.
        centers = nearest_centroids(artifact.segmenter)
        assembled = assembly_inputs(artifact.preprocessing, dataset) if centers is not None else None
        if assembled is not None:
            columns, assembly = assembled
            prepared = columns.select(*kept, *[F.col(c) for c in assembly.columns])
        else:
            assembly = centers = None
            prepared = artifact.segmenter.transform(artifact.preprocessing.transform(dataset)).select(
                *kept,
                F.col(_SEGMENT).cast("int").alias(_SEGMENT),
                vector_to_array(F.col(FEATURES_COL), "float32").alias(_X),
            )
        model_id = self.model_id
        plan = ScoringPlan(
            model_id=model_id,
            segment_models={s["segment"]: s["model"] for s in artifact.segments},
            thresholds=self.thresholds,
            metric=get(self.thresholdMetric),
            features_col=_X,
            segment_col=_SEGMENT,
            passthrough=passthrough,
            outputs=outputs,
            feature_errors=feature_errors,
            top_features=top_k,
            feature_names=tuple(self.feature_names),
            model_id_col=get(self.modelIdCol),
            scored_at_col=get(self.scoredAtCol),
            scored_at=dt.datetime.now(dt.timezone.utc),
            assembly=assembly,
            centers=centers,
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
