"""The Databricks notebook runs locally, cell by cell, against the synthetic data.

The notebook source (``notebooks/segae_spark_quickstart.py``) is split on its
``# COMMAND ----------`` separators; markdown (``# MAGIC``) cells are skipped
and the code cells run in order in one namespace, as Databricks would run
them, with small parameters injected through ``NOTEBOOK_PARAMS``. Without
``dbutils`` / ``display`` the notebook falls back to defaults, printed tables
and PNG files; a fake ``dbutils`` / ``display`` checks the Databricks side of
those guards.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from matplotlib.figure import Figure
from pyspark.sql import functions as F

from segae_spark import SegmentAEModel, read_table

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "segae_spark_quickstart.py"
HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"
SCORED_COLUMNS = {"segment", "anomaly_score", "threshold", "score_ratio", "is_anomaly", "top_features", "model_id", "scored_at"}
FIGURE_NAMES = {"score_histograms", "roc_pr_curves", "segment_metrics"}
ROWS = 4000
N_CLUSTERS = 3


def notebook_cells() -> list[tuple[int, str]]:
    """The code cells of the notebook: (first line number, source), markdown cells left out."""
    lines = NOTEBOOK.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER, f"{NOTEBOOK} must start with {HEADER!r}"
    cells, start, current = [], 2, []
    for number, line in enumerate(lines[1:], start=2):
        if line.strip() == SEPARATOR:
            cells.append((start, current))
            start, current = number + 1, []
        else:
            current.append(line)
    cells.append((start, current))
    code_cells = []
    for first, body in cells:
        content = [line for line in body if line.strip()]
        if not content or all(line.startswith("# MAGIC") for line in content):
            assert not content or content[0].startswith("# MAGIC %"), f"cell at line {first}: a # MAGIC cell starts with its magic (%md)"
            continue
        assert not any(line.startswith("# MAGIC") for line in content), f"cell at line {first} mixes code and # MAGIC lines"
        code_cells.append((first, "\n".join(body)))
    return code_cells


def run_cells(cells: list[tuple[int, str]], namespace: dict) -> dict:
    """Execute ``cells`` in order in ``namespace``; tracebacks point at the notebook's own lines."""
    for first, source in cells:
        exec(compile("\n" * (first - 1) + source, str(NOTEBOOK), "exec"), namespace)
    return namespace


class FakeWidgets:
    def __init__(self, values: dict[str, str]):
        self.values = values
        self.created: dict[str, tuple[str, str]] = {}
        self.read: list[str] = []

    def text(self, name, default, label=None):
        self.created[name] = (default, label)

    def get(self, name):
        assert name in self.created, f"widget {name!r} read before it was created"
        self.read.append(name)
        return self.values.get(name, self.created[name][0])


class FakeDbutils:
    def __init__(self, values: dict[str, str]):
        self.widgets = FakeWidgets(values)


def test_notebook_source_is_a_databricks_notebook():
    text = NOTEBOOK.read_text(encoding="utf-8")
    cells = notebook_cells()
    assert text.count(SEPARATOR) >= 10
    assert len(cells) >= 8 and text.count("# MAGIC %md") >= len(cells)
    for first, source in cells:
        compile(source, f"{NOTEBOOK}:{first}", "exec")
    # Databricks builtins are reached only through the guards.
    code = "\n".join(source for _, source in cells)
    assert "dbutils." not in code.replace("DBUTILS.", "")
    assert "display(" not in code.replace("DISPLAY(", "")


