# Databricks notebook source
# MAGIC %md
# MAGIC # segae-spark quickstart
# MAGIC Segment-wise autoencoder anomaly detection (the SegmentAE method) on a table of transactions:
# MAGIC train, save and reload the model, score the table into a Delta table, evaluate, plot.
# MAGIC
# MAGIC * **On Databricks**: install the library on the cluster (`%pip install segae-spark`), set the widgets at the
# MAGIC   top of the notebook and run all cells. The active session (with native Delta) is reused as it is.
# MAGIC   `base_path` must be a path that Spark and Python see alike: a Unity Catalog volume (`/Volumes/...`).
# MAGIC * **Anywhere else** (plain Python, `tests/test_notebook.py`): the cells run as they are, with the widget
# MAGIC   defaults (or a `NOTEBOOK_PARAMS` dict defined before the first cell), a local Spark session, and the plots
# MAGIC   saved as PNG files under `base_path/plots`.
# MAGIC
# MAGIC Nothing large reaches the driver: every table and plot below is built from Spark aggregates or a bounded
# MAGIC `limit` (lines marked `# small:`).

# COMMAND ----------

# MAGIC %md
# MAGIC ## Setup
# MAGIC Databricks injects `dbutils` and `display` into the notebook; elsewhere they are absent, and the helpers below
# MAGIC fall back to the widget defaults, printed tables and PNG files.

# COMMAND ----------

import json
import os
import tempfile

import matplotlib
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

DBUTILS = globals().get("dbutils")  # Databricks builtin, absent elsewhere
DISPLAY = globals().get("display")  # Databricks builtin, absent elsewhere
ON_DATABRICKS = DBUTILS is not None
if DISPLAY is None:
    matplotlib.use("Agg")  # no display: draw into files
import matplotlib.pyplot as plt  # noqa: E402 (after the backend choice)

from segae_spark import (  # noqa: E402
    SegmentAE,
    SegmentAEModel,
    evaluate,
    generate_transactions,
    get_or_create_session,
    read_table,
    write_table,
)

spark = get_or_create_session()  # the active session on Databricks (and under a test), else a local one
NOTEBOOK_PARAMS = dict(globals().get("NOTEBOOK_PARAMS") or {})  # overrides, e.g. from a test
FIGURES = {}  # name -> matplotlib Figure, every plot of this notebook


def widget(name, default, label=None):
    """A text widget's value on Databricks (created with ``default``), else ``NOTEBOOK_PARAMS`` or ``default``."""
    if name in NOTEBOOK_PARAMS:
        return str(NOTEBOOK_PARAMS[name])
    if DBUTILS is not None:
        DBUTILS.widgets.text(name, str(default), label or name)
        return DBUTILS.widgets.get(name)
    return str(default)


def show(obj, rows=20):
    """``display`` on Databricks; elsewhere print the table (a Spark DataFrame: its first ``rows`` rows)."""
    if DISPLAY is not None:
        DISPLAY(obj)
    elif isinstance(obj, DataFrame):
        print(obj.limit(rows).toPandas().to_string())  # small: at most `rows` rows
    elif isinstance(obj, pd.DataFrame):
        print(obj.to_string())
    else:
        print(obj)


def show_figure(fig, name):
    """Keep ``fig`` in ``FIGURES``; ``display`` it on Databricks, save it as ``plots/<name>.png`` under a local base path."""
    FIGURES[name] = fig
    if DISPLAY is not None:
        DISPLAY(fig)
    if ":" not in BASE_PATH.split("/")[0]:  # a local or FUSE path (/Volumes/...), not dbfs:/, s3://, ...
        os.makedirs(f"{BASE_PATH}/plots", exist_ok=True)
        fig.savefig(f"{BASE_PATH}/plots/{name}.png", dpi=90, bbox_inches="tight")
    if DISPLAY is None:
        plt.close(fig)


# COMMAND ----------

