"""Choosing the number of segments by silhouette (``nClusters="auto"``).

Each candidate K is fitted and scored on the same bounded sample, not on
every row: the silhouette only needs to rank the candidates, and a sample
keeps the cost of trying ten K's close to the cost of one fit on all rows.
"""

from __future__ import annotations

from typing import Callable

from pyspark.ml import Model
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.sql import DataFrame

from segae_spark.errors import ConfigError
from segae_spark.progress import logger


def choose_k(
    sample: DataFrame,
    features_col: str,
    prediction_col: str,
    candidates: list[int],
    fit: Callable[[int], Model],
) -> tuple[int, dict]:
    """The K of ``candidates`` whose clusters of ``sample`` have the best silhouette.

    ``fit(k)`` gives the clusterer fitted on ``sample`` with K clusters. A tie
    goes to the smaller K. Returns K and a record of the choice (every K's
    silhouette) for the model's training info.
    """
    evaluator = ClusteringEvaluator(
        featuresCol=features_col, predictionCol=prediction_col, metricName="silhouette", distanceMeasure="squaredEuclidean"
    )
    scores = []
    for k in candidates:
        predictions = fit(k).transform(sample)
        found = predictions.select(prediction_col).distinct().count()
        if found < 2:
            # The silhouette needs two clusters; e.g. a Gaussian mixture can collapse into one.
            logger.info("clustering: K=%d skipped, the clusterer put every sample row in one cluster", k)
            continue
        silhouette = evaluator.evaluate(predictions)
        logger.info("clustering: K=%d silhouette %.4f (%d clusters found)", k, silhouette, found)
        scores.append({"k": k, "silhouette": silhouette, "clusters": found})
    if not scores:
        raise ConfigError(f"nClusters='auto': none of K={candidates} split the sample into two or more clusters")
    best = max(scores, key=lambda s: (s["silhouette"], -s["k"]))
    logger.info("clustering: chose K=%d (silhouette %.4f) among K=%s", best["k"], best["silhouette"], candidates)
    return best["k"], {"candidates": candidates, "scores": scores, "chosen": best["k"]}