@pytest.fixture(scope="module")
def notebook_run(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("notebook") / "quickstart"
    params = {
        "base_path": str(base),
        "rows": ROWS,
        "epochs": 3,
        "n_clusters": N_CLUSTERS,
        "compare_ratios": "3, 12",
        "extra_params": '{"trainingBackend": "local"}',  # one TensorFlow import, on the driver
    }
    namespace = {"__name__": "__notebook__", "NOTEBOOK_PARAMS": params}
    run_cells(notebook_cells(), namespace)
    return base, namespace


@pytest.mark.slow
def test_runs_without_databricks_on_the_given_parameters(notebook_run, spark):
    base, ns = notebook_run
    assert "dbutils" not in ns and "display" not in ns
    assert ns["ON_DATABRICKS"] is False and ns["DISPLAY"] is None
    assert (ns["BASE_PATH"], ns["ROWS"], ns["EPOCHS"], ns["N_CLUSTERS"]) == (str(base), ROWS, 3, N_CLUSTERS)
    assert ns["spark"] is spark  # the active session, reused
    assert ns["loaded"].getOrDefault("trainingBackend") == "local"  # extra_params reach SegmentAE
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


@pytest.mark.slow
def test_scores_the_table_into_a_partitioned_delta_table(notebook_run, spark):
    base, ns = notebook_run
    scored = read_table(spark, f"{base}/scored")
    assert SCORED_COLUMNS <= set(scored.columns)
    assert set(read_table(spark, f"{base}/transactions").columns) <= set(scored.columns)
    assert scored.count() == ROWS
    assert DeltaTable(f"{base}/scored").metadata().partition_columns == ["event_date"]
    model = SegmentAEModel.load(f"{base}/model")
    ids = [r[0] for r in scored.select("model_id").distinct().collect()]  # small: one id
    assert ids == [model.model_id] == [ns["loaded"].model_id]
    flags = scored.agg(
        F.sum(F.col("is_anomaly").cast("long")),
        F.sum(((F.col("score_ratio") > 1).cast("int") != F.col("is_anomaly").cast("int")).cast("long")),
    ).first()  # small: one row
    assert 0 < flags[0] < ROWS  # some rows flagged, not all
    assert flags[1] == 0  # is_anomaly == (score_ratio > 1)


@pytest.mark.slow
def test_metrics_are_plausible(notebook_run, spark):
    base, ns = notebook_run
    metrics, by_ratio = ns["metrics"], ns["metrics_by_ratio"]
    g = metrics["global"]
    test_rows = ns["counts"]["test_rows"]
    assert g["rows"] == test_rows and 0 < test_rows < ROWS
    assert g["tp"] + g["fn"] > 0  # the test period holds frauds
    assert 0.7 < g["roc_auc"] <= 1.0, g  # 0.84 at these parameters (seeded)
    assert g["pr_auc"] > 3 * (g["tp"] + g["fn"]) / g["rows"], g  # well above the positive rate
    assert 0 <= g["precision"] <= 1 and 0 < g["recall"] <= 1
    assert metrics["rank_by"] == "score" and by_ratio["rank_by"] == "score_ratio"
    assert 0.5 < by_ratio["global"]["roc_auc"] <= 1.0
    segments = metrics["segments"]
    assert [s["segment"] for s in segments] == list(range(N_CLUSTERS))
    assert sum(s["rows"] for s in segments) == g["rows"]
    for s in segments:
        assert s["threshold"] == pytest.approx(ns["loaded"].thresholds[s["segment"]], rel=1e-6)
    # The metrics Delta table: one global row and one per segment.
    table = read_table(spark, f"{base}/metrics").toPandas()  # small: 1 + segments rows
    assert sorted(table["scope"]) == ["global"] + ["segment"] * N_CLUSTERS
    global_row = table[table["scope"] == "global"].iloc[0]
    assert global_row["roc_auc"] == pytest.approx(g["roc_auc"]) and pd.isna(global_row["segment"])
    assert global_row["roc_auc_by_ratio"] == pytest.approx(by_ratio["global"]["roc_auc"])
    # Higher threshold ratios flag fewer rows, without retraining.
    ratios = ns["ratio_table"]
    assert list(ratios["threshold_ratio"]) == [3.0, 6.0, 12.0]
    assert ratios["flagged"].is_monotonic_decreasing and ratios["flagged"].iloc[0] > ratios["flagged"].iloc[-1]
    at_model_ratio = ratios[ratios["threshold_ratio"] == 6.0].iloc[0]  # the model's own ratio: the flag's counts
    assert (at_model_ratio["flagged"], at_model_ratio["tp"]) == (g["tp"] + g["fp"], g["tp"])


@pytest.mark.slow
def test_plots_are_drawn_from_spark_aggregates(notebook_run):
    base, ns = notebook_run
    assert set(ns["FIGURES"]) == FIGURE_NAMES
    for name, fig in ns["FIGURES"].items():
        assert isinstance(fig, Figure) and fig.axes, name
        png = base / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert len(ns["FIGURES"]["score_histograms"].axes) == N_CLUSTERS
    # The histogram counts cover every test row of every segment, and only bins reach the driver.
    counts = ns["score_counts"]
    assert len(counts) <= N_CLUSTERS * ns["HIST_BINS"]
    assert int(counts["pos"].sum() + counts["neg"].sum()) == ns["metrics"]["global"]["rows"]
    assert int(counts["pos"].sum()) == ns["metrics"]["global"]["tp"] + ns["metrics"]["global"]["fn"]


def test_databricks_guards_use_widgets_and_display(spark, tmp_path):
    """With a (fake) dbutils and display, the parameters come from widgets and tables / figures go to display."""
    base = tmp_path / "volume"
    dbutils = FakeDbutils({"base_path": str(base), "rows": "1234", "threshold_ratio": "4.5"})
    shown = []
    namespace = {"__name__": "__notebook__", "dbutils": dbutils, "display": shown.append}
    cells = notebook_cells()
    setup = [i for i, (_, source) in enumerate(cells) if "INPUT_TABLE = widget(" in source]
    assert setup, "no parameter cell"
    run_cells(cells[: setup[0] + 1], namespace)

    widgets = dbutils.widgets
    expected = {"input_table", "base_path", "rows", "label_col", "date_col", "test_from", "n_clusters", "epochs", "threshold_ratio", "seed", "compare_ratios", "extra_params"}
    assert set(widgets.created) == expected and set(widgets.read) == expected
    assert widgets.created["rows"][0] == "200000"  # the Databricks default
    assert namespace["ON_DATABRICKS"] is True
    assert (namespace["BASE_PATH"], namespace["ROWS"], namespace["THRESHOLD_RATIO"]) == (str(base), 1234, 4.5)
    assert namespace["LABEL_COL"] == "is_fraud" and namespace["INPUT_TABLE"] == ""

    table = pd.DataFrame({"a": [1, 2]})
    namespace["show"](table)
    frame = spark.range(3)
    namespace["show"](frame)
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    namespace["show_figure"](fig, "check")
    assert shown == [table, frame, fig]
    assert namespace["FIGURES"] == {"check": fig}
    assert (base / "plots" / "check.png").is_file()  # a /Volumes-like (local) path also keeps the PNG


def test_parameters_override_widgets(spark, tmp_path):
    dbutils = FakeDbutils({"rows": "1234"})
    namespace = {"__name__": "__notebook__", "dbutils": dbutils, "display": lambda obj: None, "NOTEBOOK_PARAMS": {"rows": 99, "base_path": str(tmp_path)}}
    cells = notebook_cells()
    setup = [i for i, (_, source) in enumerate(cells) if "INPUT_TABLE = widget(" in source][0]
    run_cells(cells[: setup + 1], namespace)
    assert namespace["ROWS"] == 99 and "rows" not in dbutils.widgets.created
    assert namespace["BASE_PATH"] == str(tmp_path)
