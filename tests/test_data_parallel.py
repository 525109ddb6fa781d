"""Data-parallel training in two Spark tasks against one process on the same rows.

Each test runs for ``tf_distribute`` and for ``horovod``. The horovod cases
need the Horovod environment (``make test-horovod`` runs them there, with
SEGAE_REQUIRE_HOROVOD=1 so that they cannot skip); in the main environment
they skip, and the test that the backend is refused there runs instead.
"""

import os

import numpy as np
import pytest
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from segae_spark.errors import ConfigError
from segae_spark.models.dense import DenseAutoencoderConfig
from segae_spark.models.numpy_engine import NumpyAutoencoder, load_engine
from segae_spark.models.stacked import train_autoencoder
from segae_spark.training.data_parallel import train_data_parallel
from segae_spark.training.horovod_backend import horovod_missing, train_horovod

pytestmark = pytest.mark.slow

HOROVOD_MISSING = horovod_missing()
needs_horovod = pytest.mark.skipif(
    bool(HOROVOD_MISSING) and not os.environ.get("SEGAE_REQUIRE_HOROVOD"), reason=str(HOROVOD_MISSING)
)
BACKENDS = ["tf_distribute", pytest.param("horovod", marks=needs_horovod)]
TRAIN = {"tf_distribute": train_data_parallel, "horovod": train_horovod}

CONFIG = {"hidden_layers": [8, 3], "epochs": 6, "batch_size": 128, "validation_split": 0.1, "early_stopping_patience": 3}
SEED = 13


def _low_rank(rows: int, seed: int) -> np.ndarray:
    """Rows near a 3-dimensional subspace of 12 features: what an autoencoder with a 3-wide code can learn."""
    basis = np.random.default_rng(99).normal(size=(3, 12))
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, 3)) @ basis + 0.05 * rng.normal(size=(rows, 12))).astype(np.float32)


@pytest.fixture(scope="module", params=BACKENDS)
def trained(spark, request):
    x = _low_rank(6000, 1)
    df = spark.createDataFrame([(i, row.tolist()) for i, row in enumerate(x)], "id long, x array<float>")
    rows = df.withColumn("h", F.xxhash64("id"))
    return x, TRAIN[request.param](rows, "x", "h", CONFIG, SEED, workers=2), request.param


def test_two_workers_end_with_identical_weights_and_one_process_loss(trained):
    x, parallel, backend = trained
    assert len(parallel.workers) == 2
    assert parallel.workers[0]["digest"] == parallel.workers[1]["digest"]
    assert sum(w["rows"] for w in parallel.workers) == len(x)
    assert all(w["rows"] > 2000 for w in parallel.workers)  # each trained on its own share
    single = train_autoencoder(x, DenseAutoencoderConfig(**CONFIG), SEED)
    assert parallel.training["backend"] == backend
    assert parallel.training["epochs_run"] == single.epochs_run
    final_parallel, final_single = parallel.training["history"]["loss"][-1], single.history["loss"][-1]
    assert abs(final_parallel - final_single) <= 0.10 * final_single, (final_parallel, final_single)


def test_the_model_scores_like_a_one_process_model(trained):
    x, parallel, _ = trained
    normal = _low_rank(1900, 2)
    anomalies = _low_rank(100, 3) + np.random.default_rng(4).normal(size=(100, 12)).astype(np.float32)  # off the subspace
    test = np.concatenate([normal, anomalies])
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
    single = train_autoencoder(x, DenseAutoencoderConfig(**CONFIG), SEED)
    auc_single = roc_auc_score(labels, NumpyAutoencoder.from_keras(single.model).row_errors(test, "mse"))
    auc_parallel = roc_auc_score(labels, load_engine(parallel.npz).row_errors(test, "mse"))
    assert auc_parallel > 0.8, (auc_parallel, auc_single)  # learned something, not chance
    assert abs(auc_parallel - auc_single) <= 0.01, (auc_parallel, auc_single)


@pytest.mark.parametrize("train", [train_data_parallel, train_horovod])
def test_unsupported_architectures_and_worker_counts_are_refused(spark, train):
    df = spark.range(4).select(F.col("id").alias("h"), F.array(F.col("id").cast("float")).alias("x"))
    with pytest.raises(ConfigError, match="dense and batchnorm"):
        train(df, "x", "h", {"type": "aegmm", "encoder_layers": [4], "latent_dim": 2}, 1, 2)
    with pytest.raises(ConfigError, match="workers"):
        train(df, "x", "h", CONFIG, 1, 0)


