"""Where the autoencoders train: in parallel Spark tasks, or on the driver.

``per_segment`` (the default) spreads the models over Spark tasks, at most
one task per task slot of the cluster: the shared model (if any) alone in
its task, the per-segment models balanced by rows over the others. Each
task receives only its models' bounded samples and trains them together
(:func:`~segae_spark.training.segments.train_model_group`: one stacked
computation for dense and batchnorm autoencoders, each exactly as if alone,
so the models do not depend on how many tasks there were). The weights come
back as ``.npz`` / ``.keras`` bytes in an Arrow binary column, never as
pickles. ``local`` brings the samples to the driver and trains there, which
is simplest on a laptop and in tests.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from segae_spark.errors import ConfigError
from segae_spark.features.arrays import feature_matrix
from segae_spark.models.autoencoders import AutoencoderConfig, autoencoder_config_from_dict
from segae_spark.models.reconstruction import THRESHOLD_METRICS
from segae_spark.progress import logger
from segae_spark.training.sampling import cap_by_hash, sample_filter, sample_segments
from segae_spark.training.segments import SHARED_MODEL, TrainedModel, group_samples, model_seed, train_model_group

TRAINING_BACKENDS = ("per_segment", "local", "tf_distribute", "horovod")
# The backends that train a model with more than max_rows rows data-parallel, on all of them.
DATA_PARALLEL_BACKENDS = ("tf_distribute", "horovod")

_MODEL = "__segae_model"
_KEY = "__segae_model_key"
_RESULT_SCHEMA = StructType(
    [
        StructField("model", StringType(), False),
        StructField("npz", BinaryType(), True),  # None: a user model only Keras can score
        StructField("keras", BinaryType(), False),
        StructField("training", StringType(), False),
        StructField("segments", ArrayType(IntegerType()), False),
        StructField("errors", ArrayType(ArrayType(DoubleType())), False),
    ]
)

_RESULT_ARROW_SCHEMA = to_arrow_schema(_RESULT_SCHEMA)

# (models by name, {segment: {metric: sorted training errors}})
TrainingOutput = tuple[dict[str, TrainedModel], dict[int, dict[str, np.ndarray]]]


def train_models(
    backend: str,
    assigned: DataFrame,
    columns: tuple[str, str, str],
    counts: dict[int, int],
    plan: dict[int, str],
    config: AutoencoderConfig,
    seed: int,
    max_rows: int,
    min_rows: int,
    workers: int = 0,
    staging_dir: str = "",
) -> TrainingOutput:
    """Train every model of ``plan``; return the models and each segment's training errors.

    ``columns`` names the (segment, hash, feature array) columns of
    ``assigned``. The errors are ``{segment: {metric: sorted errors}}`` under
    the segment's model. A segment with fewer than ``min_rows`` training rows
    gets the errors of all its model's training rows instead: a threshold from
    a handful of errors would mean nothing.

    With ``tf_distribute`` or ``horovod``, a model with more than
    ``max_rows`` training rows trains on all of them, data-parallel across
    ``workers`` tasks (0: every task slot; see :mod:`.data_parallel` and
    :mod:`.horovod_backend`, which stages the rows under ``staging_dir``);
    the others train as with ``per_segment``. Each model's ``training``
    records its backend.
    """
    if backend not in TRAINING_BACKENDS:
        raise ConfigError(f"training backend must be one of {TRAINING_BACKENDS}, got {backend!r}")
    names = sorted(set(plan.values()))
    logger.info("train: %d model(s) %s for %d segment(s), backend=%s", len(names), names, len(plan), backend)
    start = time.perf_counter()
    big = _data_parallel_models(plan, counts, max_rows) if backend in DATA_PARALLEL_BACKENDS else []
    # Every segment's sample stays in: a shared model trains on all of them.
    rest = {seg: name for seg, name in plan.items() if name not in big}
    models, errors = {}, {}
    if rest and backend == "local":
        models, errors = _train_on_driver(assigned, columns, counts, rest, config, seed, max_rows)
    elif rest:
        models, errors = _train_in_tasks(assigned, columns, counts, rest, config, seed, max_rows)
    for name in models:
        models[name].training["backend"] = "local" if backend == "local" else "per_segment"
    for name in big:
        segments = sorted(seg for seg, n in plan.items() if n == name)
        models[name], by_segment = _train_one_data_parallel(
            backend, assigned, columns, counts, segments, name, config, seed, max_rows, workers, staging_dir
        )
        errors.update({(name, seg): e for seg, e in by_segment.items()})
    for done, name in enumerate(names, start=1):
        t = models[name].training
        logger.info(
            "train: model %d/%d %s done (rows=%d, epochs=%s, loss=%s, %.1fs)",
            done, len(names), name, t["rows"], t["epochs_run"], t["train_loss"], t["seconds"],
        )
    logger.info("train: %d model(s) in %.1fs", len(names), time.perf_counter() - start)
    return models, {
        seg: errors[(plan[seg], seg)] if counts[seg] >= min_rows else _all_errors(errors, plan[seg]) for seg in plan
    }


def _data_parallel_models(plan: dict[int, str], counts: dict[int, int], max_rows: int) -> list[str]:
    """The models with more training rows than one task samples: those the data-parallel backends train on all rows."""
    rows: dict[str, int] = {}
    for seg, name in plan.items():
        rows[name] = rows.get(name, 0) + counts[seg]
    return sorted(name for name, n in rows.items() if n > max_rows)


def _train_one_data_parallel(backend, assigned, columns, counts, segments, name, config, seed, max_rows, workers, staging_dir) -> tuple:
    """One model on all its segments' rows, data-parallel; its threshold errors from the usual bounded samples."""
    from segae_spark.models.numpy_engine import load_engine
    from segae_spark.training.data_parallel import train_data_parallel
    from segae_spark.training.horovod_backend import train_horovod

    segment_col, hash_col, features_col = columns
    spark = assigned.sparkSession
    if workers <= 0:
        workers = task_slots(spark)
    rows = assigned.filter(F.col(segment_col).isin(segments))
    if backend == "horovod":
        result = train_horovod(rows, features_col, hash_col, config, model_seed(name, seed), workers, staging_dir)
    else:
        result = train_data_parallel(rows, features_col, hash_col, config, model_seed(name, seed), workers)
    sub = {seg: counts[seg] for seg in segments}
    samples = sample_segments(rows, segment_col, hash_col, features_col, sub, max_rows)
    engine = load_engine(result.npz)
    errors = {seg: {m: np.sort(engine.row_errors(samples[seg], m)) for m in THRESHOLD_METRICS} for seg in segments if len(samples[seg])}
    training = {**result.training, "type": config.type, "segments": segments}
    return TrainedModel(name, result.npz, result.keras, training), errors


