"""One local Spark session for the whole test run, plus small shared fixtures."""

from __future__ import annotations

import pytest

from segae_spark.session import get_or_create_session


@pytest.fixture(scope="session")
def spark():
    session = get_or_create_session(
        {
            "spark.master": "local[2]",
            "spark.app.name": "segae-spark-tests",
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "4",
        }
    )
    yield session
    session.stop()


# Small but real: 4 segments, a few epochs; shared by the pipeline and scoring tests.
FAST_AUTOENCODER = {"hidden_layers": [16, 8], "epochs": 8, "batch_size": 128}


@pytest.fixture(scope="session")
def transactions(spark):
    from segae_spark.data import generate_transactions

    return generate_transactions(spark, 6000, seed=7).cache()


@pytest.fixture(scope="session")
def fitted_model(transactions):
    from segae_spark.pipeline import SegmentAE

    estimator = SegmentAE(
        labelCol="is_fraud",
        nClusters=3,
        autoencoder=FAST_AUTOENCODER,
        maxRowsPerSegment=1500,
        minRowsPerSegment=50,
        thresholdRatio=2.0,
        seed=11,
    )
    return estimator.fit(transactions)


@pytest.fixture(scope="session")
def saved_model_dir(fitted_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "segae")
    fitted_model.save(path)
    return path