def test_data_parallel_backends_refuse_other_architectures_before_any_work(transactions):
    from segae_spark.pipeline import SegmentAE

    with pytest.raises(ConfigError, match="use trainingBackend='per_segment'"):
        SegmentAE(trainingBackend="tf_distribute", autoencoder={"type": "ensemble"}).fit(transactions)


@pytest.mark.skipif(not HOROVOD_MISSING, reason="Horovod is installed here")
def test_horovod_backend_is_refused_with_how_to_get_it(transactions):
    from segae_spark.pipeline import SegmentAE

    with pytest.raises(ConfigError, match=r"make venv-horovod.*tf_distribute"):
        SegmentAE(trainingBackend="horovod").fit(transactions)


def test_horovod_ranks_read_disjoint_shares_of_the_staged_rows(spark, tmp_path):
    """Each rank reads the part files of its partitions; together they read every row once."""
    from segae_spark.training.horovod_worker import read_share

    df = spark.range(200).select(F.xxhash64("id").alias("h"), F.array(F.col("id").cast("float"), F.lit(1.0).cast("float")).alias("x"))
    path = str(tmp_path / "rows")
    df.repartition(3, "h").write.parquet(path)
    shares = [read_share(path, "x", rank, 2) for rank in range(2)]
    assert all(len(share) for share in shares)
    assert sorted(np.concatenate(shares)[:, 0].tolist()) == list(range(200))
    assert read_share("file:" + path, "x", 0, 1).shape == (200, 2)
    with pytest.raises(FileNotFoundError, match="staging_dir"):
        read_share(str(tmp_path / "elsewhere"), "x", 0, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_segmentae_trains_a_large_model_data_parallel_and_scores_like_the_driver(transactions, backend, tmp_path):
    """Shared mode on the synthetic transactions: the one model has more rows than maxRowsPerSegment."""
    from segae_spark.pipeline import SegmentAE

    common = dict(labelCol="is_fraud", nClusters=2, clusterRuns=1, trainingMode="shared", seed=3, scaler="standard",
                  autoencoder={"hidden_layers": [16, 8], "epochs": 6, "batch_size": 128})  # fmt: skip
    staging = tmp_path / "staging"
    staging.mkdir()
    parallel = SegmentAE(
        trainingBackend=backend, maxRowsPerSegment=1000, dataParallelWorkers=2, stagingDir=str(staging), **common
    ).fit(transactions)
    assert list(staging.iterdir()) == []  # horovod's staged rows are removed
    driver = SegmentAE(trainingBackend="local", maxRowsPerSegment=100_000, **common).fit(transactions)
    assert {s["backend"] for s in parallel.segment_summary()} == {backend}
    assert {s["backend"] for s in driver.segment_summary()} == {"local"}
    stats = parallel.artifact.models["shared"].training
    assert stats["workers"] == 2 and stats["rows"] == sum(s["rows"] for s in parallel.segment_summary())
    auc_parallel = parallel.evaluation(transactions, "is_fraud")["global"]["roc_auc"]
    auc_driver = driver.evaluation(transactions, "is_fraud")["global"]["roc_auc"]
    assert auc_parallel > 0.8
    assert abs(auc_parallel - auc_driver) <= 0.01, (auc_parallel, auc_driver)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_moving_statistics_agree_across_workers(spark, backend, monkeypatch):
    """Also validates in chunks of 64 rows (tf_distribute): ~100 validation rows per worker, two calls each."""
    monkeypatch.setattr("segae_spark.training.data_parallel.VALIDATION_CHUNK_ROWS", 64)
    x = _low_rank(2000, 5)
    df = spark.createDataFrame([(i, row.tolist()) for i, row in enumerate(x)], "id long, x array<float>")
    config = {"type": "batchnorm", "hidden_layers": [8, 3], "epochs": 2, "batch_size": 128, "validation_split": 0.1}
    result = TRAIN[backend](df.withColumn("h", F.xxhash64("id")), "x", "h", config, SEED, workers=2)
    assert result.workers[0]["digest"] == result.workers[1]["digest"]  # moving mean and variance included
    from segae_spark.models.autoencoders import autoencoder_config_from_dict

    single = train_autoencoder(x, autoencoder_config_from_dict(config), SEED)
    parallel_error = load_engine(result.npz).row_errors(x, "mse").mean()
    single_error = NumpyAutoencoder.from_keras(single.model).row_errors(x, "mse").mean()
    assert abs(parallel_error - single_error) <= 0.2 * single_error, (parallel_error, single_error)