# MAGIC %md
# MAGIC ## Parameters
# MAGIC | widget | meaning |
# MAGIC |---|---|
# MAGIC | `input_table` | a Delta / Parquet / CSV path or a catalog table name; empty: generate synthetic transactions |
# MAGIC | `base_path` | where the generated table, the model, the scored table, the metrics and the plots go |
# MAGIC | `rows` | synthetic rows to generate when `input_table` is empty |
# MAGIC | `label_col` | the 0/1 label (only its 0 rows train; the metrics need it); empty: no label |
# MAGIC | `date_col`, `test_from` | rows with `date_col >= test_from` are held out of training and evaluated; the scored table is partitioned by `date_col` |
# MAGIC | `n_clusters`, `epochs`, `threshold_ratio`, `seed` | segments, autoencoder epochs, threshold = mean training error of the segment x ratio, seed |
# MAGIC | `compare_ratios` | other threshold ratios to evaluate without retraining |
# MAGIC | `extra_params` | JSON object of any other `SegmentAE` params, e.g. `{"trainingBackend": "local", "clusterModel": "bisecting_kmeans"}` |

# COMMAND ----------

INPUT_TABLE = widget("input_table", "").strip()
BASE_PATH = widget(
    "base_path",
    "/Volumes/main/default/segae/quickstart" if ON_DATABRICKS else os.path.join(tempfile.gettempdir(), "segae_quickstart"),
).rstrip("/")
ROWS = int(widget("rows", 200_000 if ON_DATABRICKS else 30_000))
LABEL_COL = widget("label_col", "is_fraud").strip()
DATE_COL = widget("date_col", "event_date").strip()
TEST_FROM = widget("test_from", "2024-03-01").strip()
N_CLUSTERS = int(widget("n_clusters", 4))
EPOCHS = int(widget("epochs", 30))
THRESHOLD_RATIO = float(widget("threshold_ratio", 6.0))
SEED = int(widget("seed", 42))
COMPARE_RATIOS = [float(r) for r in widget("compare_ratios", "3, 10").split(",") if r.strip()]
EXTRA_PARAMS = json.loads(widget("extra_params", "{}").strip() or "{}")

PATHS = {name: f"{BASE_PATH}/{name}" for name in ("transactions", "model", "scored", "metrics")}
print(json.dumps({"input_table": INPUT_TABLE or "(synthetic)", "rows": ROWS, "paths": PATHS}, indent=2))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 1. The table
# MAGIC Read `input_table`, or generate synthetic card transactions (5 hidden customer segments, ~1 % fraud that is
# MAGIC unusual *for its segment*) and write them as a Delta table partitioned by `event_date`. Rows before `test_from`
# MAGIC train; the later ones are the held-out test period.

# COMMAND ----------

if INPUT_TABLE:
    is_path = "/" in INPUT_TABLE or ":" in INPUT_TABLE
    transactions = read_table(spark, INPUT_TABLE) if is_path else spark.table(INPUT_TABLE)
else:
    generated = generate_transactions(spark, ROWS, seed=SEED).repartition("event_date")  # one file per day
    write_table(generated, PATHS["transactions"], mode="overwrite", partition_by=["event_date"])
    transactions = read_table(spark, PATHS["transactions"])

HAS_LABEL = bool(LABEL_COL) and LABEL_COL in transactions.columns
HAS_DATE = bool(DATE_COL) and DATE_COL in transactions.columns
if HAS_DATE and TEST_FROM:
    train = transactions.filter(F.col(DATE_COL) < F.lit(TEST_FROM))
    test_filter = F.col(DATE_COL) >= F.lit(TEST_FROM)
else:  # no date split: train and evaluate on every row
    train, test_filter = transactions, F.lit(True)

counts = transactions.agg(
    F.count(F.lit(1)).alias("rows"),
    F.sum(test_filter.cast("long")).alias("test_rows"),
    *([F.sum(F.col(LABEL_COL).cast("long")).alias("positives")] if HAS_LABEL else []),
).first()  # small: one row
print(counts.asDict())
show(transactions, rows=5)

# COMMAND ----------

# MAGIC %md
# MAGIC ## 2. Train, save, reload
# MAGIC Preprocessing (impute, one-hot encode, standard-scale), KMeans into `n_clusters` segments, one Dense
# MAGIC autoencoder per segment trained on a bounded, seeded sample of the segment's normal rows. Each segment's
# MAGIC threshold is its mean training error x `threshold_ratio`. The model directory holds no pickle.

# COMMAND ----------

params = {
    "labelCol": LABEL_COL if HAS_LABEL else "",
    "dateCol": DATE_COL if HAS_DATE else "",
    "scaler": "standard",
    "nClusters": N_CLUSTERS,
    "autoencoder": {"hidden_layers": [32, 16, 8], "epochs": EPOCHS, "batch_size": 256},
    "maxRowsPerSegment": 15_000,
    "thresholdRatio": THRESHOLD_RATIO,
    "seed": SEED,
}
model = SegmentAE(**{**params, **EXTRA_PARAMS}).fit(train)
model.write().overwrite().save(PATHS["model"])

