"""One worker of data-parallel training, run as a subprocess of a Spark barrier task.

TensorFlow fixes its collective-communication setup when it starts, and a
Spark Python worker is reused across tasks (one that already ran TensorFlow
cannot join a ``MultiWorkerMirroredStrategy`` cluster), so each barrier task
starts this module in a fresh interpreter with ``TF_CONFIG`` naming every
worker (see :mod:`segae_spark.training.data_parallel`).

Every worker trains the same model on its own rows: each step it takes
``local_batch`` of its shuffled training rows (wrapping round when it has
fewer rows than the largest worker), and TensorFlow's collective all-reduce
averages the gradients, so every worker applies the same Adam update and all
end with the same weights. Batch-norm moving statistics are averaged the same
way after each epoch. Validation losses are summed over the workers, so every
worker takes the same early-stopping decision and restores the same best
epoch. The step is a ``GradientTape`` step under ``strategy.run`` (Keras 3's
``model.fit`` under this strategy is not reliable), and a whole epoch's steps
run as one compiled loop (1.5x the samples/s of a Python loop over steps).

Input: a JSON spec (paths, config, seed, rank, world size, steps) and the
worker's rows as a ``.npy`` file (read with ``allow_pickle=False``). Output
in the spec's ``out`` directory: ``result.json`` (history, weight digest)
and, on rank 0, ``model.npz`` (numpy engine) and ``model.keras``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time

import numpy as np


def pin_device(tf, local_rank: int) -> str:
    """One GPU per worker when TensorFlow sees any (Spark's assignment came in CUDA_VISIBLE_DEVICES), else CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    chosen = gpus[local_rank % len(gpus)]
    tf.config.set_visible_devices([chosen], "GPU")
    tf.config.experimental.set_memory_growth(chosen, True)
    return chosen.name


def weights_digest(weights: list[np.ndarray]) -> str:
    """SHA-256 of every weight array's float32 bytes, in order: equal digests, equal models."""
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return digest.hexdigest()


def train(spec: dict) -> dict:
    from segae_spark.models.autoencoders import autoencoder_config_from_dict
    from segae_spark.models.dense import split_rows
    from segae_spark.training.backends import limit_threads

    import keras
    import tensorflow as tf

    limit_threads(spec["threads"])  # the task's CPUs, so workers sharing a node do not oversubscribe it
    device = pin_device(tf, spec["local_rank"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    config = autoencoder_config_from_dict(spec["config"])
    rank, seed = spec["rank"], spec["seed"]
    x = np.load(spec["rows"], allow_pickle=False)
    train_x, val_x = split_rows(x, seed + rank, spec["val_rows"])
    width, local_batch, steps = x.shape[1], spec["local_batch"], spec["steps"]
    start = time.perf_counter()
    with strategy.scope():
        model = config.build(width, seed)
        optimizer = keras.optimizers.Adam(config.learning_rate)
        optimizer.build(model.trainable_variables)

    def replica_step(batch):
        with tf.GradientTape() as tape:
            error = tf.reduce_mean(tf.square(model(batch, training=True) - batch))
            loss = error + (tf.add_n(model.losses) if model.losses else 0.0)
        gradients = tape.gradient(loss, model.trainable_variables)
        gradients = tf.distribute.get_replica_context().all_reduce("mean", gradients)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    @tf.function
    def run_epoch(data, index):
        """Every step of an epoch in one compiled loop: ``index[s]`` are the rows of step s."""
        total = tf.constant(0.0)
        for s in tf.range(tf.shape(index)[0]):
            batch = tf.gather(data, index[s])
            total += strategy.reduce("mean", strategy.run(replica_step, args=(batch,)), axis=None)
        return total / tf.cast(tf.shape(index)[0], tf.float32)

    def replica_sync_statistics():
        context = tf.distribute.get_replica_context()
        values = context.all_reduce("mean", [tf.identity(v) for v in model.non_trainable_variables])
        for variable, value in zip(model.non_trainable_variables, values):
            variable.assign(value)
        return tf.constant(0.0)

    sync_statistics = tf.function(lambda: strategy.run(replica_sync_statistics))

    def replica_validation(rows):
        error = tf.reduce_sum(tf.reduce_mean(tf.square(model(rows, training=False) - rows), axis=-1))
        penalty = tf.add_n(model.losses) if model.losses else tf.constant(0.0)
        return error, penalty

    @tf.function(reduce_retracing=True)
    def validation(rows):
        error, penalty = strategy.run(replica_validation, args=(rows,))
        return strategy.reduce("sum", error, axis=None), strategy.reduce("mean", penalty, axis=None)

    data = tf.constant(train_x)
    history = {"loss": []} | ({"val_loss": []} if spec["global_val_rows"] else {})
    best, wait, best_epoch, best_weights = math.inf, 0, 0, None
    for epoch in range(config.epochs):
        order = np.random.default_rng([seed, epoch, rank]).permutation(len(train_x))
        index = order[np.arange(steps * local_batch).reshape(steps, local_batch) % len(order)]
        history["loss"].append(float(run_epoch(data, tf.constant(index, tf.int32))))
        if model.non_trainable_variables:
            sync_statistics()
        if not spec["global_val_rows"]:
            best_epoch = epoch
            continue
        rows = val_x if val_x is not None else np.zeros((0, width), np.float32)
        error = 0.0
        chunk = spec["validation_chunk_rows"]
        for first in range(0, spec["max_val_rows"], chunk):  # the same number of calls on every worker
            chunk_error, penalty = validation(tf.constant(rows[first : first + chunk]))
            error += float(chunk_error)
        val_loss = error / spec["global_val_rows"] + float(penalty)
        history["val_loss"].append(val_loss)
        # Keras' EarlyStopping, restoring the best epoch's weights.
        wait += 1
        if val_loss < best:
            best, wait, best_epoch, best_weights = val_loss, 0, epoch, [w.copy() for w in model.get_weights()]
        elif wait >= config.early_stopping_patience and epoch > 0:
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    result = worker_record(rank, device, model, history, best_epoch, start, len(x), len(train_x))
    if rank == 0:
        keras_bytes, npz = model_files(config, width, seed, model.get_weights())
        with open(os.path.join(spec["out"], "model.keras"), "wb") as fh:
            fh.write(keras_bytes)
        with open(os.path.join(spec["out"], "model.npz"), "wb") as fh:
            fh.write(npz)
    return result


def worker_record(rank: int, device: str, model, history: dict, best_epoch: int, start: float, rows: int, train_rows: int) -> dict:
    """What every data-parallel worker reports: its weight digest and rank 0's history for the manifest."""
    import keras

    return {
        "rank": rank,
        "device": device,
        "keras_version": keras.__version__,
        "digest": weights_digest(model.get_weights()),
        "history": history,
        "epochs_run": len(history["loss"]),
        "best_epoch": best_epoch,
        "seconds": round(time.perf_counter() - start, 3),
        "rows": int(rows),
        "train_rows": int(train_rows),
    }


def model_files(config, width: int, seed: int, weights: list[np.ndarray]) -> tuple[bytes, bytes]:
    """(``.keras``, ``.npz``) bytes of the trained weights in a freshly built model, without the
    distributed optimizer or strategy, so the file loads anywhere."""
    from segae_spark.models.autoencoders import keras_model_bytes
    from segae_spark.models.numpy_engine import NumpyAutoencoder

    plain = config.build(width, seed)
    plain.set_weights(weights)
    return keras_model_bytes(plain), NumpyAutoencoder.from_keras(plain).to_npz_bytes()


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    result = train(spec)
    with open(os.path.join(spec["out"], "result.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
