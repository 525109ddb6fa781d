"""Scoring throughput of segae-spark: rows/s of the numpy engine and of the Spark transform.

    make bench                      # 1,000,000 rows
    make bench BENCH_ARGS="--rows 200000"

Trains a small model on the synthetic transactions, then times (1) the
per-batch numpy scoring function alone on Arrow batches in this process and
(2) the full ``SegmentAEModel.transform`` (preprocessing, segment assignment,
Arrow transfer, numpy scoring, the default output columns: top 3 features,
model id, scoring time) into Spark's no-op sink, after an untimed warm-up on
10,000 rows (Python workers start and decode the weights once). Prints a table and
writes benchmarks/results/scoring_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import pyarrow as pa

from segae_spark import SegmentAE, __version__, generate_transactions, get_or_create_session
from segae_spark.models.numpy_engine import load_engine
from segae_spark.scoring import OutputColumns, ScoringPlan, score_batch

RESULTS = os.path.join(os.path.dirname(__file__), "results", "scoring_throughput.json")


def bench_engine(model, rows: int, batch_rows: int = 10_000) -> float:
    """rows/s of score_batch alone (numpy forward pass + errors + flags + top features, as transform does)."""
    segments = [s["segment"] for s in model.artifact.segments]
    d = len(model.feature_names)
    rng = np.random.default_rng(0)
    x = rng.random((batch_rows, d), dtype=np.float32)
    batch = pa.RecordBatch.from_pydict(
        {
            "seg": pa.array(rng.choice(segments, batch_rows).astype(np.int32)),
            "x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d).cast(pa.list_(pa.float32())),
        }
    )
    plan = ScoringPlan(
        model_id=model.model_id,
        segment_models={s["segment"]: s["model"] for s in model.artifact.segments},
        thresholds=model.thresholds,
        metric="mse",
        features_col="x",
        segment_col="seg",
        passthrough=(),
        outputs=OutputColumns(),
        top_features=model.getOrDefault(model.topFeatures),
        feature_names=tuple(model.feature_names),
    )
    engines = {name: load_engine(m.npz) for name, m in model.artifact.models.items()}
    batches = max(1, rows // batch_rows)
    start = time.perf_counter()
    for _ in range(batches):
        score_batch(batch, plan, engines)
    return batches * batch_rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    spark = get_or_create_session()
    train = generate_transactions(spark, 50_000, seed=args.seed)
    start = time.perf_counter()
    model = SegmentAE(
        labelCol="is_fraud", nClusters=4, autoencoder={"hidden_layers": [32, 16, 8], "epochs": 10},
        maxRowsPerSegment=5000, seed=args.seed,
    ).fit(train)
    fit_seconds = time.perf_counter() - start

    data = generate_transactions(spark, args.rows, seed=args.seed + 1).cache()
    data.count()
    start = time.perf_counter()
    data.write.format("noop").mode("overwrite").save()
    read_seconds = time.perf_counter() - start
    model.transform(data.limit(10_000)).write.format("noop").mode("overwrite").save()  # warm-up: workers load the model
    start = time.perf_counter()
    model.transform(data).write.format("noop").mode("overwrite").save()
    transform_seconds = time.perf_counter() - start
    engine_rps = bench_engine(model, min(args.rows, 500_000))

    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "segae_spark": __version__,
        "spark_parallelism": spark.sparkContext.defaultParallelism,
        "rows": args.rows,
        "features": len(model.feature_names),
        "fit_seconds_50k_rows": round(fit_seconds, 2),
        "cached_scan_rows_per_s": round(args.rows / read_seconds),
        "transform_rows_per_s": round(args.rows / transform_seconds),
        "numpy_engine_rows_per_s": round(engine_rps),
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    print(f"{'measure':<34}{'value':>14}")
    for key in ("rows", "features", "fit_seconds_50k_rows", "cached_scan_rows_per_s", "transform_rows_per_s", "numpy_engine_rows_per_s"):
        print(f"{key:<34}{results[key]:>14,}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
