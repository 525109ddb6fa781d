"""The scoring job as operators run it: spark-submit with conf/score.yaml's schema, and a killed backfill resumed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from segae_spark.cli import main
from segae_spark.config import load_config
from segae_spark.io import write_table

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FIRST, LAST = "2024-01-01", "2024-01-16"


@pytest.fixture(scope="module")
def source(transactions, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("jobs") / "transactions")
    write_table(transactions, path, partition_by=["event_date"])
    return path


def _env() -> dict:
    python = sys.executable
    return {**os.environ, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "segae_spark.cli", "score", "--spark-conf", "spark.master=local[2]", *args]


def _rows(path: str):
    table = DeltaTable(path).to_pandas()
    return table.drop(columns=["scored_at"]).sort_values("transaction_id").reset_index(drop=True)


def _expected_rows(source: str) -> int:
    table = DeltaTable(source).to_pandas(columns=["event_date"])
    return int(table["event_date"].astype(str).between(FIRST, LAST).sum())


def test_shipped_score_config_is_valid():
    score = load_config(str(ROOT / "conf" / "score.yaml"))["score"]
    assert {"model_dir", "input", "output", "from", "to", "chunk"} <= set(score)


def test_spark_submit_score_job_matches_the_cli(spark, saved_model_dir, source, tmp_path):
    config = {
        "score": {"model_dir": saved_model_dir, "input": source, "output": str(tmp_path / "submitted"),
                  "from": FIRST, "to": LAST, "chunk": "week"},
        "spark": {"spark.sql.shuffle.partitions": 4},
    }  # fmt: skip
    path = tmp_path / "score.yaml"
    path.write_text(yaml.safe_dump(config))
    spark_submit = Path(sys.executable).parent / "spark-submit"
    submitted = subprocess.run(
        [str(spark_submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false", str(ROOT / "jobs" / "score_job.py"), "--config", str(path)],
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert "scored" in submitted.stdout

    # The CLI (in the tests' session) with the same config, the output overridden on the command line.
    assert main(["score", "--config", str(path), "--output", str(tmp_path / "cli")]) == 0

    a, b = _rows(str(tmp_path / "submitted")), _rows(str(tmp_path / "cli"))
    assert len(a) == _expected_rows(source) > 0
    assert list(a.columns) == list(b.columns)
    assert a.drop(columns=["top_features"]).equals(b.drop(columns=["top_features"]))
    assert [list(map(dict, x)) for x in a["top_features"]] == [list(map(dict, x)) for x in b["top_features"]]


def test_a_killed_backfill_resumes_and_writes_every_row_once(spark, saved_model_dir, source, tmp_path, capsys):
    out = tmp_path / "scored"
    args = ["--model-dir", saved_model_dir, "--input", source, "--output", str(out), "--from", FIRST, "--to", LAST, "--chunk", "day"]
    process = subprocess.Popen(_cli(*args), env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "_delta_log"
    deadline = time.monotonic() + 600
    try:
        # Kill the job (driver and its JVM) once two daily chunks are committed.
        while len(list(log.glob("*.json"))) < 2:
            assert process.poll() is None, "the backfill ended before it could be killed"
            assert time.monotonic() < deadline, "no chunk committed in time"
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    partial = len(_rows(str(out)))
    assert 0 < partial < _expected_rows(source)

    # The rerun, in the tests' session.
    capsys.readouterr()
    assert main(["score", *args]) == 0
    assert "already committed" in capsys.readouterr().err
    rows = _rows(str(out))
    assert len(rows) == rows["transaction_id"].nunique() == _expected_rows(source)
