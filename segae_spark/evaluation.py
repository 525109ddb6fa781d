"""Metrics of a scored table against a 0/1 label, computed in Spark.

Only aggregates reach the driver: one row of confusion counts overall, one
per segment, and the areas under the ROC and PR curves from Spark's
BinaryClassificationMetrics (exact: no down-sampling of the curve).
"""

from __future__ import annotations

from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segae_spark.errors import SchemaError


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _confusion_metrics(tp: int, fp: int, fn: int, tn: int) -> dict:
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def _counts(label: str, prediction: str):
    y = F.col(label).cast("int")
    p = F.col(prediction).cast("int")
    return [
        F.count(F.lit(1)).alias("rows"),
        F.sum(((y == 1) & (p == 1)).cast("long")).alias("tp"),
        F.sum(((y == 0) & (p == 1)).cast("long")).alias("fp"),
        F.sum(((y == 1) & (p == 0)).cast("long")).alias("fn"),
        F.sum(((y == 0) & (p == 0)).cast("long")).alias("tn"),
    ]


def _area(df: DataFrame, label: str, score: str, metric: str) -> float | None:
    evaluator = BinaryClassificationEvaluator(
        rawPredictionCol="__segae_score", labelCol="__segae_label", metricName=metric, numBins=0
    )
    data = df.select(F.col(score).cast("double").alias("__segae_score"), F.col(label).cast("double").alias("__segae_label"))
    return float(evaluator.evaluate(data))


def evaluate(
    scored: DataFrame,
    label_col: str,
    score_col: str = "anomaly_score",
    prediction_col: str = "is_anomaly",
    segment_col: str = "segment",
    threshold_col: str = "threshold",
) -> dict:
    """Global and per-segment metrics: ``{"global": {...}, "segments": [...]}``.

    ``global`` holds roc_auc, pr_auc, precision, recall, f1, accuracy and rows,
    the keys SegmentAE users know from ``evaluation()``.
    """
    missing = [c for c in (label_col, score_col, prediction_col, segment_col, threshold_col) if c not in scored.columns]
    if missing:
        raise SchemaError(f"scored table lacks column(s) {missing}; columns: {scored.columns}")
    labelled = scored.filter(F.col(label_col).isNotNull())
    labels = [int(r[0]) for r in labelled.select(F.col(label_col).cast("int")).distinct().collect()]  # small: <= 2 values
    if not set(labels) <= {0, 1}:
        raise SchemaError(f"label column {label_col!r} must hold 0/1, found values {sorted(labels)[:10]}")
    total = labelled.agg(*_counts(label_col, prediction_col)).first()
    both_classes = set(labels) == {0, 1}
    global_metrics = {
        "rows": int(total["rows"]),
        "roc_auc": _area(labelled, label_col, score_col, "areaUnderROC") if both_classes else None,
        "pr_auc": _area(labelled, label_col, score_col, "areaUnderPR") if both_classes else None,
        **_confusion_metrics(*(int(total[k] or 0) for k in ("tp", "fp", "fn", "tn"))),
    }
    per_segment = (
        labelled.groupBy(segment_col)
        .agg(
            *_counts(label_col, prediction_col),
            F.first(threshold_col).alias("threshold"),
            F.avg(score_col).alias("mean_score"),
            F.sum(F.col(label_col).cast("long")).alias("positives"),
        )
        .orderBy(segment_col)
        .collect()  # small: one row per segment
    )
    segments = [
        {
            "segment": int(r[segment_col]),
            "rows": int(r["rows"]),
            "positives": int(r["positives"] or 0),
            "threshold": float(r["threshold"]),
            "mean_score": float(r["mean_score"]),
            **_confusion_metrics(*(int(r[k] or 0) for k in ("tp", "fp", "fn", "tn"))),
        }
        for r in per_segment
    ]
    return {"global": global_metrics, "segments": segments}
