"""The Spark aggregates behind the report: only groups x bins rows reach the driver.

The report reads one cached selection of the scored table (:func:`selection`)
three times: percentiles per (segment, group) in one ``cube``; histogram
counts per (segment, log-spaced bin) together with label counts per
(segment, quantile bin) for the ROC and PR curves; and the top features of
flagged rows. A
"group" is the label (0 normal, 1 anomalous) when there is one, else the flag.
However large the table, each result is bounded by the number of segments,
bins and model features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyspark.ml.feature import Bucketizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

# The selection's columns; the label keeps its own name, so errors about it name the user's column.
SEGMENT, SCORE, THRESHOLD, FLAG, TOP = "__report_segment", "__report_score", "__report_threshold", "__report_flag", "__report_top"
_GROUP, _BIN, _RANK = "__report_group", "__report_bin", "__report_rank"

# Percentiles 0, 0.5, ..., 100 of every group: box-plot stats, and the global
# ones are the edges of the ROC / PR bins (about 200 bins of equal row counts).
GRID = tuple(i / 200 for i in range(201))
# Box whiskers at the 1st / 99th percentiles: reconstruction errors are heavy
# tailed, and 1.5 x IQR whiskers would need a second pass over the rows.
_BOX = {"whislo": 2, "q1": 50, "med": 100, "q3": 150, "whishi": 198}
# percentile_approx's accuracy: ranks within 0.1 % of a group's rows, finer
# than a bin (0.5 %), and about twice as fast as Spark's default 10000.
ACCURACY = 1000


def _col(name: str):
    return F.col(f"`{name}`")  # names may hold dots


def selection(
    scored: DataFrame, segment: str, score: str, threshold: str, flag: str, label: str | None, top: str | None
) -> DataFrame:
    """The scored table's columns the report reads, under fixed names (cache it: it is read several times)."""
    columns = [
        _col(segment).cast("int").alias(SEGMENT),
        _col(score).cast("double").alias(SCORE),
        _col(threshold).cast("double").alias(THRESHOLD),
        _col(flag).cast("int").alias(FLAG),
    ]
    if label:
        columns.append(_col(label).alias(label))
    if top:
        columns.append(_col(top).alias(TOP))
    return scored.select(*columns)


@dataclass(frozen=True)
class Distribution:
    """Rows, flags and score percentiles (:data:`GRID`) of one (segment, group) cell, or a margin of them."""

    rows: int
    flagged: int
    mean: float | None
    quantiles: tuple[float, ...]
    min_positive: float | None
    max: float | None
    threshold: float | None

    def box(self, label: str) -> dict:
        """Stats for matplotlib's ``Axes.bxp``."""
        return {"label": label, "mean": self.mean, "fliers": [], **{k: self.quantiles[i] for k, i in _BOX.items()}}


def distributions(data: DataFrame, label: str | None) -> dict[tuple[int | None, int | None], Distribution]:
    """Per (segment, group), per segment, per group and overall (``None`` = all), from one ``cube``.

    Unlabelled rows count in the per-segment and overall cells, not in a group.
    """
    group = _col(label).cast("int") if label else F.col(FLAG)
    rows = (
        data.withColumn(_GROUP, group)
        .cube(SEGMENT, _GROUP)
        .agg(
            F.grouping_id().alias("gid"),
            F.count(F.lit(1)).alias("rows"),
            F.sum(FLAG).alias("flagged"),
            F.avg(SCORE).alias("mean"),
            F.percentile_approx(SCORE, list(GRID), ACCURACY).alias("q"),
            F.min(F.when(F.col(SCORE) > 0, F.col(SCORE))).alias("min_positive"),
            F.max(SCORE).alias("max"),
            F.max(THRESHOLD).alias("threshold"),
        )
        .collect()  # small: (segments + 1) x (groups + 1) rows
    )
    cells = {}
    for r in rows:
        by_segment, by_group = not r["gid"] & 2, not r["gid"] & 1
        if by_group and r[_GROUP] is None:
            continue  # unlabelled rows: no group of their own
        key = (r[SEGMENT] if by_segment else None, r[_GROUP] if by_group else None)
        cells[key] = Distribution(
            rows=int(r["rows"]),
            flagged=int(r["flagged"] or 0),
            mean=r["mean"],
            quantiles=tuple(float(q) for q in r["q"]) if r["q"] else (),
            min_positive=r["min_positive"],
            max=r["max"],
            threshold=r["threshold"],
        )
    return cells


