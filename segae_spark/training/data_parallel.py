"""Data-parallel training of one autoencoder across Spark barrier tasks (``tf_distribute``).

A segment too large for one task trains on every worker at once: its rows
are split by content hash into ``workers`` partitions, one Spark barrier
task each (all start together or none does), and each task trains on its own
partition only; no row goes through the driver. TensorFlow's
``MultiWorkerMirroredStrategy`` does the collective communication: each task
picks a free port, the tasks exchange ``host:port`` with
``BarrierTaskContext.allGather`` and put them in ``TF_CONFIG``, and each
starts :mod:`segae_spark.training.dp_worker` in a fresh interpreter (see
there for why, and for the training loop). Gradients are averaged every step,
so every worker ends with the same weights; the driver checks that from the
weight digests the tasks return, and rank 0 returns the model.

The global batch is the config's ``batch_size`` (each worker takes
``ceil(batch_size / workers)`` rows a step) and an epoch is as many steps as
one process would take over all the rows, so training matches a single
process's on the same data and epochs. Dense and batch-norm autoencoders.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import BinaryType, IntegerType, StringType, StructField, StructType

from segae_spark.errors import ConfigError
from segae_spark.features.arrays import feature_matrix
from segae_spark.models.autoencoders import autoencoder_config_from_dict
from segae_spark.models.dense import StackAutoencoderConfig, validation_rows
from segae_spark.progress import logger
from segae_spark.training.backends import task_threads

_RESULT_SCHEMA = StructType(
    [
        StructField("rank", IntegerType(), False),
        StructField("result", StringType(), False),
        StructField("npz", BinaryType(), True),
        StructField("keras", BinaryType(), True),
    ]
)

_RESULT_ARROW = to_arrow_schema(_RESULT_SCHEMA)

VALIDATION_CHUNK_ROWS = 65536
"""Validation rows a worker evaluates per call: a segment of millions of rows must not go through at once."""


@dataclass
class DataParallelModel:
    """What data-parallel training returns: rank 0's model and every worker's record.

    ``workers`` holds each rank's ``result.json`` (device, weight digest,
    history, rows, seconds); ``training`` the JSON-ready summary for the manifest.
    """

    npz: bytes
    keras: bytes
    workers: list[dict]
    training: dict = field(default_factory=dict)


def train_data_parallel(
    rows: DataFrame, features_col: str, hash_col: str, config, seed: int, workers: int
) -> DataParallelModel:
    """Train one ``config`` autoencoder on every row of ``rows`` with ``workers`` barrier tasks.

    ``rows`` holds a float array column ``features_col`` and a long
    ``hash_col`` (the row's content hash: it decides which worker gets the
    row, and the order within it, so the input's order does not matter).
    The cluster needs ``workers`` free task slots at once (Spark refuses a
    barrier stage it cannot schedule whole).
    """
    config = checked_request(config, workers)
    start = time.perf_counter()
    parts = worker_partitions(rows, features_col, hash_col, workers)
    task = _BarrierTask(features_col, config.to_dict(), seed, workers, task_threads(rows.sparkSession, workers))
    logger.info("data-parallel training: %d barrier task(s), %s", workers, config.label)
    records = parts.mapInArrow(task, _RESULT_SCHEMA, barrier=True).collect()  # small: one row per worker
    results = [json.loads(r["result"]) for r in records]
    first = next((r for r in records if r["rank"] == 0), records[0])  # assembled() refuses a missing rank 0
    return assembled("tf_distribute", results, bytes(first["npz"]), bytes(first["keras"]), seed, start)


def worker_partitions(rows: DataFrame, features_col: str, hash_col: str, workers: int) -> DataFrame:
    """The rows in ``workers`` partitions by content hash, sorted by it: partition i is worker i's share,
    the same whatever order the input came in."""
    return rows.select(hash_col, features_col).repartition(workers, hash_col).sortWithinPartitions(hash_col)


def checked_request(config, workers: int) -> StackAutoencoderConfig:
    """The autoencoder config, refused unless data-parallel training supports it and ``workers`` is >= 1."""
    config = autoencoder_config_from_dict(config)
    if not isinstance(config, StackAutoencoderConfig):
        raise ConfigError(f"data-parallel training supports dense and batchnorm autoencoders, got type {config.type!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    return config


def assembled(backend: str, results: list[dict], npz: bytes, keras: bytes, seed: int, start: float) -> DataParallelModel:
    """Check every worker's record (ranks 0..N-1, one weight digest) and summarise rank 0's training."""
    results = sorted(results, key=lambda r: r["rank"])
    workers = len(results)
    if [r["rank"] for r in results] != list(range(workers)):
        raise RuntimeError(f"data-parallel training returned ranks {[r['rank'] for r in results]}, expected 0..{workers - 1}")
    digests = {r["digest"] for r in results}
    if len(digests) != 1:
        raise RuntimeError(f"data-parallel workers ended with different weights (digests {sorted(digests)})")
    lead = results[0]
    history = lead["history"]
    best = lead["best_epoch"]
    training = {
        "backend": backend,
        "workers": workers,
        "devices": [r["device"] for r in results],
        "keras_version": lead["keras_version"],  # a .keras file saved by Keras 2 (horovod) does not load in Keras 3
        "seed": seed,
        "rows": sum(r["rows"] for r in results),
        "epochs_run": lead["epochs_run"],
        "best_epoch": best,
        "train_loss": history["loss"][best],
        "val_loss": history["val_loss"][best] if "val_loss" in history else None,
        "history": history,
        "seconds": round(time.perf_counter() - start, 3),
    }
    logger.info(
        "data-parallel training (%s): %d rows on %d worker(s) %s, %d epoch(s), loss %.6g, %.1fs",
        backend, training["rows"], workers, training["devices"], training["epochs_run"], training["train_loss"], training["seconds"],
    )  # fmt: skip
    return DataParallelModel(npz, keras, results, training)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when its task's Python process dies (Spark kills the barrier
    stage's tasks when one fails; a worker left waiting on a collective would hang forever)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the worker then ends with its collective's timeout
        pass


class _BarrierTask:
    """The barrier task: gather the workers' addresses and row counts, run one dp_worker, return its result."""

    def __init__(self, features_col: str, config: dict, seed: int, workers: int, threads: int):
        self.features_col, self.config, self.seed, self.workers, self.threads = features_col, config, seed, workers, threads
        self.validation_chunk_rows = VALIDATION_CHUNK_ROWS

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        rank = context.partitionId()
        batches = [b for b in batches if b.num_rows]
        table = pa.Table.from_batches(batches) if batches else None
        x = feature_matrix(table.column(self.features_col), table.num_rows) if table else np.zeros((0, 0), np.float32)
        config = autoencoder_config_from_dict(self.config)
        n_val = validation_rows(len(x), config.validation_split) if len(x) >= 2 else 0
        host = context.getTaskInfos()[rank].address.rsplit(":", 1)[0]
        mine = {"rank": rank, "address": f"{host}:{_free_port()}", "host": host, "rows": len(x), "val_rows": n_val}
        everyone = sorted((json.loads(m) for m in context.allGather(json.dumps(mine))), key=lambda m: m["rank"])
        too_few = [m["rank"] for m in everyone if m["rows"] - m["val_rows"] < 1]
        if too_few:
            raise ConfigError(f"data-parallel worker(s) {too_few} got no training rows: use fewer workers for this segment")
        train_rows = sum(m["rows"] - m["val_rows"] for m in everyone)
        local_batch = math.ceil(config.batch_size / self.workers)
        with tempfile.TemporaryDirectory(prefix="segae-dp-") as tmp:
            np.save(os.path.join(tmp, "rows.npy"), x, allow_pickle=False)
            spec = {
                "rows": os.path.join(tmp, "rows.npy"),
                "out": tmp,
                "config": self.config,
                "seed": self.seed,
                "rank": rank,
                "local_rank": [m["host"] for m in everyone[:rank]].count(host),
                "val_rows": n_val,
                "global_val_rows": sum(m["val_rows"] for m in everyone),
                "max_val_rows": max(m["val_rows"] for m in everyone),
                "validation_chunk_rows": self.validation_chunk_rows,
                "local_batch": local_batch,
                "threads": self.threads,
                "steps": math.ceil(train_rows / (local_batch * self.workers)),
            }
            with open(os.path.join(tmp, "spec.json"), "w", encoding="utf-8") as fh:
                json.dump(spec, fh)
            env = {
                **os.environ,
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": [m["address"] for m in everyone]}, "task": {"type": "worker", "index": rank}}
                ),
                "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            }
            gpus = context.resources().get("gpu")
            if gpus is not None and gpus.addresses:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)  # Spark's GPU for this task
            done = subprocess.run(
                [sys.executable, "-m", "segae_spark.training.dp_worker", os.path.join(tmp, "spec.json")],
                env=env, capture_output=True, text=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"data-parallel worker {rank} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
            with open(os.path.join(tmp, "result.json"), encoding="utf-8") as fh:
                result = fh.read()
            npz = keras_bytes = None
            if rank == 0:
                with open(os.path.join(tmp, "model.npz"), "rb") as fh:
                    npz = fh.read()
                with open(os.path.join(tmp, "model.keras"), "rb") as fh:
                    keras_bytes = fh.read()
        yield pa.RecordBatch.from_pylist([{"rank": rank, "result": result, "npz": npz, "keras": keras_bytes}], schema=_RESULT_ARROW)