def _all_errors(errors: dict, name: str) -> dict[str, np.ndarray]:
    per_segment = [e for (model, _), e in sorted(errors.items()) if model == name]
    return {m: np.sort(np.concatenate([e[m] for e in per_segment])) for m in THRESHOLD_METRICS}


def _train_on_driver(assigned, columns, counts, plan, config, seed, max_rows) -> tuple[dict, dict]:
    segment_col, hash_col, features_col = columns
    samples = sample_segments(assigned, segment_col, hash_col, features_col, counts, max_rows)
    groups = group_samples(samples, plan)
    models, errors = {}, {}
    for names in _task_groups(plan, counts, max_rows, own_slots=1):
        for name, (model, by_segment) in train_model_group({n: groups[n] for n in names}, config, seed).items():
            models[name] = model
            errors.update({(name, seg): e for seg, e in by_segment.items()})
    return models, errors


def _task_groups(plan: dict[int, str], counts: dict[int, int], max_rows: int, own_slots: int) -> list[list[str]]:
    """The models each training task trains: the shared model alone (its sample
    is the union of all segments'), the per-segment models spread over at most
    ``own_slots`` tasks, largest first onto the task with the fewest rows so far."""
    groups: list[list[str]] = [[SHARED_MODEL]] if SHARED_MODEL in plan.values() else []
    own = sorted(((min(counts[seg], max_rows), name) for seg, name in plan.items() if name != SHARED_MODEL), key=lambda t: (-t[0], t[1]))
    bins: list[list[str]] = [[] for _ in range(max(1, min(len(own), own_slots)))]
    loads = [0] * len(bins)
    for rows, name in own:
        i = loads.index(min(loads))
        bins[i].append(name)
        loads[i] += rows
    return groups + [sorted(b) for b in bins if b]


def _partition_keys(spark, partitions: int) -> list[int]:
    """For each partition p, a long key that Spark's hash partitioning sends to p.

    So that ``repartition(n, key)`` puts each model alone in its own task
    (plain model indices could collide under the hash).
    """
    rows = (
        spark.range(0, 64 * partitions + 64)
        .select("id", F.expr(f"pmod(hash(id), {partitions})").alias("p"))
        .groupBy("p")
        .agg(F.min("id").alias("key"))
        .collect()  # small: one row per partition
    )
    keys = {int(r["p"]): int(r["key"]) for r in rows}
    return [keys[p] for p in range(partitions)]


