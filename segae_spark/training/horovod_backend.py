"""Data-parallel training of one autoencoder with Horovod (``trainingBackend="horovod"``).

The original SegmentAE-on-Spark design trained large segments with Horovod;
this backend keeps that path for clusters that already run it. The
segment's rows are written once as Parquet (``workers`` part files, split by
content hash and sorted by it, so the input's order does not matter) to a
staging directory every executor can read, then ``horovod.spark.run`` starts
``workers`` ranks in Spark tasks and each rank reads only its own part files
(:mod:`segae_spark.training.horovod_worker`); no row goes through the driver.
Horovod's ring all-reduce (Gloo on CPU, NCCL on GPU) averages the gradients.

Horovod's last release (0.28.1) builds only against TensorFlow 2.15 / Keras
2, so this backend runs in its own environment (``make venv-horovod``,
docs/horovod.md); elsewhere it is refused with a ConfigError before any work
starts, and ``tf_distribute`` is the maintained alternative.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import time
import uuid

from pyspark.sql import DataFrame

from segae_spark.errors import ConfigError
from segae_spark.io.hadoop_files import delete_path
from segae_spark.progress import logger
from segae_spark.training.backends import task_threads
from segae_spark.training.data_parallel import DataParallelModel, assembled, checked_request, worker_partitions


def horovod_missing() -> str | None:
    """Why the horovod backend cannot run in this environment, or None when it can."""
    if importlib.util.find_spec("horovod") is None:
        found = "Horovod is not installed"
    else:
        try:
            keras_version = importlib.metadata.version("keras")
        except importlib.metadata.PackageNotFoundError:
            keras_version = "none"
        if keras_version.startswith("2."):
            return None
        found = f"Keras is {keras_version}; horovod.tensorflow.keras needs Keras 2"
    return (
        f"trainingBackend='horovod' needs Horovod 0.28 with TensorFlow 2.15 / Keras 2 ({found}): "
        f"build that environment with `make venv-horovod` (see docs/horovod.md), "
        f"or use trainingBackend='tf_distribute', which needs nothing more"
    )


def train_horovod(
    rows: DataFrame, features_col: str, hash_col: str, config, seed: int, workers: int, staging_dir: str = ""
) -> DataParallelModel:
    """Train one ``config`` autoencoder on every row of ``rows`` with ``workers`` Horovod ranks.

    ``rows`` holds a float array column ``features_col`` and a long
    ``hash_col`` (the row's content hash). ``staging_dir``: a directory every
    executor can read; empty means a temporary directory on the driver, which
    only a local master's executors can read. The staged rows are deleted
    afterwards, also when training fails.
    """
    config = checked_request(config, workers)
    missing = horovod_missing()
    if missing:
        raise ConfigError(missing)
    import horovod.spark

    from segae_spark.training.horovod_worker import train

    spark = rows.sparkSession
    start = time.perf_counter()
    path, owned = _staging_path(staging_dir)
    try:
        worker_partitions(rows, features_col, hash_col, workers).write.mode("errorifexists").parquet(path)
        logger.info("horovod training: %d rank(s), %s, rows staged at %s", workers, config.label, path)
        spec = {
            "path": path,
            "features_col": features_col,
            "config": config.to_dict(),
            "seed": seed,
            "threads": task_threads(spark, workers),
        }
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        results = horovod.spark.run(train, args=(spec,), num_proc=workers, env=env, verbose=0)
    finally:
        _remove(spark, path, owned)
    lead = next((r for r in results if r["rank"] == 0), results[0])  # assembled() refuses a missing rank 0
    records = [{k: v for k, v in r.items() if k not in ("npz", "keras")} for r in results]
    return assembled("horovod", records, lead.get("npz", b""), lead.get("keras", b""), seed, start)


def _staging_path(staging_dir: str) -> tuple[str, str | None]:
    """(where to write the rows, the local directory to remove afterwards or None for a user's directory)."""
    if not staging_dir:
        owned = tempfile.mkdtemp(prefix="segae-horovod-")
        return os.path.join(owned, "rows"), owned
    return f"{staging_dir.rstrip('/')}/segae-horovod-{uuid.uuid4().hex}", None


def _remove(spark, path: str, owned: str | None) -> None:
    if owned is not None:
        shutil.rmtree(owned, ignore_errors=True)
        return
    delete_path(spark, path)
