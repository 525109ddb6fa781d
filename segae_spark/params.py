"""The Params shared by the SegmentAE estimator and its fitted model.

Declared once, as pyspark.ml does (``pyspark/ml/param/shared.py``), so the
Estimator and the Model expose the same getters and a fitted model keeps the
settings it was trained with. Names follow SegmentAE where it has one
(``thresholdRatio``, ``thresholdMetric``).
"""

from __future__ import annotations

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasSeed

from segae_spark.clustering import DEFAULT_K_RANGE, DEFAULT_RUNS, DEFAULT_SAMPLE_SIZE, to_n_clusters
from segae_spark.features.encoders import DEFAULT_MAX_CATEGORIES
from segae_spark.thresholds import ThresholdRule


def _dict(value):
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict, got {type(value).__name__}")
    return dict(value)


class SegmentAEParams(HasSeed):
    """Params of :class:`SegmentAE` and :class:`SegmentAEModel`."""

    numericCols = Param(Params._dummy(), "numericCols", "numeric feature columns; empty = every numeric column", TypeConverters.toListString)
    categoricalCols = Param(Params._dummy(), "categoricalCols", "categorical feature columns; empty = every string column", TypeConverters.toListString)
    excludeCols = Param(Params._dummy(), "excludeCols", "columns never used as features", TypeConverters.toListString)
    labelCol = Param(Params._dummy(), "labelCol", "0/1 label column; when set, only label==0 rows train; empty = none", TypeConverters.toString)
    idCol = Param(Params._dummy(), "idCol", "row id column, excluded from features; empty = none", TypeConverters.toString)
    dateCol = Param(Params._dummy(), "dateCol", "event date column, excluded from features; empty = none", TypeConverters.toString)
    imputeStrategy = Param(Params._dummy(), "imputeStrategy", "numeric imputation: mean, median or most_frequent (alias mode)", TypeConverters.toString)
    categoricalImputeStrategy = Param(Params._dummy(), "categoricalImputeStrategy", "categorical imputation: constant (nulls become the category __missing__) or most_frequent", TypeConverters.toString)
    encoder = Param(Params._dummy(), "encoder", "categorical encoder: one_hot (capped at maxCategories), label (codes by frequency) or inverse_frequency (SegmentAE's IFrequencyEncoder)", TypeConverters.toString)
    maxCategories = Param(Params._dummy(), "maxCategories", "one_hot: slots per column for the most frequent categories; rarer and unseen ones share an __other__ slot", TypeConverters.toInt)
    scaler = Param(Params._dummy(), "scaler", "numeric scaler: minmax, standard or robust (median / IQR)", TypeConverters.toString)
    clusterModel = Param(Params._dummy(), "clusterModel", "clustering algorithm: kmeans, bisecting_kmeans or gaussian_mixture (Spark, on all rows); minibatch_kmeans or agglomerative (scikit-learn on a clusterSampleSize sample, agglomerative on at most 5,000 of its rows; every row goes to its nearest centroid)", TypeConverters.toString)
    nClusters = Param(Params._dummy(), "nClusters", "number of segments (>= 2), or 'auto': the K of nClustersRange with the best silhouette on a clusterSampleSize sample", to_n_clusters)
    nClustersRange = Param(Params._dummy(), "nClustersRange", "[smallest K, largest K] tried when nClusters is 'auto'", TypeConverters.toListInt)
    clusterRuns = Param(Params._dummy(), "clusterRuns", "fits with seeds seed, seed+1, ...; the lowest-cost one is kept (scikit-learn's n_init; agglomerative has one)", TypeConverters.toInt)
    clusterSampleSize = Param(Params._dummy(), "clusterSampleSize", "rows (at most; seeded, order-independent) that minibatch_kmeans / agglomerative are fitted on and 'auto' scores each K on", TypeConverters.toInt)
    autoencoder = Param(Params._dummy(), "autoencoder", "autoencoder settings: type dense (default), batchnorm, ensemble, keras or aegmm, plus its fields (see segae_spark.models)", _dict)
    maxRowsPerSegment = Param(Params._dummy(), "maxRowsPerSegment", "training rows sampled per segment (bounded, seeded)", TypeConverters.toInt)
    minRowsPerSegment = Param(Params._dummy(), "minRowsPerSegment", "segments with fewer training rows use the global model", TypeConverters.toInt)
    trainingMode = Param(Params._dummy(), "trainingMode", "per_segment (one autoencoder per segment) or shared (one for all, SegmentAE's way)", TypeConverters.toString)
    trainingBackend = Param(Params._dummy(), "trainingBackend", "per_segment (models spread over parallel Spark tasks, trained together per task), local (on the driver), tf_distribute (as per_segment, but a model with more than maxRowsPerSegment rows trains on all of them, data-parallel in Spark barrier tasks) or horovod (the same with horovod.spark.run; needs the Horovod environment, docs/horovod.md)", TypeConverters.toString)
    dataParallelWorkers = Param(Params._dummy(), "dataParallelWorkers", "tasks (tf_distribute) or ranks (horovod) of a data-parallel model; 0 = every task slot of the cluster", TypeConverters.toInt)
    stagingDir = Param(Params._dummy(), "stagingDir", "horovod: directory every executor can read (HDFS, S3, DBFS, a shared mount) where a data-parallel model's rows are staged as Parquet and deleted after; empty = a temporary directory on the driver, which only a local master can use", TypeConverters.toString)
    thresholdMethod = Param(Params._dummy(), "thresholdMethod", "mean_ratio (SegmentAE's rule), quantile or contamination", TypeConverters.toString)
    thresholdQuantile = Param(Params._dummy(), "thresholdQuantile", "quantile of the segment's training errors (thresholdMethod=quantile)", TypeConverters.toFloat)
    contamination = Param(Params._dummy(), "contamination", "expected anomaly share per segment (thresholdMethod=contamination)", TypeConverters.toFloat)
    thresholdRatio = Param(Params._dummy(), "thresholdRatio", "threshold = mean train error of the segment x this ratio", TypeConverters.toFloat)
    thresholdMetric = Param(Params._dummy(), "thresholdMetric", "reconstruction error: mse, mae, rmse or max_error", TypeConverters.toString)
    segmentCol = Param(Params._dummy(), "segmentCol", "output column: segment id", TypeConverters.toString)
    scoreCol = Param(Params._dummy(), "scoreCol", "output column: reconstruction error", TypeConverters.toString)
    thresholdCol = Param(Params._dummy(), "thresholdCol", "output column: the row's segment threshold", TypeConverters.toString)
    scoreRatioCol = Param(Params._dummy(), "scoreRatioCol", "output column: anomaly_score / threshold, comparable across segments (> 1 is flagged); rank alerts by it", TypeConverters.toString)
    topFeatures = Param(Params._dummy(), "topFeatures", "k: each row's k features with the largest share of its reconstruction error go to topFeaturesCol; 0 = no such column", TypeConverters.toInt)
    topFeaturesCol = Param(Params._dummy(), "topFeaturesCol", "output column: list of {feature, share}, largest share first", TypeConverters.toString)
    modelIdCol = Param(Params._dummy(), "modelIdCol", "output column: the scoring model's id; empty = no such column", TypeConverters.toString)
    scoredAtCol = Param(Params._dummy(), "scoredAtCol", "output column: UTC timestamp of the transform call, one value per call; empty = no such column", TypeConverters.toString)
    passthroughCols = Param(Params._dummy(), "passthroughCols", "input columns copied to the output; empty = all", TypeConverters.toListString)
    predictionCol = Param(Params._dummy(), "predictionCol", "output column: 1 if the score exceeds the threshold", TypeConverters.toString)
    probabilityCol = Param(Params._dummy(), "probabilityCol", "output column of the supervised second stage (when the model has one): the fraud probability", TypeConverters.toString)
    fraudPredictionCol = Param(Params._dummy(), "fraudPredictionCol", "output column of the supervised second stage: 1 if the fraud probability exceeds 0.5", TypeConverters.toString)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setDefault(
            numericCols=[],
            categoricalCols=[],
            excludeCols=[],
            labelCol="",
            idCol="transaction_id",
            dateCol="event_date",
            imputeStrategy="median",
            categoricalImputeStrategy="constant",
            encoder="one_hot",
            maxCategories=DEFAULT_MAX_CATEGORIES,
            scaler="minmax",
            clusterModel="kmeans",
            nClusters=4,
            nClustersRange=list(DEFAULT_K_RANGE),
            clusterSampleSize=DEFAULT_SAMPLE_SIZE,
            clusterRuns=DEFAULT_RUNS,
            autoencoder={},
            maxRowsPerSegment=20000,
            minRowsPerSegment=200,
            trainingMode="per_segment",
            trainingBackend="per_segment",
            dataParallelWorkers=0,
            stagingDir="",
            thresholdMethod="mean_ratio",
            thresholdQuantile=0.995,
            contamination=0.01,
            thresholdRatio=1.0,
            thresholdMetric="mse",
            segmentCol="segment",
            scoreCol="anomaly_score",
            thresholdCol="threshold",
            scoreRatioCol="score_ratio",
            predictionCol="is_anomaly",
            probabilityCol="fraud_probability",
            fraudPredictionCol="fraud_prediction",
            topFeatures=3,
            topFeaturesCol="top_features",
            modelIdCol="model_id",
            scoredAtCol="scored_at",
            passthroughCols=[],
            seed=42,
        )

    def threshold_rule(self) -> "ThresholdRule":
        """The thresholding rule the current params describe."""
        return ThresholdRule(
            method=self.getOrDefault(self.thresholdMethod),
            ratio=self.getOrDefault(self.thresholdRatio),
            quantile=self.getOrDefault(self.thresholdQuantile),
            contamination=self.getOrDefault(self.contamination),
        )

    def param_values(self) -> dict:
        """All params (set or default) as a JSON-ready dict keyed by name."""
        return {param.name: value for param, value in self.extractParamMap().items()}

