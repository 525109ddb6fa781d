"""Fit and reload the Spark clusterer that assigns every row its segment.

The clusterer runs on the full training table in Spark and assigns segments
inside the JVM at scoring time, so segment assignment scales with the cluster.
"""

from __future__ import annotations

from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.sql import DataFrame

from segae_spark.errors import ConfigError

CLUSTERERS = ("kmeans",)


def fit_segmenter(
    df: DataFrame, features_col: str, prediction_col: str, model: str = "kmeans", n_clusters: int = 4, seed: int = 42
) -> KMeansModel:
    """Fit ``model`` with ``n_clusters`` segments on ``df[features_col]``."""
    if model not in CLUSTERERS:
        raise ConfigError(f"clustering model must be one of {CLUSTERERS}, got {model!r}")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 2:
        raise ConfigError(f"n_clusters must be an integer >= 2, got {n_clusters!r}")
    kmeans = KMeans(k=n_clusters, seed=seed, featuresCol=features_col, predictionCol=prediction_col, maxIter=30)
    return kmeans.fit(df)


def load_segmenter(path: str) -> KMeansModel:
    return KMeansModel.load(path)
