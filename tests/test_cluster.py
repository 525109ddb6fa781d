"""Scoring jobs on a real standalone cluster: an executor killed, a driver killed, two writers at once.

The cluster (a master and two one-core workers on 127.0.0.1, started from the
pyspark wheel) runs executors as separate JVMs, so these are the failures a
production cluster has; each job is the `segae-spark score` command in its
own process, as operators run it.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from segae_spark.batch_scoring import score_table
from segae_spark.cli import _train, main
from segae_spark.config import load_config
from segae_spark.io import write_table
from segae_spark.local_cluster import LocalCluster
from segae_spark.pipeline import SegmentAEModel

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

FIRST, LAST = "2024-01-01", "2024-01-20"
TIMEOUT = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("cluster"), workers=2, cores=1) as running:
        yield running


@pytest.fixture(scope="module")
def history(spark, tmp_path_factory):
    """20 days of transactions, one Delta partition (and file) a day."""
    from segae_spark.data import generate_transactions

    path = str(tmp_path_factory.mktemp("history") / "transactions")
    days = generate_transactions(spark, 20_000, seed=23, start_date=FIRST, days=20).repartition("event_date")
    write_table(days, path, partition_by=["event_date"])
    return path


def _score_args(model_dir, source, output, first="2024-01-02", last=LAST) -> list[str]:
    return ["score", "--model-dir", model_dir, "--input", source, "--output", output, "--from", first, "--to", last]


def _on_cluster(cluster, args: list[str], cores: int = 2) -> list[str]:
    """The command line running ``segae-spark <args>`` as its own application on ``cluster``."""
    conf = {
        "spark.master": cluster.master_url,
        "spark.cores.max": cores,
        "spark.executor.memory": "1g",
        "spark.driver.memory": "1g",
        # One task per daily file (19 tasks), so a job has tasks in flight long enough to be hit.
        "spark.sql.files.openCostInBytes": 256 * 1024 * 1024,
    }
    flags = [f for key, value in conf.items() for f in ("--spark-conf", f"{key}={value}")]
    return [sys.executable, "-m", "segae_spark.cli", args[0], *flags, *args[1:]]


def _env() -> dict:
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start(command: list[str], log: Path) -> subprocess.Popen:
    # A session of its own: killing the "driver" kills the Python process and its JVM.
    return subprocess.Popen(command, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert process.poll() is None, f"the job ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def _data_files(path: str) -> set[str]:
    root = Path(path)
    return {str(p.relative_to(root)) for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}


def _rows(path: str):
    return DeltaTable(path).to_pandas(columns=["transaction_id", "event_date"])


def _expected_ids(spark, source: str, first=FIRST, last=LAST) -> set:
    from segae_spark.io import read_table

    days = read_table(spark, source).where(f"event_date >= '{first}' AND event_date <= '{last}'")
    return {r.transaction_id for r in days.select("transaction_id").toLocalIterator()}  # small: 20k ids


def _seed_output(fitted_model, spark, source: str, output: str) -> int:
    """Score the first day locally, so the cluster job appends to an existing table (version 0)."""
    run = score_table(fitted_model, spark, source, output, start=FIRST, end=FIRST)
    assert DeltaTable(output).version() == 0
    return run.rows


def _wait_until_apps_gone(cluster) -> None:
    deadline = time.monotonic() + 60
    while cluster.state()["activeapps"]:
        assert time.monotonic() < deadline, "the killed application still holds executors"
        time.sleep(0.2)


def test_a_killed_executor_loses_no_row(spark, cluster, history, fitted_model, saved_model_dir, tmp_path):
    output = str(tmp_path / "scored")
    _seed_output(fitted_model, spark, history, output)
    seeded = _data_files(output)
    log = tmp_path / "job.log"
    process = _start(_on_cluster(cluster, _score_args(saved_model_dir, history, output)), log)
    try:
        # Kill one executor JVM while the job's tasks are writing.
        _wait_for(lambda: len(cluster.executor_pids()) == 2 and _data_files(output) - seeded, process, "tasks wrote files")
        assert DeltaTable(output).version() == 0, "the job committed before the executor could be killed"
        os.kill(cluster.executor_pids()[0], signal.SIGKILL)
        assert process.wait(timeout=TIMEOUT) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "ExecutorLostFailure" in log.read_text()  # a task was running on it, and was retried

    table = DeltaTable(output)
    assert table.version() == 1  # one commit for the whole range, despite the retried tasks
    rows = _rows(output)
    assert len(rows) == rows["transaction_id"].nunique()
    assert set(rows["transaction_id"]) == _expected_ids(spark, history)


def test_a_driver_killed_before_its_commit_leaves_the_table_as_it_was(spark, cluster, history, fitted_model, saved_model_dir, tmp_path, capsys):
    output = str(tmp_path / "scored")
    seeded_rows = _seed_output(fitted_model, spark, history, output)
    seeded = _data_files(output)
    args = _score_args(saved_model_dir, history, output)
    process = _start(_on_cluster(cluster, args), tmp_path / "killed.log")
    try:
        _wait_for(lambda: _data_files(output) - seeded, process, "tasks wrote files")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    _wait_until_apps_gone(cluster)

    # The dead attempt's files are on disk but in no snapshot.
    orphans = _data_files(output) - seeded
    assert orphans
    table = DeltaTable(output)
    assert table.version() == 0
    assert {Path(f).name for f in table.file_uris()} == {Path(f).name for f in seeded}
    assert len(_rows(output)) == seeded_rows

    # vacuum: the default 7-day retention keeps the fresh orphans; a zero retention lists and deletes them.
    capsys.readouterr()
    assert main(["vacuum", "--table", output, "--dry-run"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["vacuum", "--table", output, "--retention-hours", "0"]) == 2
    assert "retention of 0 hours" in capsys.readouterr().err
    assert main(["vacuum", "--table", output, "--retention-hours", "0", "--skip-retention-check", "--dry-run"]) == 0
    assert set(capsys.readouterr().out.split()) == orphans
    assert main(["vacuum", "--table", output, "--retention-hours", "0", "--skip-retention-check"]) == 0
    assert _data_files(output) == seeded
    assert len(_rows(output)) == seeded_rows

    # The rerun (here in the tests' local session) commits the range exactly once, none of the orphans in it.
    vacuumed = DeltaTable(output).version()  # vacuum itself commits (VACUUM START / END)
    assert main(args) == 0
    assert DeltaTable(output).version() == vacuumed + 1
    assert not {Path(f).name for f in DeltaTable(output).file_uris()} & {Path(f).name for f in orphans}
    rows = _rows(output)
    assert len(rows) == rows["transaction_id"].nunique()
    assert set(rows["transaction_id"]) == _expected_ids(spark, history)


def test_two_jobs_writing_overlapping_days_at_once_write_each_row_once(spark, cluster, history, fitted_model, saved_model_dir, tmp_path):
    output = str(tmp_path / "scored")
    _seed_output(fitted_model, spark, history, output)
    jobs = [_score_args(saved_model_dir, history, output, last="2024-01-13"), _score_args(saved_model_dir, history, output, first="2024-01-08")]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = [_start(_on_cluster(cluster, args, cores=1), log) for args, log in zip(jobs, logs)]
    codes = [p.wait(timeout=TIMEOUT) for p in processes]
    for code, log, args in zip(codes, logs, jobs):
        text = log.read_text()
        if code == 0:
            continue
        # The loser of the race over days 8-13 is refused as a whole, clearly; its retry scores the rest.
        assert code == 2 and "already committed by another writer; nothing was committed" in text, text[-3000:]
        assert "Traceback" not in text
        assert main(args) == 0
    rows = _rows(output)
    assert len(rows) == rows["transaction_id"].nunique()
    assert set(rows["transaction_id"]) == _expected_ids(spark, history)


def test_the_cluster_trains_the_model_local_mode_trains(spark, cluster, history, tmp_path):
    # Two executors in their own JVMs merge partial results in another order
    # than local mode does; the preprocessing, clustering and training must
    # not depend on it. Two segments on two task slots: each model trains
    # alone in both places (stacked with others it would differ in the last
    # bits; see the README's reproducibility paragraph).
    config = {
        "seed": 5,
        "label_col": "is_fraud",
        "preprocessing": {"impute_strategy": "median", "scaler": "robust"},
        "clustering": {"n_clusters": 2, "runs": 2},
        "autoencoder": {"hidden_layers": [8], "epochs": 3, "batch_size": 256},
        "training": {"max_rows_per_segment": 3000},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    model_dir = str(tmp_path / "model")
    command = _on_cluster(cluster, ["train", "--input", history, "--model-dir", model_dir, "--config", str(path)])
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    on_cluster = SegmentAEModel.load(model_dir)
    local = _train(spark, history, load_config(str(path)), None)
    assert {m.training["trained_together"] for m in on_cluster.artifact.models.values()} == {1}
    for mine, theirs in zip(on_cluster.artifact.preprocessing.stages, local.artifact.preprocessing.stages):
        assert _learned(mine) == _learned(theirs), type(mine).__name__
    assert on_cluster.model_id == local.model_id


def _learned(stage) -> dict:
    """A fitted preprocessing stage's learned numbers (surrogates, offsets and scales, category tables)."""
    return {k: v for k, v in vars(stage).items() if k.endswith("_") and not k.startswith("_")}
