"""One rank of Horovod data-parallel training: the function ``horovod.spark.run`` runs.

Horovod starts it once per rank, in a fresh interpreter inside a Spark task
(:mod:`segae_spark.training.horovod_backend`). The rank reads its share of
the segment's rows from the staged Parquet files (the part files whose
partition index is ``rank`` modulo the world size), builds the same seeded
model as every other rank, and trains it with Keras' ``fit``: Horovod's
``DistributedOptimizer`` averages the gradients every step, rank 0's initial
weights are broadcast, validation losses are averaged (so every rank takes
the same early-stopping decision) and batch-norm moving statistics are
averaged after each epoch, so every rank ends with the same weights.

The global batch is the config's ``batch_size`` (``ceil(batch_size / size)``
rows per rank a step) and an epoch is as many steps as one process would take
over all the rows, as with ``tf_distribute``. Needs Horovod with TensorFlow
2.15 / Keras 2 (``make venv-horovod``).
"""

from __future__ import annotations

import math
import re
import time

import numpy as np

from segae_spark.training.dp_worker import model_files, pin_device, worker_record

_PART = re.compile(r"^part-(\d+)")


def arrow_location(uri: str) -> tuple:
    """(pyarrow filesystem, path) of a Spark path: Hadoop's ``s3a:`` is pyarrow's ``s3:``, ``file:`` is
    local, and DBFS (no pyarrow filesystem) is mounted at ``/dbfs`` on every Databricks node."""
    import pyarrow.fs as pafs

    uri = re.sub(r"^s3[an]://", "s3://", uri)
    if uri.startswith("dbfs:"):
        uri = "/dbfs/" + uri[len("dbfs:"):].lstrip("/")
    elif uri.startswith("file:"):
        uri = "/" + uri[len("file:"):].lstrip("/")
    return pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)


def read_share(uri: str, features_col: str, rank: int, size: int) -> np.ndarray:
    """This rank's rows of the staged Parquet directory ``uri``, as a float32 matrix."""
    import socket

    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from segae_spark.features.arrays import feature_matrix

    fs, base = arrow_location(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base))
    except FileNotFoundError:
        infos = []
    parts = sorted((int(m.group(1)), info.path) for info in infos if (m := _PART.match(info.base_name)))
    if not parts:
        raise FileNotFoundError(
            f"the staged rows at {uri!r} are not visible on {socket.gethostname()}: set training.staging_dir "
            f"(stagingDir) to a directory every executor can read (HDFS, S3, DBFS, a shared mount)"
        )
    mine = [path for index, path in parts if index % size == rank]
    if not mine:
        return np.zeros((0, 0), np.float32)
    table = pq.read_table(mine, filesystem=fs, columns=[features_col])
    return feature_matrix(table.column(features_col), table.num_rows)


def train(spec: dict) -> dict:
    """Train this rank; every rank returns its record, rank 0 also the ``.npz`` and ``.keras`` bytes."""
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import keras
    import tensorflow as tf

    from segae_spark.models.autoencoders import autoencoder_config_from_dict
    from segae_spark.models.dense import split_rows, validation_rows
    from segae_spark.training.backends import limit_threads

    limit_threads(spec["threads"])
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    device = pin_device(tf, hvd.local_rank())
    config = autoencoder_config_from_dict(spec["config"])
    seed = spec["seed"]
    x = read_share(spec["path"], spec["features_col"], rank, size)
    n_val = validation_rows(len(x), config.validation_split) if len(x) >= 2 else 0
    everyone = hvd_tf.allgather_object((len(x), n_val, x.shape[1] if len(x) else 0))
    too_few = [r for r, (rows, val, _) in enumerate(everyone) if rows - val < 1 or (config.validation_split > 0 and val < 1)]
    if too_few:
        raise ValueError(f"horovod rank(s) {too_few} got too few rows {everyone}: use fewer workers for this segment")
    width = everyone[0][2]
    local_batch = math.ceil(config.batch_size / size)
    steps = math.ceil(sum(rows - val for rows, val, _ in everyone) / (local_batch * size))
    train_x, val_x = split_rows(x, seed + rank, n_val)
    start = time.perf_counter()

    keras.utils.set_random_seed(seed)  # every rank builds the same model; rank 0's weights are broadcast too
    tf.config.experimental.enable_op_determinism()
    model = config.build(width, seed)
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.Adam(config.learning_rate)), loss="mse")
    data = tf.constant(train_x)
    batches = (
        tf.data.Dataset.range(len(train_x))
        .shuffle(len(train_x), seed=seed + rank, reshuffle_each_iteration=True)
        .repeat()
        .batch(local_batch)
        .map(lambda i: (tf.gather(data, i), tf.gather(data, i)))
    )

    class SyncStatistics(keras.callbacks.Callback):
        """Batch-norm moving statistics averaged over the ranks after each epoch (Horovod's allreduce)."""

        def on_epoch_end(self, epoch, logs=None):
            for i, variable in enumerate(self.model.non_trainable_variables):
                variable.assign(hvd_tf.allreduce(variable, op=hvd_tf.Average, name=f"segae_statistics_{i}"))

    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True)
    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), SyncStatistics(), hvd.callbacks.MetricAverageCallback()]
    fitted = model.fit(
        batches,
        epochs=config.epochs,
        steps_per_epoch=steps,
        validation_data=(val_x, val_x) if val_x is not None else None,
        validation_batch_size=max(local_batch, 1024),
        callbacks=callbacks + ([stopper] if val_x is not None else []),
        verbose=0,
    )
    history = {name: [float(v) for v in values] for name, values in fitted.history.items() if name in ("loss", "val_loss")}
    if stopper.best_weights is not None:  # Keras 2 restores them only when it stopped early
        model.set_weights(stopper.best_weights)
    best_epoch = int(np.argmin(history["val_loss"])) if "val_loss" in history else len(history["loss"]) - 1
    result = worker_record(rank, device, model, history, best_epoch, start, len(x), len(train_x))
    if rank == 0:
        result["keras"], result["npz"] = model_files(config, width, seed, model.get_weights())
    return result
