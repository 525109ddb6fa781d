"""The end-to-end demo on the embedded synthetic transactions.

Generate a Delta table of card transactions, train on the normal rows of the
first two thirds of the period (the past), score the whole table (a backfill)
into a second Delta table, and evaluate on the last third (the future the
model never saw). Metrics go to a third Delta table and to JSON, and the
test period's plots and tables to ``report.html``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from segae_spark.config import to_params, validate_config
from segae_spark.data import generate_transactions
from segae_spark.evaluation import evaluate
from segae_spark.io import read_table, write_table
from segae_spark.pipeline import SegmentAE
from segae_spark.progress import stage
from segae_spark.report import write_scored_report

START_DATE = "2024-01-01"
DAYS = 90
DEMO_CONFIG = {
    "label_col": "is_fraud",
    "preprocessing": {"scaler": "standard"},
    "clustering": {"model": "kmeans", "n_clusters": 4},
    "autoencoder": {"hidden_layers": [32, 16, 8], "epochs": 30, "batch_size": 256},
    "training": {"max_rows_per_segment": 15000, "min_rows_per_segment": 200},
    "threshold": {"metric": "mse", "ratio": 6.0},
}


@dataclass
class DemoSummary:
    rows: int
    scored_rows: int
    paths: dict[str, str]
    train_rows: int
    cutoff: str
    model_id: str
    segments: list[dict]
    metrics: dict
    scored_version: int | None
    timings: dict[str, float] = field(default_factory=dict)

    def render(self) -> str:
        g = self.metrics["global"]
        test_by_segment = {s["segment"]: s for s in self.metrics["segments"]}
        lines = [
            f"segae-spark demo: {self.rows:,} synthetic transactions ({START_DATE} + {DAYS} days)",
            f"  rows in / out      {self.rows:,} / {self.scored_rows:,}",
            f"  training           {self.train_rows:,} normal rows before {self.cutoff}; model {self.model_id}",
            f"  {'segment':>7}  {'train rows':>10}  {'threshold':>10}  {'test rows':>9}  {'frauds':>6}  {'flagged':>7}  {'precision':>9}  {'recall':>6}",
        ]
        for seg in self.segments:
            t = test_by_segment.get(seg["segment"], {"rows": 0, "positives": 0, "tp": 0, "fp": 0, "precision": 0.0, "recall": 0.0})
            lines.append(
                f"  {seg['segment']:>7}  {seg['rows']:>10,}  {seg['threshold']:>10.5f}  {t['rows']:>9,}  "
                f"{t['positives']:>6,}  {t['tp'] + t['fp']:>7,}  {t['precision']:>9.3f}  {t['recall']:>6.3f}"
            )
        lines += [
            f"  test period        {self.cutoff} onwards: {g['rows']:,} rows, {g['tp'] + g['fn']:,} frauds",
            f"  metrics            ROC-AUC {g['roc_auc']:.4f}  PR-AUC {g['pr_auc']:.4f}  precision {g['precision']:.3f}"
            f"  recall {g['recall']:.3f}  F1 {g['f1']:.3f}  accuracy {g['accuracy']:.4f}",
            "  seconds            " + "  ".join(f"{k} {v:.1f}" for k, v in self.timings.items()),
            f"  scored table       {self.paths['scored']} (Delta version {self.scored_version}, {self.scored_rows:,} rows)",
            f"  metrics            {self.paths['metrics']} (Delta) and {self.paths['metrics_json']}",
            f"  model              {self.paths['model']}",
            f"  report             {self.paths['report']}",
        ]
        return "\n".join(lines)


def _metrics_rows(metrics: dict, model_id: str) -> list[tuple]:
    def row(scope, segment, m):
        return (scope, segment, m["rows"], m.get("roc_auc"), m.get("pr_auc"), m["precision"], m["recall"], m["f1"], m["accuracy"], m["tp"], m["fp"], m["fn"], m["tn"], model_id)

    return [row("global", None, metrics["global"])] + [row("segment", s["segment"], s) for s in metrics["segments"]]


METRICS_SCHEMA = (
    "scope string, segment int, rows long, roc_auc double, pr_auc double, precision double, recall double, "
    "f1 double, accuracy double, tp long, fp long, fn long, tn long, model_id string"
)


def run_demo(
    spark: SparkSession,
    rows: int = 200_000,
    workdir: str = "demo_output",
    seed: int = 42,
    threshold_ratio: float | None = None,
    config: dict | None = None,
) -> DemoSummary:
    """Run the whole demo under ``workdir`` and return what it measured."""
    config = validate_config(config or DEMO_CONFIG)
    params = {**to_params(config), "seed": seed}
    if threshold_ratio is not None:
        params["thresholdRatio"] = threshold_ratio
    workdir = os.path.abspath(workdir)
    paths = {
        "transactions": os.path.join(workdir, "transactions"),
        "model": os.path.join(workdir, "model"),
        "scored": os.path.join(workdir, "scored"),
        "metrics": os.path.join(workdir, "metrics"),
        "metrics_json": os.path.join(workdir, "metrics.json"),
        "report": os.path.join(workdir, "report.html"),
    }
    cutoff = (dt.date.fromisoformat(START_DATE) + dt.timedelta(days=DAYS * 2 // 3)).isoformat()
    timings: dict[str, float] = {}
    total_start = time.perf_counter()

    with stage("generate", timings):
        generated = generate_transactions(spark, rows, seed=seed, start_date=START_DATE, days=DAYS)
        write_table(generated, paths["transactions"], mode="overwrite", partition_by=["event_date"])
    transactions = read_table(spark, paths["transactions"])
    with stage("train", timings):
        model = SegmentAE(**params).fit(transactions.filter(F.col("event_date") < F.lit(cutoff)))
        model.write().overwrite().save(paths["model"])
    with stage("score", timings):
        written = write_table(
            model.arrow_transform(transactions),
            paths["scored"],
            mode="overwrite",
            partition_by=["event_date"],
            commit_metadata={"segae_spark.model_id": model.model_id},
        )
    with stage("evaluate", timings):
        scored = read_table(spark, paths["scored"])
        metrics = evaluate(scored.filter(F.col("event_date") >= F.lit(cutoff)), "is_fraud")
        write_table(
            spark.createDataFrame(_metrics_rows(metrics, model.model_id), METRICS_SCHEMA),
            paths["metrics"],
            mode="overwrite",
        )
        with open(paths["metrics_json"], "w", encoding="utf-8") as fh:
            json.dump(metrics, fh, indent=2)
        scored_rows = scored.count()
    with stage("report", timings):
        write_scored_report(
            scored.filter(F.col("event_date") >= F.lit(cutoff)), model, paths["report"], label_col="is_fraud",
            input_name=f"{paths['scored']}, event_date >= {cutoff} (the test period)", metrics=metrics,
        )  # fmt: skip
    timings["total"] = round(time.perf_counter() - total_start, 3)
    return DemoSummary(
        rows=rows,
        scored_rows=scored_rows,
        paths=paths,
        train_rows=int(model.artifact.training["rows"]),
        cutoff=cutoff,
        model_id=model.model_id,
        segments=model.segment_summary(),
        metrics=metrics,
        scored_version=written.version,
        timings=timings,
    )
