"""Metrics of a scored table against a 0/1 label, computed in Spark.

Only aggregates reach the driver: one row of confusion counts overall, one
per segment, and the areas under the ROC and PR curves, overall from Spark's
BinaryClassificationMetrics and per segment from one window pass that draws
the same curves (exact: no down-sampling of the curve).
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import Window
from pyspark.sql import functions as F

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.progress import logger

_RANK = "__segae_rank"


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


RANK_BY = ("score", "score_ratio")


def _rank(score: str, threshold: str, rank_by: str):
    """The column metrics rank rows by: the raw score or the score ratio (score / threshold).

    Per-segment autoencoders give errors on per-segment scales, and the flag
    compares each row with its own segment's threshold; ``score_ratio`` (the
    scoring output's column, recomputed here so tables scored without it
    evaluate the same) is the ranking that flag implies. Neither wins
    everywhere (measured: the ratio raised per-segment ROC-AUC on 7 of 11
    public datasets with 0.99-quantile thresholds, and lowered PR-AUC on the
    synthetic transactions with mean-ratio thresholds), so the default stays
    SegmentAE's raw score.
    """
    if rank_by == "score":
        return F.col(score).cast("double")
    s, t = F.col(score).cast("double"), F.col(threshold).cast("double")
    return F.when(t > 0, s / t).when(s > 0, F.lit(float("inf"))).otherwise(F.lit(0.0))


def _global_areas(df: DataFrame, label: str) -> tuple[float, float]:
    """Spark's exact (``numBins=0``) areas under the ROC and PR curves of ``_RANK``."""
    data = df.select(F.col(_RANK).alias("__segae_score"), F.col(label).cast("double").alias("__segae_label"))
    areas = []
    for metric in ("areaUnderROC", "areaUnderPR"):
        evaluator = BinaryClassificationEvaluator(
            rawPredictionCol="__segae_score", labelCol="__segae_label", metricName=metric, numBins=0
        )
        areas.append(float(evaluator.evaluate(data)))
    return areas[0], areas[1]


def _segment_areas(df: DataFrame, label: str, segment: str) -> dict[int, tuple[float | None, float | None]]:
    """Exact ROC-AUC and PR-AUC of ``_RANK`` within each segment, in one window pass.

    The curves are Spark's (``BinaryClassificationMetrics`` with
    ``numBins=0``): one point per distinct score, trapezoids between points,
    the PR curve starting at (0, first precision); ties count half in ROC-AUC.
    Rows are grouped by (segment, score) first, then each segment's groups are
    sorted by descending score (one sort of the labelled rows, partitioned by
    segment). A segment with one class only has no areas (``None``).
    """
    y = F.col(label).cast("long")
    grouped = df.groupBy(segment, _RANK).agg(F.sum(y).alias("pos"), F.sum(F.lit(1) - y).alias("neg"))
    upto = Window.partitionBy(segment).orderBy(F.col(_RANK).desc()).rowsBetween(Window.unboundedPreceding, 0)
    whole = Window.partitionBy(segment)
    tp, fp = F.sum("pos").over(upto), F.sum("neg").over(upto)
    points = grouped.select(
        segment, "pos", "neg", tp.alias("tp"), fp.alias("fp"),
        F.sum("pos").over(whole).alias("p"), F.sum("neg").over(whole).alias("n"),
    )  # fmt: skip
    precision = F.col("tp") / (F.col("tp") + F.col("fp"))
    before = F.col("tp") - F.col("pos") + F.col("fp") - F.col("neg")
    precision_before = F.when(before > 0, (F.col("tp") - F.col("pos")) / before).otherwise(precision)
    rows = (
        points.groupBy(segment)
        .agg(
            F.first("p").alias("p"),
            F.first("n").alias("n"),
            F.sum(F.col("neg") * (F.col("tp") - F.col("pos") / 2)).alias("roc_sum"),
            F.sum(F.col("pos") * (precision + precision_before) / 2).alias("pr_sum"),
        )
        .collect()  # small: one row per segment
    )
    areas = {}
    for r in rows:
        p, n = int(r["p"]), int(r["n"])
        both = p > 0 and n > 0
        areas[int(r[segment])] = (float(r["roc_sum"]) / (p * n) if both else None, float(r["pr_sum"]) / p if both else None)
    return areas


