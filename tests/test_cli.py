"""End to end through the `segae-spark` command on ~20k synthetic transactions."""

import json
import subprocess
import sys

import pytest
from deltalake import DeltaTable

from segae_spark.cli import main

pytestmark = pytest.mark.slow

CONFIG = """
label_col: is_fraud
clustering: {n_clusters: 4}
autoencoder: {hidden_layers: [24, 12], epochs: 12, batch_size: 256}
training: {max_rows_per_segment: 4000, min_rows_per_segment: 100}
threshold: {ratio: 2.5}
"""


@pytest.fixture(scope="module")
def workdir(spark, tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


def test_generate_train_score_evaluate(spark, workdir, capsys):
    tx, model, scored, metrics = (str(workdir / n) for n in ("tx", "model", "scored", "metrics.json"))
    config = workdir / "train.yaml"
    config.write_text(CONFIG)

    assert main(["generate", "--rows", "20000", "--out", tx, "--seed", "5"]) == 0
    assert main(["train", "--input", tx, "--model-dir", model, "--config", str(config)]) == 0
    assert main(["score", "--model-dir", model, "--input", tx, "--output", scored, "--partition-by", "event_date"]) == 0
    assert main(["evaluate", "--model-dir", model, "--input", tx, "--label-col", "is_fraud", "--json", metrics]) == 0
    capsys.readouterr()

    table = DeltaTable(scored).to_pandas()
    assert len(table) == 20000
    assert table["transaction_id"].is_unique
    assert {"segment", "anomaly_score", "threshold", "is_anomaly", "event_date"} <= set(table.columns)
    assert ((table["anomaly_score"] > table["threshold"]).astype(int) == table["is_anomaly"]).all()

    result = json.load(open(metrics))
    g = result["global"]
    assert set(g) >= {"roc_auc", "pr_auc", "precision", "recall", "f1", "accuracy", "rows"}
    assert g["rows"] == 20000
    assert g["roc_auc"] > 0.8, g
    assert len(result["segments"]) == 4
    assert sum(s["rows"] for s in result["segments"]) == 20000


def test_user_errors_are_one_line_and_exit_2(workdir, capsys):
    assert main(["score", "--model-dir", str(workdir / "nope"), "--input", str(workdir / "tx"), "--output", str(workdir / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and "manifest.json not found" in err[0]
    bad = workdir / "bad.yaml"
    bad.write_text("clustering: {k: 3}\n")
    assert main(["train", "--input", str(workdir / "tx"), "--model-dir", str(workdir / "m2"), "--config", str(bad)]) == 2
    assert "clustering.k" in capsys.readouterr().err


def test_every_command_has_help():
    for command in ("demo", "generate", "train", "score", "evaluate", "optimize", "report", "vacuum"):
        out = subprocess.run([sys.executable, "-m", "segae_spark.cli", command, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage: segae-spark " + command in out.stdout
