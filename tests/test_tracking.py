"""MLflow tracking: `segae-spark train --mlflow` logs a run whose pyfunc model scores like SegmentAEModel.transform.

The runs go to a file store in a temporary directory. MLflow 3 refuses its
file store unless MLFLOW_ALLOW_FILE_STORE=true (it prefers a database, and
the SQLite one needs SQLAlchemy, which mlflow-skinny does not install).
"""

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from segae_spark.cli import main
from segae_spark.data import generate_transactions
from segae_spark.errors import ConfigError
from segae_spark.pipeline import SegmentAEModel
from segae_spark.tracking import log_model_run, require_mlflow

mlflow = pytest.importorskip("mlflow")

CONFIG = """
label_col: is_fraud
clustering: {n_clusters: 2, runs: 1}
autoencoder: {hidden_layers: [6], epochs: 1, batch_size: 256}
training: {backend: local, max_rows_per_segment: 500, min_rows_per_segment: 30}
mlflow: {experiment: segae-tests, run_name: tiny}
"""
SCORES = ["segment", "anomaly_score", "threshold", "score_ratio", "is_anomaly"]


@pytest.fixture(scope="module")
def tracked(spark, tmp_path_factory):
    """The MLflow run of a tiny model trained by ``train --mlflow``, its model and 300 rows scored by ``transform``."""
    root = tmp_path_factory.mktemp("tracking")
    generate_transactions(spark, 2000, seed=3).write.parquet(str(root / "tx"))
    (root / "train.yaml").write_text(CONFIG)
    env = pytest.MonkeyPatch()
    env.setenv("MLFLOW_TRACKING_URI", (root / "mlruns").as_uri())
    env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    argv = ["train", "--input", str(root / "tx"), "--model-dir", str(root / "model"), "--config", str(root / "train.yaml"), "--mlflow"]
    assert main(argv) == 0
    (run,) = mlflow.search_runs(experiment_names=["segae-tests"], output_format="list")
    model = SegmentAEModel.load(str(root / "model"))
    rows = spark.read.parquet(str(root / "tx")).limit(300).cache()
    yield SimpleNamespace(run=run, model_dir=str(root / "model"), model=model, rows=rows, expected=model.transform(rows).toPandas())
    env.undo()


def test_train_logs_params_metrics_and_the_model_directory(tracked):
    run, model_dir, model = tracked.run, tracked.model_dir, tracked.model
    params, metrics = run.data.params, run.data.metrics
    assert run.info.run_name == "tiny" and run.data.tags["segae_spark.model_id"] == model.model_id
    assert params["labelCol"] == "is_fraud" and params["nClusters"] == "2" and params["clustering.n_clusters"] == "2"
    assert params["autoencoder.hidden_layers"] == "[6]" and params["train.model_dir"] == model_dir
    assert metrics["training_rows"] == model.artifact.training["rows"] and metrics["segments"] == 2
    for segment, threshold in model.thresholds.items():
        assert metrics[f"segment_{segment}_threshold"] == pytest.approx(threshold, rel=1e-12)
    logged = {f.path for f in mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path="segae_model")}
    assert {"segae_model/manifest.json", "segae_model/models", "segae_model/preprocessing"} <= logged
    assert run.data.tags["segae_spark.pyfunc"] == "logged"


def _pyfunc_uri(run) -> str:
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    return model.model_uri


def test_pyfunc_predict_equals_transform(tracked):
    expected = tracked.expected
    got = mlflow.pyfunc.load_model(_pyfunc_uri(tracked.run)).predict(tracked.rows.toPandas())
    assert list(got.columns) == SCORES
    np.testing.assert_array_equal(got["segment"], expected["segment"])
    np.testing.assert_allclose(got["anomaly_score"], expected["anomaly_score"], rtol=1e-9, atol=0)
    np.testing.assert_array_equal(got["is_anomaly"], expected["is_anomaly"])


def test_spark_udf_scores_like_transform(spark, tracked):
    udf = mlflow.pyfunc.spark_udf(
        spark, _pyfunc_uri(tracked.run), result_type=", ".join(f"{c} {'int' if c in ('segment', 'is_anomaly') else 'double'}" for c in SCORES),
        env_manager="local",
    )  # fmt: skip
    scored = tracked.rows.withColumn("p", udf()).select("transaction_id", "p.segment", "p.anomaly_score").toPandas()  # udf(): the signature's columns
    scored = scored.set_index("transaction_id")
    expected = tracked.expected.set_index("transaction_id").loc[scored.index]
    np.testing.assert_array_equal(scored["segment"], expected["segment"])
    np.testing.assert_allclose(scored["anomaly_score"], expected["anomaly_score"], rtol=1e-9, atol=0)


def test_a_search_logs_its_report_and_evaluation_metrics(tracked, tmp_path):
    model_dir = tracked.model_dir
    report = tmp_path / "report.html"
    report.write_text("<html><body>segae-spark report</body></html>")
    evaluation = {"global": {"roc_auc": 0.91, "pr_auc": None, "rows": 300}, "rank_by": "score", "segments": [{"segment": 0, "f1": 0.5}]}
    logged = log_model_run(model_dir, {"grid": {"ratio": 2.5}}, evaluation, report_path=str(report), run_name="candidate-1", experiment="segae-search")
    run = mlflow.get_run(logged.run_id)
    assert run.data.params["grid.ratio"] == "2.5"
    assert run.data.metrics["roc_auc"] == 0.91 and run.data.metrics["segment_0_f1"] == 0.5 and "pr_auc" not in run.data.metrics
    assert [f.path for f in mlflow.artifacts.list_artifacts(run_id=logged.run_id, artifact_path="report")] == ["report/report.html"]
    assert logged.model_uri is not None


def test_missing_mlflow_is_one_config_error_before_training(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'segae-spark\[mlflow\]'"):
        require_mlflow()
    assert main(["train", "--input", str(tmp_path / "tx"), "--model-dir", str(tmp_path / "m"), "--mlflow"]) == 2
    assert "segae-spark[mlflow]" in capsys.readouterr().err
