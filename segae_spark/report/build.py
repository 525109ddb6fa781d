"""The HTML report of a model on a table: score once, aggregate in Spark, draw, assemble.

The scored selection (segment, score, threshold, flag, label, top features)
is cached once and read by four aggregations (with a label, evaluate()'s
own too); only their small
results reach the driver, so the report costs the same driver memory for a
thousand rows as for a billion.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from pyspark.sql import DataFrame

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.evaluation import evaluate
from segae_spark.progress import logger, stage
from segae_spark.report import aggregates as agg
from segae_spark.report.page import Page

HIST_BINS = 40


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote: the file, what it covers, and its images by kind."""

    path: str
    rows: int
    segments: int
    flagged: int
    images: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def render(self) -> str:
        return (
            f"report written to {self.path}: {self.rows:,} rows, {self.segments} segments, {self.flagged:,} flagged, "
            f"{sum(self.images.values())} figures ({self.seconds:.1f}s)"
        )


def _check_label(df: DataFrame, label_col: str | None, input_name: str) -> None:
    if label_col and label_col not in df.columns:
        raise SchemaError(f"label column {label_col!r} is not a column of the input {input_name}; columns: {df.columns}")


def _check_out(out: str) -> str:
    """The absolute output path, its directory created; refused when it is a directory (before any Spark job)."""
    path = os.path.abspath(out)
    if os.path.isdir(path):
        raise ConfigError(f"report output {out!r} is a directory; give an HTML file path such as report.html")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def write_report(
    model, df: DataFrame, out: str, label_col: str | None = None, input_name: str | None = None, top_features: int = 3
) -> Report:
    """Score ``df`` with ``model`` (a ``SegmentAEModel``) once and write the HTML report to ``out``.

    With ``label_col`` (0/1) the report holds ROC / PR curves and the metrics
    of :func:`segae_spark.evaluation.evaluate`; without it, flagged rows are
    compared with the others. ``top_features`` features per row are counted
    among flagged rows, whatever the model's own ``topFeatures``.
    """
    input_name = input_name or "(DataFrame)"
    _check_label(df, label_col, input_name)
    if isinstance(top_features, bool) or not isinstance(top_features, int) or top_features < 1:
        raise ConfigError(f"top_features must be an integer >= 1, got {top_features!r}")
    _check_out(out)
    # Only the label travels with the scores (the report needs no other input column).
    keep = [label_col] if label_col else df.columns[:1]
    scoring = model.copy({model.topFeatures: top_features, model.passthroughCols: keep, model.modelIdCol: "", model.scoredAtCol: ""})
    return write_scored_report(scoring.transform(df), scoring, out, label_col, input_name)


def write_scored_report(
    scored: DataFrame,
    model,
    out: str,
    label_col: str | None = None,
    input_name: str | None = None,
    metrics: dict | None = None,
) -> Report:
    """The report of a table ``model`` already scored (e.g. a scored Delta table), written to ``out``.

    ``metrics`` may be ``evaluate(scored, label_col)``'s result when the
    caller has it already; it is computed otherwise.
    """
    start = time.perf_counter()
    input_name = input_name or "(DataFrame)"
    get = model.getOrDefault
    names = [get(p) for p in (model.segmentCol, model.scoreCol, model.thresholdCol, model.predictionCol)]
    missing = [c for c in names if c not in scored.columns]
    if missing:
        raise SchemaError(f"the scored table {input_name} lacks column(s) {missing}; columns: {scored.columns}")
    _check_label(scored, label_col, input_name)
    path = _check_out(out)
    top = get(model.topFeaturesCol) if get(model.topFeaturesCol) in scored.columns else None

    data = agg.selection(scored, *names, label_col, top).cache()
    try:
        with stage("report: aggregates"):
            if label_col and metrics is None:
                metrics = evaluate(data, label_col, agg.SCORE, agg.FLAG, agg.SEGMENT, agg.THRESHOLD)
            cells = agg.distributions(data, label_col)
            if (None, None) not in cells:
                raise SchemaError(f"the input {input_name} has no rows: nothing to report")
            present = sorted(k[0] for k in cells if k[0] is not None and k[1] is None)
            edges = {s: agg.log_edges(cells[(s, None)], HIST_BINS) for s in present}
            hists, ranking = agg.score_bins(data, edges, label_col, cells[(None, None)].quantiles)
            features = agg.top_features(data) if top else []
    finally:
        data.unpersist()
    total = cells[(None, None)]
    logger.info("report: %d rows in %d segments, %d flagged", total.rows, len(present), total.flagged)

    with stage("report: figures"):
        page = Page(model, cells, label_col, names[1], metrics)
        text = page.render(input_name, hists, ranking, features, top is not None)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)  # a reader never sees half a report
    report = Report(path, total.rows, len(present), total.flagged, dict(page.images), time.perf_counter() - start)
    logger.info("report: %s (%.0f KB)", report.render(), len(text) / 1024)
    return report