def evaluate(
    scored: DataFrame,
    label_col: str,
    score_col: str = "anomaly_score",
    prediction_col: str = "is_anomaly",
    segment_col: str = "segment",
    threshold_col: str = "threshold",
    rank_by: str = "score",
) -> dict:
    """Global and per-segment metrics: ``{"global": {...}, "segments": [...]}``.

    ``global`` holds roc_auc, pr_auc, precision, recall, f1, accuracy and rows,
    the keys SegmentAE users know from ``evaluation()``; each segment holds the
    same plus its threshold, mean score and positives. Precision, recall, F1
    and the confusion counts are of the flag (``prediction_col``); ROC-AUC and
    PR-AUC rank rows by ``rank_by``: the raw ``score`` (the default, as
    SegmentAE) or the ``score_ratio`` = score / threshold (see :func:`_rank`).
    Areas are ``None`` where the rows hold one class only (for the whole
    table, a warning naming the label column is logged too); a table without
    one labelled row is a SchemaError.
    """
    if rank_by not in RANK_BY:
        raise ConfigError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
    missing = [c for c in (label_col, score_col, prediction_col, segment_col, threshold_col) if c not in scored.columns]
    if missing:
        raise SchemaError(f"scored table lacks column(s) {missing}; columns: {scored.columns}")
    # Six aggregations read these rows: cache the narrow selection so the
    # scored table (often an uncached transform that reruns the autoencoders)
    # is computed once, not six times. MEMORY_AND_DISK: six numbers a row spill
    # rather than fail on a table larger than the executors' memory.
    labelled = (
        scored.filter(F.col(label_col).isNotNull())
        .select(
            label_col, score_col, prediction_col, segment_col, threshold_col,
            _rank(score_col, threshold_col, rank_by).alias(_RANK),
        )  # fmt: skip
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        return _metrics(labelled, label_col, score_col, prediction_col, segment_col, threshold_col, rank_by)
    finally:
        labelled.unpersist()


def _metrics(
    labelled: DataFrame, label_col: str, score_col: str, prediction_col: str, segment_col: str, threshold_col: str, rank_by: str
) -> dict:
    """:func:`evaluate`'s metrics from the labelled rows' selection (see there)."""
    labels = [int(r[0]) for r in labelled.select(F.col(label_col).cast("int")).distinct().collect()]  # small: <= 2 values
    if not set(labels) <= {0, 1}:
        raise SchemaError(f"label column {label_col!r} must hold 0/1, found values {sorted(labels)[:10]}")
    if not labels:
        raise SchemaError(f"label column {label_col!r} has no labelled rows (the table is empty or the label is always null)")
    if len(labels) == 1:
        # Not an error: a quiet day's confusion counts still say how many rows were flagged.
        logger.warning(
            "label column %r holds one class only (every labelled row is %d): ROC-AUC and PR-AUC are undefined "
            "and reported as null",
            label_col, labels[0],
        )  # fmt: skip
    total = labelled.agg(*_counts(label_col, prediction_col)).first()
    roc_auc, pr_auc = _global_areas(labelled, label_col) if set(labels) == {0, 1} else (None, None)
    global_metrics = {
        "rows": int(total["rows"]),
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        **_confusion_metrics(*(int(total[k] or 0) for k in ("tp", "fp", "fn", "tn"))),
    }
    areas = _segment_areas(labelled, label_col, segment_col)
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
    segments = []
    for r in per_segment:
        segment_roc, segment_pr = areas.get(int(r[segment_col]), (None, None))
        segments.append(
            {
                "segment": int(r[segment_col]),
                "rows": int(r["rows"]),
                "positives": int(r["positives"] or 0),
                "threshold": float(r["threshold"]),
                "mean_score": float(r["mean_score"]),
                "roc_auc": segment_roc,
                "pr_auc": segment_pr,
                **_confusion_metrics(*(int(r[k] or 0) for k in ("tp", "fp", "fn", "tn"))),
            }
        )
    return {"global": global_metrics, "rank_by": rank_by, "segments": segments}


def threshold_sweep(
    scored: DataFrame,
    label_col: str,
    thresholds: list[dict[int, float]],
    score_col: str = "anomaly_score",
    segment_col: str = "segment",
    threshold_col: str = "threshold",
    rank_by: str = "score",
) -> tuple[float | None, float | None, list[dict]]:
    """ROC-AUC, PR-AUC and the flag's metrics under each of several per-segment threshold sets.

    What a grid over threshold ratios needs from one scored table: the areas
    do not depend on the thresholds (a ratio scales every threshold of a
    model alike, so even the ``score_ratio`` ranking is unchanged) and are
    computed once; the confusion counts of every threshold set come from one
    aggregation that flags each row as scoring does (``score > threshold``).
    ``thresholds`` holds one ``{segment: threshold}`` per set; the result
    lists each set's metrics in the same order.
    """
    if rank_by not in RANK_BY:
        raise ConfigError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
    labelled = scored.filter(F.col(label_col).isNotNull())
    y = F.col(label_col).cast("int") == 1
    score = F.col(score_col).cast("double")
    sums = [F.count(F.lit(1)).alias("rows"), F.sum(y.cast("long")).alias("p")]
    for i, by_segment in enumerate(thresholds):
        threshold = F.create_map(*[F.lit(x) for seg, t in sorted(by_segment.items()) for x in (int(seg), float(t))])
        flag = score > threshold[F.col(segment_col)]
        sums += [F.sum((flag & y).cast("long")).alias(f"tp{i}"), F.sum((flag & ~y).cast("long")).alias(f"fp{i}")]
    total = labelled.agg(*sums).first()  # small: one row
    rows, positives = int(total["rows"]), int(total["p"] or 0)
    if rows == 0:
        raise SchemaError(f"label column {label_col!r} has no labelled rows (the table is empty or the label is always null)")
    areas = (None, None)
    if 0 < positives < rows:
        ranked = labelled.select(label_col, _rank(score_col, threshold_col, rank_by).alias(_RANK))
        areas = _global_areas(ranked, label_col)
    metrics = []
    for i in range(len(thresholds)):
        tp, fp = int(total[f"tp{i}"] or 0), int(total[f"fp{i}"] or 0)
        metrics.append({"rows": rows, **_confusion_metrics(tp, fp, positives - tp, rows - positives - fp)})
    return areas[0], areas[1], metrics