def _train_in_tasks(assigned, columns, counts, plan, config, seed, max_rows) -> tuple[dict, dict]:
    segment_col, hash_col, features_col = columns
    spark = assigned.sparkSession
    slots = task_slots(spark)
    shared = SHARED_MODEL in plan.values()
    tasks = _task_groups(plan, counts, max_rows, own_slots=max(1, slots - shared))
    logger.info("train: %d training task(s): %s", len(tasks), tasks)
    keys = _partition_keys(spark, len(tasks))
    task_key = {name: keys[t] for t, names in enumerate(tasks) for name in names}
    sampled = assigned.filter(sample_filter(counts, max_rows, segment_col, hash_col)).select(
        segment_col, hash_col, features_col
    )
    parts = []
    if SHARED_MODEL in task_key:
        parts.append(sampled.withColumn(_MODEL, F.lit(SHARED_MODEL)))
    own = {seg: name for seg, name in plan.items() if name != SHARED_MODEL}
    if own:
        name_of = F.create_map(*[F.lit(x) for seg, name in sorted(own.items()) for x in (seg, name)])
        parts.append(sampled.filter(F.col(segment_col).isin(sorted(own))).withColumn(_MODEL, name_of[F.col(segment_col)]))
    key_of = F.create_map(*[F.lit(x) for name, key in sorted(task_key.items()) for x in (name, key)])
    grouped = functools.reduce(DataFrame.unionByName, parts).withColumn(_KEY, key_of[F.col(_MODEL)].cast("long"))
    task = functools.partial(
        _train_partition,
        columns=columns,
        config=config.to_dict(),
        seed=seed,
        max_rows=max_rows,
        threads=task_threads(spark, len(tasks)),
    )
    rows = grouped.repartition(len(tasks), _KEY).mapInArrow(task, _RESULT_SCHEMA).collect()  # small: one row per model
    models, errors = {}, {}
    for r in rows:
        npz = bytes(r["npz"]) if r["npz"] is not None else None
        models[r["model"]] = TrainedModel(r["model"], npz, bytes(r["keras"]), json.loads(r["training"]))
        for i, seg in enumerate(r["segments"]):
            errors[(r["model"], int(seg))] = {
                m: np.asarray(r["errors"][i * len(THRESHOLD_METRICS) + j], dtype=np.float64)
                for j, m in enumerate(THRESHOLD_METRICS)
            }
    missing = sorted(set(task_key) - set(models))
    if missing:
        raise RuntimeError(f"training tasks returned no result for model(s) {missing}")
    return models, errors


def _task_cpus(spark) -> int:
    return int(spark.conf.get("spark.task.cpus", "1") or 1)


def task_slots(spark) -> int:
    """How many tasks the cluster runs at once: its default parallelism over ``spark.task.cpus``."""
    return max(1, spark.sparkContext.defaultParallelism // _task_cpus(spark))


def task_threads(spark, tasks: int) -> int:
    """TensorFlow threads per training task: the task's CPUs, or a whole executor for a lone task.

    Several tasks share the executors, so each keeps to its task's CPUs; a
    single task (shared mode) runs alone and may use every core of its executor.
    """
    task_cpus = _task_cpus(spark)
    if tasks > 1:
        return task_cpus
    executor_cores = spark.conf.get("spark.executor.cores", None)
    if executor_cores:
        return max(task_cpus, int(executor_cores))
    local = spark.sparkContext.master.startswith("local")
    return max(task_cpus, spark.sparkContext.defaultParallelism if local else task_cpus)


def limit_threads(threads: int) -> None:
    """Keep TensorFlow to the task's CPUs, so parallel tasks do not oversubscribe the node."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this reused worker process
        pass


def _train_partition(
    batches: Iterator[pa.RecordBatch], columns, config: dict, seed: int, max_rows: int, threads: int
) -> Iterator[pa.RecordBatch]:
    """Executor side: train together the models whose rows this partition holds."""
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return
    segment_col, hash_col, features_col = columns
    table = pa.Table.from_batches(batches)
    model_of_row = np.asarray(table.column(_MODEL).to_pylist(), dtype=object)
    segments = table.column(segment_col).to_numpy()
    hashes = table.column(hash_col).to_numpy()
    matrix = feature_matrix(table.column(features_col), len(segments))
    groups = {}
    for name in sorted(set(model_of_row)):
        rows = model_of_row == name
        groups[name] = cap_by_hash(segments[rows], hashes[rows], matrix[rows], max_rows)
    limit_threads(threads)
    trained = train_model_group(groups, autoencoder_config_from_dict(config), seed)
    for name, (model, errors) in trained.items():
        order = sorted(errors)
        yield pa.RecordBatch.from_pylist(
            [
                {
                    "model": name,
                    "npz": model.npz,
                    "keras": model.keras,
                    "training": json.dumps(model.training, sort_keys=True),
                    "segments": order,
                    "errors": [errors[s][m].tolist() for s in order for m in THRESHOLD_METRICS],
                }
            ],
            schema=_RESULT_ARROW_SCHEMA,
        )