loaded = SegmentAEModel.load(PATHS["model"])
assert loaded.model_id == model.model_id
print(f"model {loaded.model_id}: {len(loaded.feature_names)} features, thresholds {loaded.thresholds}")
show(pd.DataFrame(loaded.segment_summary()).drop(columns=["train_errors"]))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 3. Score the table into Delta
# MAGIC One pass, no shuffle: every row gets its `segment`, `anomaly_score` (reconstruction error), its segment's
# MAGIC `threshold`, `score_ratio` = score / threshold (> 1 is flagged), `is_anomaly`, the `top_features` behind its
# MAGIC error, `model_id` and `scored_at`. The write is one atomic Delta commit, partitioned by the date column.
# MAGIC `arrow_transform` gives the rows `transform` would, held back so that the delta-rs writer scores each batch
# MAGIC in the Python task that writes it (each row goes through Python once); with delta-spark (Databricks) it is
# MAGIC written as that DataFrame.

# COMMAND ----------

written = write_table(
    loaded.arrow_transform(transactions),
    PATHS["scored"],
    mode="overwrite",
    partition_by=[DATE_COL] if HAS_DATE else None,
    commit_metadata={"segae_spark.model_id": loaded.model_id},
)
scored = read_table(spark, PATHS["scored"])
test_scored = scored.filter(test_filter).cache()  # the evaluated rows: metrics and plots below read them several times
print(f"scored table {written.path}: Delta version {written.version}, {written.rows} rows")

# The most anomalous rows of the test period, on the scale of their own segment's threshold.
top_columns = [c for c in ("transaction_id", DATE_COL, LABEL_COL) if c and c in scored.columns]
show(
    test_scored.orderBy(F.col("score_ratio").desc()).select(
        *top_columns, "segment", "anomaly_score", "threshold", "score_ratio", "is_anomaly", "top_features"
    ),
    rows=10,
)

# COMMAND ----------

# MAGIC %md
# MAGIC ## 4. Metrics
# MAGIC Computed in Spark on the test period: precision, recall, F1, accuracy and confusion counts of the flag, and
# MAGIC ROC-AUC / PR-AUC, globally and per segment. The areas rank rows by the raw score (SegmentAE's way) or by
# MAGIC `score_ratio` (`rank_by="score_ratio"`), which puts each segment's errors on the scale of its own threshold.
# MAGIC The metrics are written to a Delta table as well.

# COMMAND ----------

METRIC_KEYS = ["rows", "positives", "roc_auc", "pr_auc", "precision", "recall", "f1", "accuracy", "tp", "fp", "fn", "tn"]
METRICS_SCHEMA = (
    "scope string, segment int, threshold double, rows long, positives long, roc_auc double, pr_auc double, "
    "precision double, recall double, f1 double, accuracy double, tp long, fp long, fn long, tn long, "
    "roc_auc_by_ratio double, pr_auc_by_ratio double, model_id string"
)
metrics, metrics_by_ratio, metrics_table = None, None, None
if HAS_LABEL:
    metrics = evaluate(test_scored, LABEL_COL, rank_by="score")
    metrics_by_ratio = evaluate(test_scored, LABEL_COL, rank_by="score_ratio")
    scopes = [("global", None, None, {**metrics["global"], "positives": metrics["global"]["tp"] + metrics["global"]["fn"]})]
    scopes += [("segment", s["segment"], s["threshold"], s) for s in metrics["segments"]]
    by_ratio = [metrics_by_ratio["global"], *metrics_by_ratio["segments"]]
    metric_rows = [
        {"scope": scope, "segment": seg, "threshold": threshold, **{k: m[k] for k in METRIC_KEYS},
         "roc_auc_by_ratio": r["roc_auc"], "pr_auc_by_ratio": r["pr_auc"], "model_id": loaded.model_id}
        for (scope, seg, threshold, m), r in zip(scopes, by_ratio)
    ]  # fmt: skip
    write_table(spark.createDataFrame(metric_rows, METRICS_SCHEMA), PATHS["metrics"], mode="overwrite")
    metrics_table = pd.DataFrame(metric_rows).drop(columns=["model_id"]).astype({"segment": "Int64"})
    show(metrics_table.round(4))
