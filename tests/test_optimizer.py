"""The grid-search optimizer: leaderboard size and order, the saved best model, shared work."""

from __future__ import annotations

import csv

import json

import pytest

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.io import read_table
from segae_spark.optimizer import COLUMNS, SegmentAEOptimizer, split_validation
from segae_spark.pipeline import SegmentAE, SegmentAEModel

AUTOENCODERS = [
    {"hidden_layers": [8], "epochs": 4, "batch_size": 128},
    {"hidden_layers": [16, 4], "epochs": 4, "batch_size": 128},
]
RATIOS = [1.5, 3.0, 6.0]


def _estimator() -> SegmentAE:
    return SegmentAE(labelCol="is_fraud", idCol="transaction_id", dateCol="event_date",
                     maxRowsPerSegment=800, minRowsPerSegment=50, seed=5)  # fmt: skip


@pytest.fixture(scope="module")
def split(transactions):
    train, valid = split_validation(transactions, 0.35, seed=3)
    return train.cache(), valid.cache()


@pytest.fixture(scope="module")
def result(split):
    train, valid = split
    optimizer = SegmentAEOptimizer(
        _estimator(),
        autoencoders=AUTOENCODERS,
        cluster_models=["kmeans", "minibatch_kmeans"],
        n_clusters=[2, 3],
        threshold_ratios=RATIOS,
    )
    return optimizer.fit(train, valid)


def test_leaderboard_has_every_candidate_and_ratio_in_metric_order(result):
    board = result.leaderboard
    assert len(board) == 2 * 2 * 2 * 3
    assert [r["rank"] for r in board] == list(range(1, 25))
    assert sorted({(r["candidate"], r["threshold_ratio"]) for r in board}) == [(c, t) for c in range(8) for t in RATIOS]
    pr = [r["pr_auc"] for r in board]
    assert pr == sorted(pr, reverse=True)
    for c in range(8):
        rows = [r for r in board if r["candidate"] == c]
        # The areas come from the scores, which a ratio does not change; the flags do.
        assert len({(r["roc_auc"], r["pr_auc"], r["model_id"]) for r in rows}) == 1
        by_ratio = sorted(rows, key=lambda r: r["threshold_ratio"])
        assert [r["tp"] + r["fp"] for r in by_ratio] == sorted((r["tp"] + r["fp"] for r in by_ratio), reverse=True)
    assert {r["cluster_model"] for r in board} == {"kmeans", "minibatch_kmeans"}
    assert {r["segments"] for r in board} == {2, 3}


def test_saved_best_model_reproduces_its_leaderboard_metrics(result, split, spark, tmp_path):
    _, valid = split
    paths = result.save(str(tmp_path / "out"))
    best = result.best
    model = SegmentAEModel.load(paths["model"])
    assert model.getOrDefault(model.thresholdRatio) == best["threshold_ratio"]
    assert model.model_id == best["model_id"]
    metrics = model.evaluation(valid, "is_fraud")["global"]
    for key in ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy"):
        assert metrics[key] == pytest.approx(best[key], rel=1e-12, abs=1e-12), key
    for key in ("tp", "fp", "fn", "tn"):
        assert metrics[key] == best[key], key
    with open(paths["csv"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["candidate"]) for r in rows] == [r["candidate"] for r in result.leaderboard]
    assert list(rows[0]) == COLUMNS
    table = read_table(spark, paths["delta"]).orderBy("rank").collect()
    assert [r["candidate"] for r in table] == [r["candidate"] for r in result.leaderboard]
    with pytest.raises(ConfigError, match="already exists"):
        result.save(str(tmp_path / "out"))


def test_shared_work_gives_the_model_a_plain_fit_gives(result, split):
    """Fitting the preprocessing and clustering once for many candidates changes no candidate."""
    train, _ = split
    best = result.best
    params = {
        "autoencoder": next(a for a in AUTOENCODERS if result.best["autoencoder"] == _json(a)),
        "clusterModel": best["cluster_model"],
        "nClusters": int(best["n_clusters"]),
    }
    model = _estimator().setParams(**params).fit(train)
    assert model.model_id == best["model_id"]


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


