"""Samples per second of data-parallel training: 1 vs 2 workers, and one process.

    make bench-data-parallel                                   # 200,000 rows, 5 epochs, workers 1,2
    make bench-data-parallel DP_ARGS="--rows 50000 --workers 1,2,4"
    make bench-horovod                                         # --backend horovod, in .venv-horovod

The rows are the synthetic transactions' features after segae-spark's
preprocessing (standard scaler, one-hot categoricals), normal rows only: what
one large segment's model trains on. Every run trains the same dense
autoencoder ([32, 16, 8], global batch 256, 10 % validation, no early
stopping) for ``--epochs`` epochs:

* ``one process``: :func:`segae_spark.models.stacked.train_autoencoder` on the
  driver, with every core (the ``local`` backend's trainer); its loop time is
  an (epochs + 1)-epoch run's minus a 1-epoch run's, so setup is not counted;
* ``tf_distribute, N workers``: :func:`segae_spark.training.data_parallel.train_data_parallel`
  in N Spark barrier tasks, each reading its own partition, gradients
  averaged by TensorFlow's ``MultiWorkerMirroredStrategy`` every step;
* ``horovod, N workers`` (``--backend horovod``, in the Horovod environment):
  :func:`segae_spark.training.horovod_backend.train_horovod`, N ranks started
  by ``horovod.spark.run``, each reading its own staged Parquet files, Keras'
  ``fit`` with Horovod's ``DistributedOptimizer`` (Gloo all-reduce on CPU).

samples/s = training rows x epochs / seconds. ``loop s`` is the workers'
training loop alone (rank 0's); ``wall s`` adds the barrier stage, the
worker processes' start (TensorFlow import, collective setup) and
returning the model. Writes benchmarks/results/data_parallel.json and .md.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from segae_spark import generate_transactions, get_or_create_session
from segae_spark.features.preprocessing import FEATURES_COL, build_preprocessing
from segae_spark.features.schema import resolve_features
from segae_spark.models.dense import DenseAutoencoderConfig
from segae_spark.models.stacked import train_autoencoder
from segae_spark.training.data_parallel import train_data_parallel
from segae_spark.training.horovod_backend import train_horovod

from reporting import run_environment, versions_text, write_report

TRAIN = {"tf_distribute": train_data_parallel, "horovod": train_horovod}

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "data_parallel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--backend", choices=sorted(TRAIN), default="tf_distribute")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=RESULTS, help="results path without extension (.json and .md are written)")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    spark = get_or_create_session({"spark.sql.shuffle.partitions": "4"})
    total_start = time.perf_counter()

    data = generate_transactions(spark, args.rows, seed=args.seed).filter("is_fraud = 0")
    spec = resolve_features(data.schema, exclude=["transaction_id", "event_date", "is_fraud"])
    prepared = build_preprocessing(spec, scaler="standard").fit(data)
    rows = (
        prepared.transform(data)
        .select(F.xxhash64("transaction_id").alias("h"), vector_to_array(FEATURES_COL, "float32").alias("x"))
        .cache()
    )
    n = rows.count()
    config = {"hidden_layers": [32, 16, 8], "epochs": args.epochs, "batch_size": 256, "validation_split": 0.1,
              "early_stopping_patience": args.epochs}  # fmt: skip
    runs = []

    x = np.stack(rows.select("x").toPandas()["x"].to_numpy()).astype(np.float32)  # small: benchmark rows only
    # The loop alone: a 1-epoch run's time (graph build, first epoch) taken off, after a
    # warm-up run that pays for importing TensorFlow.
    timed = {}
    for epochs in (1, 1, args.epochs + 1):
        start = time.perf_counter()
        single = train_autoencoder(x, DenseAutoencoderConfig(**{**config, "epochs": epochs}), args.seed)
        timed[epochs] = time.perf_counter() - start
    loop = timed[args.epochs + 1] - timed[1]
    trained = single.rows - single.val_rows
    runs.append({"run": "one process (driver)", "workers": 1, "rows": single.rows, "epochs": args.epochs,
                 "loop_s": round(loop, 2), "wall_s": round(timed[args.epochs + 1], 2),
                 "samples_per_s": round(trained * args.epochs / loop), "final_loss": single.history["loss"][args.epochs - 1]})  # fmt: skip
    for workers in counts:
        start = time.perf_counter()
        result = TRAIN[args.backend](rows, "x", "h", config, args.seed, workers)
        wall = time.perf_counter() - start
        loop = result.workers[0]["seconds"]
        epochs = result.training["epochs_run"]
        trained = sum(w["train_rows"] for w in result.workers)
        runs.append({"run": f"{args.backend}, {workers} worker(s)", "workers": workers, "rows": n, "epochs": epochs,
                     "loop_s": round(loop, 2), "wall_s": round(wall, 2),
                     "samples_per_s": round(trained * epochs / loop), "final_loss": result.training["history"]["loss"][-1],
                     "devices": result.training["devices"]})  # fmt: skip
    total_s = round(time.perf_counter() - total_start, 1)

    lines = ["| run | rows | epochs | loop s | wall s | samples/s (loop) | final loss |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['run']} | {r['rows']:,} | {r['epochs']} | {r['loop_s']} | {r['wall_s']} | {r['samples_per_s']:,} | {r['final_loss']:.5f} |")
    table = "\n".join(lines)
    report = {
        **run_environment(),
        "spark_parallelism": spark.sparkContext.defaultParallelism,
        "backend": args.backend,
        "data": {"rows": args.rows, "normal_rows": n, "seed": args.seed, "features": int(x.shape[1])},
        "config": config,
        "runs": runs,
        "total_seconds": total_s,
    }
    header = (
        "# Data-parallel training: samples/s\n\n"
        + versions_text(report)
        + f"; {report['machine']['cpus']} CPUs, Spark parallelism {report['spark_parallelism']}, "
        f"{report['machine']['platform']}.\n\n"
        f"{n:,} normal synthetic transactions ({x.shape[1]} features), dense [32, 16, 8], global batch 256, "
        f"{args.epochs} epochs, 90 % of the rows trained on. Whole run {total_s:.0f} s.\n\n"
    )
    print(table)
    write_report(args.out, report, header + table, f"whole run {total_s:.0f} s; ")


if __name__ == "__main__":
    main()