else:
    print(f"no label column {LABEL_COL!r} in the table: no metrics")

# COMMAND ----------

# MAGIC %md
# MAGIC ## 5. Other threshold ratios, no retraining
# MAGIC Each segment's training errors are stored with the model, so a different ratio only moves the thresholds:
# MAGIC `model.copy().setThresholdRatio(r).thresholds` gives them without Spark, and one aggregation over the scored
# MAGIC table counts what each ratio would flag (`model.detections(df, threshold_ratio=r)` and
# MAGIC `model.evaluation(df, label, threshold_ratio=r)` rescore with one). A higher ratio flags fewer rows.

# COMMAND ----------

ratio_table = None
if HAS_LABEL:
    ratios = sorted({THRESHOLD_RATIO, *COMPARE_RATIOS})
    label = F.col(LABEL_COL).cast("long")
    aggregates = []
    for i, ratio in enumerate(ratios):
        thresholds = loaded.copy().setThresholdRatio(ratio).thresholds
        threshold = F.element_at(F.create_map(*[F.lit(x) for kv in thresholds.items() for x in kv]), F.col("segment"))
        flag = (F.col("anomaly_score") > threshold).cast("long")
        aggregates += [F.sum(flag).alias(f"flagged_{i}"), F.sum(flag * label).alias(f"tp_{i}")]
    found = test_scored.filter(F.col(LABEL_COL).isNotNull()).agg(F.sum(label).alias("positives"), *aggregates).first()  # small: one row
    ratio_rows = []
    for i, ratio in enumerate(ratios):
        flagged, tp, positives = int(found[f"flagged_{i}"]), int(found[f"tp_{i}"]), int(found["positives"])
        precision, recall = (tp / flagged if flagged else 0.0), (tp / positives if positives else 0.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        ratio_rows.append({"threshold_ratio": ratio, "flagged": flagged, "tp": tp, "precision": precision, "recall": recall, "f1": f1})
    ratio_table = pd.DataFrame(ratio_rows)
    show(ratio_table.round(4))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 6. Plots
# MAGIC The plot data are aggregates computed in Spark: `binned_counts` bins log10 of a column into equal-width bins
# MAGIC (per group, between the group's min and max) and counts positives and negatives per bin, so only
# MAGIC groups x bins rows reach the driver, however large the table.

# COMMAND ----------

import numpy as np  # noqa: E402


def binned_counts(df, value_col, bins, group_col=None, label_col=None):
    """pandas (group, bin, lo, hi, pos, neg): counts per equal-width bin of log10(value), computed in Spark."""
    x = F.log10(F.least(F.greatest(F.col(value_col).cast("double"), F.lit(1e-12)), F.lit(1e12)))
    label = F.col(label_col).cast("long") if label_col else F.lit(0).cast("long")
    data = df.filter(F.col(label_col).isNotNull()) if label_col else df
    data = data.select((F.col(group_col) if group_col else F.lit(0)).alias("group"), x.alias("x"), label.alias("label"))
    bounds = data.groupBy("group").agg(F.min("x").alias("lo"), F.max("x").alias("hi"))
    width = F.greatest((F.col("hi") - F.col("lo")) / bins, F.lit(1e-9))
    bin_ = F.least(F.floor((F.col("x") - F.col("lo")) / width), F.lit(bins - 1)).cast("int")
    counts = (
        data.join(F.broadcast(bounds), "group")
        .groupBy("group", "lo", "hi", bin_.alias("bin"))
        .agg(F.sum("label").alias("pos"), F.sum(1 - F.col("label")).alias("neg"))
    )
    return counts.toPandas()  # small: at most groups x bins rows


def histogram(counts, bins):
    """Bin edges (in value units, not log10) and per-bin (neg, pos) counts of one group of ``binned_counts``."""
    lo, hi = float(counts["lo"].iloc[0]), float(counts["hi"].iloc[0])
    edges = 10 ** np.linspace(lo, max(hi, lo + 1e-9 * bins), bins + 1)
    neg, pos = np.zeros(bins), np.zeros(bins)
    neg[counts["bin"].to_numpy()] = counts["neg"].to_numpy()
    pos[counts["bin"].to_numpy()] = counts["pos"].to_numpy()
    return edges, neg, pos


# COMMAND ----------

# MAGIC %md
# MAGIC ### Anomaly scores per segment
# MAGIC Test-period scores of each segment (log scales), normal rows and labelled anomalies apart, with the segment's
# MAGIC threshold: rows right of the dashed line are flagged. The segments' errors live on different scales.

# COMMAND ----------

HIST_BINS = 40
score_counts = binned_counts(test_scored, "anomaly_score", HIST_BINS, "segment", LABEL_COL if HAS_LABEL else None)
segments = sorted(int(s) for s in score_counts["group"].unique())
fig, axes = plt.subplots(1, len(segments), figsize=(4 * len(segments), 3.2), squeeze=False)
for ax, seg in zip(axes[0], segments):
    edges, neg, pos = histogram(score_counts[score_counts["group"] == seg], HIST_BINS)
    ax.stairs(neg, edges, label="normal", fill=True, alpha=0.5)
    if HAS_LABEL:
        ax.stairs(pos, edges, label=LABEL_COL, color="tab:red", linewidth=1.5)
    ax.axvline(loaded.thresholds[seg], color="black", linestyle="--", label="threshold")
    ax.set(xscale="log", yscale="log", title=f"segment {seg}", xlabel="anomaly_score")
axes[0][0].set_ylabel("rows")
axes[0][0].legend(fontsize=8)
fig.tight_layout()
show_figure(fig, "score_histograms")

# COMMAND ----------

# MAGIC %md
# MAGIC ### ROC and precision-recall curves
# MAGIC From 256 bins of each ranking (raw score and score ratio), so the curves are close to, not exactly, the exact
# MAGIC areas in the legend (those come from `evaluate`).

# COMMAND ----------


def curve(counts):
    """ROC (fpr, tpr) and PR (recall, precision) points of binned counts, from the highest bin down."""
    order = counts.sort_values("bin", ascending=False)
    tp, fp = np.cumsum(order["pos"].to_numpy(float)), np.cumsum(order["neg"].to_numpy(float))
    p, n = max(tp[-1], 1.0), max(fp[-1], 1.0)
    return np.r_[0, fp / n], np.r_[0, tp / p], tp / p, tp / np.maximum(tp + fp, 1.0)


if HAS_LABEL:
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for column, m in (("anomaly_score", metrics), ("score_ratio", metrics_by_ratio)):
        fpr, tpr, recall, precision = curve(binned_counts(test_scored, column, 256, None, LABEL_COL))
        roc_ax.plot(fpr, tpr, label=f"{column} (ROC-AUC {m['global']['roc_auc']:.3f})")
        pr_ax.plot(recall, precision, label=f"{column} (PR-AUC {m['global']['pr_auc']:.3f})")
    g = metrics["global"]
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    pr_ax.axhline((g["tp"] + g["fn"]) / g["rows"], color="grey", linestyle=":", label="positive rate")
    pr_ax.plot([g["recall"]], [g["precision"]], "ko", label=f"flag at ratio {THRESHOLD_RATIO:g}")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test period")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall, test period")
    roc_ax.legend(fontsize=8)
    pr_ax.legend(fontsize=8)
    fig.tight_layout()
    show_figure(fig, "roc_pr_curves")

