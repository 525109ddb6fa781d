"""Fit and reload the clusterer that assigns every row its segment.

Five clusterers, SegmentAE's choices:

* ``kmeans``, ``bisecting_kmeans``, ``gaussian_mixture``: Spark ML, fitted on
  every training row, assigning segments inside the JVM;
* ``minibatch_kmeans``, ``agglomerative``: scikit-learn fitted on a bounded,
  seeded sample, assigning every row to its nearest centroid in Spark
  (:mod:`segae_spark.clustering.sample_fitted`).

The number of segments is fixed, or ``"auto"``: the K of a range with the best
silhouette on a sample (:mod:`segae_spark.clustering.k_selection`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyspark.ml import Model
from pyspark.ml.clustering import (
    BisectingKMeans,
    BisectingKMeansModel,
    GaussianMixture,
    GaussianMixtureModel,
    KMeans,
    KMeansModel,
)
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segae_spark.clustering.centroids import CentroidSegmenterModel, read_metadata
from segae_spark.clustering.k_selection import choose_k
from segae_spark.clustering.sample import hash_sample
from segae_spark.clustering.sample_fitted import DEFAULT_SAMPLE_SIZE, AgglomerativeSegmenter, MiniBatchKMeansSegmenter
from segae_spark.errors import ArtifactError, ConfigError
from segae_spark.progress import logger

SPARK_CLUSTERERS = ("kmeans", "bisecting_kmeans", "gaussian_mixture")
SAMPLE_CLUSTERERS = ("minibatch_kmeans", "agglomerative")
CLUSTERERS = SPARK_CLUSTERERS + SAMPLE_CLUSTERERS
AUTO = "auto"
DEFAULT_K_RANGE = (2, 10)
DEFAULT_RUNS = 3

# The saved model's class (its DefaultParams metadata) -> the class that loads it.
# Only these load: a model directory names no code to import.
_MODEL_CLASSES = {
    "org.apache.spark.ml.clustering.KMeansModel": KMeansModel,
    "org.apache.spark.ml.clustering.BisectingKMeansModel": BisectingKMeansModel,
    "org.apache.spark.ml.clustering.GaussianMixtureModel": GaussianMixtureModel,
    f"{CentroidSegmenterModel.__module__}.{CentroidSegmenterModel.__name__}": CentroidSegmenterModel,
}
# Rows looked at first when checking there are enough distinct feature vectors.
_HEAD_ROWS = 10_000
# The Gaussian mixture's per-cluster probabilities: kept off the user's columns.
_PROBABILITY_COL = "__segae_cluster_probability"


def to_n_clusters(value) -> int | str:
    """Type converter of ``nClusters``: an integer, or ``"auto"``."""
    if value == AUTO:
        return AUTO
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise ConfigError(f"nClusters (config clustering.n_clusters) must be an integer >= 2 or 'auto', got {value!r}")


def check_segmenter_params(model: str, n_clusters: int | str, k_range, sample_size: int, runs: int) -> None:
    """Raise ConfigError, naming the param, for settings no clusterer can fit with."""
    if model not in CLUSTERERS:
        raise ConfigError(f"clusterModel (config clustering.model) must be one of {CLUSTERERS}, got {model!r}")
    if n_clusters != AUTO and not _is_int(n_clusters, at_least=2):
        raise ConfigError(f"nClusters (config clustering.n_clusters) must be an integer >= 2 or 'auto', got {n_clusters!r}")
    bounds = list(k_range)
    if len(bounds) != 2 or not all(_is_int(k, at_least=2) for k in bounds) or bounds[0] > bounds[1]:
        raise ConfigError(
            f"nClustersRange (config clustering.k_range) must be [smallest K, largest K] with 2 <= smallest <= largest, got {k_range!r}"
        )
    if not _is_int(sample_size, at_least=100):
        raise ConfigError(f"clusterSampleSize (config clustering.sample_size) must be an integer >= 100, got {sample_size!r}")
    if not _is_int(runs, at_least=1):
        raise ConfigError(f"clusterRuns (config clustering.runs) must be an integer >= 1, got {runs!r}")


def _is_int(value, at_least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= at_least


@dataclass(frozen=True)
class SegmenterFit:
    """A fitted segmenter and what the fit decided.

    ``n_segments``: the segments it can assign, 0 .. n_segments - 1 (bisecting
    K-means may end with fewer than K); ``k_selection``: for ``"auto"``, every
    candidate K's silhouette and the K chosen.
    """

    algorithm: str
    model: Model
    n_segments: int
    k_selection: dict | None = None

    def to_dict(self) -> dict:
        return {"model": self.algorithm, "segments": self.n_segments, "k_selection": self.k_selection}


def fit_segmenter(
    df: DataFrame,
    features_col: str,
    prediction_col: str,
    model: str = "kmeans",
    n_clusters: int | str = 4,
    seed: int = 42,
    k_range=DEFAULT_K_RANGE,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    runs: int = DEFAULT_RUNS,
) -> SegmenterFit:
    """Fit ``model`` with ``n_clusters`` segments (or the best K of ``k_range``) on ``df[features_col]``.

    ``runs``: fits with seeds ``seed`` .. ``seed + runs - 1``, the best kept
    (see :func:`_fit_best`); minibatch_kmeans's ``n_init``.
    """
    check_segmenter_params(model, n_clusters, k_range, sample_size, runs)
    smallest, largest = k_range
    if n_clusters == AUTO:
        _check_distinct(df, features_col, smallest, f"nClustersRange (config clustering.k_range) starts at K={smallest}")
    else:
        _check_distinct(df, features_col, n_clusters, f"nClusters (config clustering.n_clusters) = {n_clusters}")

    def fit(k: int, data: DataFrame) -> Model:
        return _fit_best(model, k, data, features_col, prediction_col, seed, sample_size, runs)

    selection = None
    if n_clusters == AUTO:
        sample = hash_sample(df, features_col, sample_size, seed).cache()
        try:
            distinct = _distinct_vectors(sample, features_col, largest)
            if distinct < smallest:
                raise ConfigError(
                    f"the clustering sample holds {distinct} distinct feature vectors, fewer than the smallest K={smallest} "
                    "of nClustersRange; raise clusterSampleSize (config clustering.sample_size)"
                )
            if distinct < largest:
                logger.info("clustering: the sample holds %d distinct feature vectors; larger K are not tried", distinct)
            candidates = list(range(smallest, min(largest, distinct) + 1))
            n_clusters, selection = choose_k(sample, features_col, prediction_col, candidates, lambda k: fit(k, sample))
            selection["sample_rows"] = sample.count()
        finally:
            sample.unpersist()
    logger.info("clustering: fitting %s with K=%d", model, n_clusters)
    fitted = fit(n_clusters, df)
    return SegmenterFit(model, fitted, _segment_count(fitted), selection)


def _fit_best(
    model: str, k: int, df: DataFrame, features_col: str, prediction_col: str, seed: int, sample_size: int, runs: int
) -> Model:
    """Fit ``model``; a Spark clusterer once per seed, keeping the fit of lowest cost.

    Like scikit-learn's ``n_init``: a single k-means|| start often ends in a
    local optimum 5-20 % above the best one found from a few starts. Starts
    that reach the same optimum (often, with the segments numbered in another
    order) tie, and the first of them is kept (see :func:`improves`).
    """
    cols = {"featuresCol": features_col, "predictionCol": prediction_col, "k": k}
    if model == "minibatch_kmeans":
        return MiniBatchKMeansSegmenter(seed=seed, sampleSize=sample_size, initRuns=runs, **cols).fit(df)
    if model == "agglomerative":
        return AgglomerativeSegmenter(seed=seed, sampleSize=sample_size, **cols).fit(df)
    best, best_cost = None, float("inf")
    for run in range(runs):
        if model == "kmeans":
            fitted = KMeans(seed=seed + run, maxIter=30, **cols).fit(df)
        elif model == "bisecting_kmeans":
            fitted = BisectingKMeans(seed=seed + run, **cols).fit(df)
        else:
            fitted = GaussianMixture(seed=seed + run, probabilityCol=_PROBABILITY_COL, **cols).fit(df)
        cost = -fitted.summary.logLikelihood if isinstance(fitted, GaussianMixtureModel) else fitted.summary.trainingCost
        logger.info("clustering: %s K=%d run %d/%d: cost %.6g", model, k, run + 1, runs, cost)
        if improves(cost, best_cost):
            best, best_cost = fitted, cost
    return best


# Relative difference below which two clustering costs are the same cost.
COST_TIE = 1e-9


def improves(cost: float, best_cost: float) -> bool:
    """Whether ``cost`` beats ``best_cost`` by more than float noise (``COST_TIE``, relative).

    Spark sums a fit's cost over partitions in the order their tasks finish,
    so the same fit's cost differs in its last bits from one run of the job
    to the next (measured: ``0x1.c2e04ed5f79b8p+12`` and ``...b9p+12``). Two
    starts reaching the same optimum with the segments numbered differently
    would then be picked at random, and with them each segment's seed and
    model: the same data would not give the same model.
    """
    if not math.isfinite(best_cost):
        return cost < best_cost
    return cost < best_cost - COST_TIE * max(abs(cost), abs(best_cost))


def _segment_count(model: Model) -> int:
    if isinstance(model, GaussianMixtureModel):
        return len(model.weights)
    return len(model.clusterCenters())


def _distinct_vectors(df: DataFrame, features_col: str, at_most: int) -> int:
    """Distinct feature vectors of ``df``, counted up to ``at_most``."""
    # As arrays: the same vector may be stored dense in one row and sparse in another.
    vectors = df.select(vector_to_array(F.col(features_col)).alias("v"))
    return vectors.distinct().limit(at_most).count()


def _check_distinct(df: DataFrame, features_col: str, k: int, asked: str) -> None:
    """Raise ConfigError, before any fit, if ``df`` holds fewer than ``k`` distinct feature vectors."""
    # The first rows usually prove it cheaply; only when they do not, count over every row.
    if _distinct_vectors(df.limit(_HEAD_ROWS), features_col, k) >= k:
        return
    distinct = _distinct_vectors(df, features_col, k)
    if distinct < k:
        raise ConfigError(f"{asked}, more than the {distinct} distinct feature vectors of the training rows")


def segment_sizes(assigned: DataFrame, prediction_col: str, n_segments: int) -> dict[int, int]:
    """Rows per segment 0 .. n_segments - 1 (0 for a segment no row went to); one log line each."""
    found = {int(r[0]): int(r[1]) for r in assigned.groupBy(prediction_col).count().collect()}  # small: one row per segment
    sizes = {seg: found.get(seg, 0) for seg in range(n_segments)}
    total = max(1, sum(sizes.values()))
    for seg, rows in sizes.items():
        logger.info("clustering: segment %d: %d rows (%.1f%%)", seg, rows, 100.0 * rows / total)
    return sizes


def load_segmenter(path: str) -> Model:
    """Load the segmenter saved at ``path``, whichever of the clusterers it is."""
    name = read_metadata(path, SparkSession.active()).get("class")
    cls = _MODEL_CLASSES.get(name)
    if cls is None:
        raise ArtifactError(f"{path} holds a {name!r} model, not a segmenter; segmenters are {sorted(_MODEL_CLASSES)}")
    return cls.load(path)


def nearest_centroids(model: Model) -> np.ndarray | None:
    """The centroids, when ``model`` gives each row its nearest centroid by Euclidean distance; else None.

    True of KMeans and the sample-fitted clusterers, whose assignment scoring
    can then redo in numpy (:func:`~segae_spark.clustering.nearest.nearest_center`)
    next to the autoencoders. Bisecting KMeans descends its tree of splits and
    a Gaussian mixture picks the most probable component: those stay in Spark.
    Spark's KMeans compares distances computed as ``|x|^2 + |c|^2 - 2 x.c``
    where that is accurate to 1e-6 and exactly otherwise, so a row whose two
    nearest centroids tie to within that may go to the other one of the two.
    """
    if isinstance(model, CentroidSegmenterModel):
        return model.cluster_centers_
    if isinstance(model, KMeansModel) and model.getDistanceMeasure() == "euclidean":
        return np.array([np.asarray(center, dtype=np.float64) for center in model.clusterCenters()])
    return None