def log_edges(cell: Distribution, bins: int) -> np.ndarray:
    """``bins`` log-spaced edges from the segment's smallest positive score to its largest, threshold included."""
    points = [v for v in (cell.min_positive, cell.max, cell.threshold) if v is not None and v > 0]
    lo, hi = (math.log10(min(points)), math.log10(max(points))) if points else (0.0, 0.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    return np.logspace(lo, hi, bins + 1)


@dataclass(frozen=True)
class Histogram:
    edges: np.ndarray
    rows: np.ndarray
    positives: np.ndarray | None  # label 1 rows per bin, when there is a label


def score_bins(
    data: DataFrame, edges: dict[int, np.ndarray], label: str | None, quantiles: tuple[float, ...]
) -> tuple[dict[int, Histogram], tuple[dict[int, tuple[np.ndarray, np.ndarray]], int] | None]:
    """Histogram counts per log-spaced bin of each segment, and label counts per bin cut at the global ``quantiles``.

    The histograms hold rows (and label-1 rows) per bin of ``edges`` (scores
    below the first edge, zeros included, go to the first bin). With a label,
    the ranking holds ``{segment: (label 1 rows, label 0 rows)}`` per
    quantile bin (ascending score) and the number of those bins, from which
    the ROC and PR curves are cumulated; the overall curve is the sum over
    segments. Both bins grow with the score, so a segment's rows fall in at
    most (log bins + quantile bins) pairs of them: one aggregation serves both.
    """
    lows = F.create_map(*[v for seg, e in edges.items() for v in (F.lit(seg), F.lit(math.log10(e[0])))])
    highs = F.create_map(*[v for seg, e in edges.items() for v in (F.lit(seg), F.lit(math.log10(e[-1])))])
    n = len(next(iter(edges.values()))) - 1  # every segment has as many bins
    lo, hi = lows[F.col(SEGMENT)], highs[F.col(SEGMENT)]
    x = F.log10(F.greatest(F.col(SCORE), F.pow(F.lit(10.0), lo)))
    grouping = [SEGMENT, F.least(F.greatest(F.floor((x - lo) / (hi - lo) * n), F.lit(0)), F.lit(n - 1)).cast("int").alias(_BIN)]
    sums = [F.count(F.lit(1)).alias("rows")]
    frame = data.filter(F.col(SEGMENT).isin(list(edges)))
    if label:
        inner = sorted(set(quantiles[1:-1])) or [0.0]  # Bucketizer needs one inner split
        splits = [-math.inf, *inner, math.inf]
        # len(splits) - 1 bins, plus one for NaN ("keep": ranked highest, as Spark sorts NaN).
        frame = Bucketizer(splits=splits, inputCol=SCORE, outputCol=_RANK, handleInvalid="keep").transform(frame)
        grouping.append(F.col(_RANK).cast("int").alias(_RANK))
        y = _col(label).cast("int")
        sums += [F.sum((y == 1).cast("long")).alias("pos"), F.sum((y == 0).cast("long")).alias("neg")]
    rows = frame.groupBy(*grouping).agg(*sums).collect()  # small: segments x (40 + ~200) bin pairs
    hists = {seg: Histogram(e, np.zeros(n), np.zeros(n) if label else None) for seg, e in edges.items()}
    ranked: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for r in rows:
        h = hists[r[SEGMENT]]
        h.rows[r[_BIN]] += r["rows"]
        if label:
            h.positives[r[_BIN]] += r["pos"]
            pos, neg = ranked.setdefault(r[SEGMENT], (np.zeros(len(splits)), np.zeros(len(splits))))
            pos[r[_RANK]] += r["pos"]
            neg[r[_RANK]] += r["neg"]
    return hists, ((ranked, len(splits)) if label else None)


@dataclass(frozen=True)
class Curve:
    """ROC and PR points of a ranking by score, from binned label counts (highest bin first)."""

    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray

    @classmethod
    def of(cls, positives: np.ndarray, negatives: np.ndarray) -> "Curve | None":
        """The curve of per-bin counts (bins in ascending score order); ``None`` without both classes."""
        tp, fp = np.cumsum(positives[::-1]), np.cumsum(negatives[::-1])
        if not tp.size or tp[-1] == 0 or fp[-1] == 0:
            return None
        seen = tp + fp > 0  # empty leading bins have no precision
        tp, fp = tp[seen], fp[seen]
        recall = tp / tp[-1]
        return cls(np.r_[0.0, fp / fp[-1]], np.r_[0.0, recall], np.r_[0.0, recall], np.r_[tp[0] / (tp[0] + fp[0]), tp / (tp + fp)])


@dataclass(frozen=True)
class FeatureCount:
    segment: int
    feature: str
    rows: int  # flagged rows with the feature among their top features
    first: int  # flagged rows whose largest share of error is this feature's
    share_sum: float


def top_features(data: DataFrame) -> list[FeatureCount]:
    """How often each feature is among a flagged row's top features, per segment."""
    exploded = data.filter(F.col(FLAG) == 1).select(SEGMENT, F.posexplode(TOP).alias("rank", "item"))
    rows = (
        exploded.groupBy(SEGMENT, F.col("item.feature").alias("feature"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum((F.col("rank") == 0).cast("long")).alias("first"),
            F.sum("item.share").alias("share_sum"),
        )
        .collect()  # small: at most segments x model features
    )
    return [FeatureCount(int(r[SEGMENT]), r["feature"], int(r["rows"]), int(r["first"]), float(r["share_sum"])) for r in rows]