# COMMAND ----------

# MAGIC %md
# MAGIC ### Metrics per segment
# MAGIC The flag's precision, recall and F1 and the ranking's ROC-AUC / PR-AUC of each segment, next to the global ones.

# COMMAND ----------

if HAS_LABEL:
    bars = metrics_table.assign(name=["all" if pd.isna(s) else f"segment {int(s)}" for s in metrics_table["segment"]])
    bars = bars.set_index("name")[["precision", "recall", "f1", "roc_auc", "pr_auc"]].astype(float).fillna(0.0)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    bars.plot.bar(ax=ax, rot=0, width=0.8)
    ax.set(ylim=(0, 1.05), ylabel="value", title=f"test-period metrics, threshold ratio {THRESHOLD_RATIO:g}")
    ax.legend(fontsize=8, ncol=5, loc="upper center")
    fig.tight_layout()
    show_figure(fig, "segment_metrics")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Summary

# COMMAND ----------

summary = {
    "model_id": loaded.model_id,
    "scored_table": PATHS["scored"],
    "metrics_table": PATHS["metrics"] if HAS_LABEL else None,
    "test_metrics": {k: metrics["global"][k] for k in ("roc_auc", "pr_auc", "precision", "recall", "f1")} if HAS_LABEL else None,
    "figures": sorted(FIGURES),
}
print(json.dumps(summary, indent=2, default=str))
test_scored.unpersist()
