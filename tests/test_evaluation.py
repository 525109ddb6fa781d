"""Metrics of a scored table: score-ratio ranking and exact per-segment areas."""

import numpy as np
import pytest
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.evaluation import evaluate


def _scored_rows(seed: int = 3, rows: int = 600):
    """Three segments on different error scales, tied scores, and a one-class segment."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, 3, rows)
    label = (rng.random(rows) < 0.15).astype(int)
    label[segment == 2] = 0  # segment 2 holds normals only
    scale = np.array([1.0, 10.0, 3.0])[segment]
    score = np.round(scale * (rng.gamma(2.0, 1.0, rows) + 2.5 * label), 1)  # rounding makes ties
    threshold = scale * 6.0
    flag = (score > threshold).astype(int)
    return [
        (int(s), float(x), float(t), int(y), int(f))
        for s, x, t, y, f in zip(segment, score, threshold, label, flag)
    ], segment, score, threshold, label, flag


@pytest.fixture(scope="module")
def scored(spark):
    rows, *arrays = _scored_rows()
    df = spark.createDataFrame(rows, "segment int, anomaly_score double, threshold double, y int, is_anomaly int")
    return df, arrays


def _spark_area(spark_df, column, metric):
    data = spark_df.select(F.col(column).alias("s"), F.col("y").cast("double").alias("l"))
    return BinaryClassificationEvaluator(rawPredictionCol="s", labelCol="l", metricName=metric, numBins=0).evaluate(data)


def test_areas_rank_by_ratio_overall_and_per_segment(scored):
    df, (segment, score, threshold, label, flag) = scored
    metrics = evaluate(df, "y", rank_by="score_ratio")
    ratio = score / threshold
    assert metrics["rank_by"] == "score_ratio"  # the scored table has no ratio column: recomputed
    assert metrics["global"]["roc_auc"] == pytest.approx(roc_auc_score(label, ratio), abs=1e-12)
    with_ratio = df.withColumn("sev", F.col("anomaly_score") / F.col("threshold"))
    assert metrics["global"]["pr_auc"] == pytest.approx(_spark_area(with_ratio, "sev", "areaUnderPR"), abs=1e-12)

    by_segment = {s["segment"]: s for s in metrics["segments"]}
    for s in (0, 1):
        idx = segment == s
        assert by_segment[s]["roc_auc"] == pytest.approx(roc_auc_score(label[idx], ratio[idx]), abs=1e-12)
        expected_pr = _spark_area(with_ratio.filter(F.col("segment") == s), "sev", "areaUnderPR")
        assert by_segment[s]["pr_auc"] == pytest.approx(expected_pr, abs=1e-12)
    assert by_segment[2]["roc_auc"] is None and by_segment[2]["pr_auc"] is None  # one class only

    tp = int(((flag == 1) & (label == 1)).sum())
    assert metrics["global"]["tp"] == tp and metrics["global"]["rows"] == len(label)


def test_default_ranks_by_the_raw_error(scored):
    df, (segment, score, threshold, label, _) = scored
    raw = evaluate(df, "y")
    assert raw["rank_by"] == "score"
    assert raw["global"]["roc_auc"] == pytest.approx(roc_auc_score(label, score), abs=1e-12)
    by_ratio = evaluate(df, "y", rank_by="score_ratio")["global"]["roc_auc"]
    # Segments on different scales: the raw error ranks a noisy segment's normals above another's anomalies.
    assert by_ratio > raw["global"]["roc_auc"] + 0.05
    idx = segment == 1  # within one segment both rankings agree (one threshold)
    assert {s["segment"]: s for s in raw["segments"]}[1]["roc_auc"] == pytest.approx(
        roc_auc_score(label[idx], score[idx]), abs=1e-12
    )


def test_zero_threshold_ranks_positive_scores_first(spark):
    df = spark.createDataFrame(
        [(0, 0.0, 0.0, 0, 0), (0, 0.2, 0.0, 1, 1), (1, 0.5, 1.0, 0, 0), (1, 3.0, 1.0, 1, 1)],
        "segment int, anomaly_score double, threshold double, y int, is_anomaly int",
    )
    assert evaluate(df, "y", rank_by="score_ratio")["global"]["roc_auc"] == pytest.approx(1.0)


def test_bad_arguments_are_named(scored):
    df, _ = scored
    with pytest.raises(ConfigError, match="rank_by"):
        evaluate(df, "y", rank_by="energy")
    with pytest.raises(SchemaError, match="lacks column"):
        evaluate(df.drop("threshold"), "y")