def test_bad_grids_fail_before_any_spark_work(split):
    train, valid = split
    with pytest.raises(ConfigError, match="metric must be one of"):
        SegmentAEOptimizer(_estimator(), metric="auc")
    with pytest.raises(ConfigError, match="cluster_models is empty"):
        SegmentAEOptimizer(_estimator(), cluster_models=[])
    with pytest.raises(ConfigError, match="only move mean_ratio thresholds"):
        SegmentAEOptimizer(_estimator().setParams(thresholdMethod="quantile"), threshold_ratios=[1, 2])
    with pytest.raises(ConfigError, match="clusterModel"):
        SegmentAEOptimizer(_estimator(), cluster_models=["kmeans", "dbscan"]).fit(train, valid)
    with pytest.raises(SchemaError, match="both 0 and 1"):
        SegmentAEOptimizer(_estimator()).fit(train, valid.filter("is_fraud = 0"))


OPTIMIZE_CONFIG = """
label_col: is_fraud
seed: 5
features: {{id_col: transaction_id, date_col: event_date}}
training: {{max_rows_per_segment: 600, min_rows_per_segment: 50}}
mlflow: {{experiment: segae-optimize-tests}}  # named: an earlier test's active experiment lives in another store
optimize:
  train: {train}
  out: {out}
  metric: f1
  grid:
    autoencoders: [{{hidden_layers: [8], epochs: 3}}]
    cluster_models: [kmeans]
    n_clusters: [2]
    training_modes: [shared]
    threshold_ratios: [1.5, 3.0]
    supervised: [{{classifier: random_forest, num_trees: 20, max_depth: 4}}]
"""


def test_optimize_command_writes_the_leaderboard_and_the_best_model(split, tmp_path, capsys, monkeypatch):
    import mlflow

    from segae_spark.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants this for a file: store

    train, valid = split
    train_path, valid_path, out = (str(tmp_path / n) for n in ("train", "valid", "out"))
    train.write.parquet(train_path)
    valid.write.parquet(valid_path)
    config = tmp_path / "optimize.yaml"
    config.write_text(OPTIMIZE_CONFIG.format(train=train_path, out=out))
    assert main(["optimize", "--config", str(config), "--validation", valid_path, "--mlflow"]) == 0
    printed = capsys.readouterr().out
    assert "best model" in printed and "leaderboard.csv" in printed
    with open(tmp_path / "out" / "leaderboard.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["training_mode"], r["n_clusters"]) for r in rows] == [("shared", "2")] * 3
    f1 = [float(r["f1"]) for r in rows]
    assert f1 == sorted(f1, reverse=True)
    stages = [r["second_stage"] for r in rows if r["second_stage"] != "none"]
    assert len(stages) == 1 and json.loads(stages[0])["classifier"] == "random_forest"
    best = SegmentAEModel.load(str(tmp_path / "out" / "best_model"))
    assert best.model_id == rows[0]["model_id"]
    assert best.getOrDefault(best.thresholdRatio) == float(rows[0]["threshold_ratio"])
    # The best row, first stage or second, is what the saved model measures on the validation rows.
    metrics = best.evaluation(valid, "is_fraud")
    measured = metrics["global"] if rows[0]["second_stage"] == "none" else metrics["supervised"]["global"]
    for key in ("pr_auc", "roc_auc", "f1", "tp", "fp"):
        assert measured[key] == pytest.approx(float(rows[0][key]), rel=1e-9), key
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.data.metrics["pr_auc"] == pytest.approx(float(rows[0]["pr_auc"]))
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"leaderboard.csv", "report"} <= logged, logged
    # Results exist now: a second run without overwrite refuses to replace them, before any work.
    assert main(["optimize", "--config", str(config), "--validation", valid_path]) == 2
    assert "already exists" in capsys.readouterr().err
