"""Scoring throughput of segae-spark: the Delta-to-Delta scoring job against its I/O floor and SegmentAE's driver loop.

    make bench                                            # 2,000,000 and 10,000,000 rows
    make bench BENCH_ARGS="--rows 200000 400000 --baseline-rows 50000"   # a quick check

Options: ``--repeats N`` (best of N timed runs per job), ``--breakdown`` (also
time parts of the scoring job into Spark's no-op sink: the scan, the JVM
preprocessing + segment assignment, transform without and with the top
features), ``--model DIR`` (score with a saved model instead of fitting one),
``--workdir DIR`` / ``--keep`` (where the tables go; keep them).

What one run does:

1. Fits a small model (50,000 synthetic rows, 4 segments, a 32-16-8 dense
   autoencoder, 10 epochs) in a child process and saves it; this process
   loads it, so neither the driver nor its Python workers have imported
   TensorFlow when the Spark jobs are measured (as with ``segae-spark score``).
2. For each ``--rows`` size: generates the synthetic transactions and writes
   them once as a Delta table partitioned by ``event_date`` (not timed), then
   times, after an untimed warm-up of both jobs on 10,000 rows:

   (a) the I/O floor: ``read_table(input)`` -> ``withColumn("c", lit(1.0))``
       -> ``write_table(mode="overwrite", partition_by=["event_date"])``:
       the same rows plus one constant column, through the same Delta writer;
   (b) the full scoring job, the data flow of ``segae-spark score --mode
       overwrite --partition-by event_date`` on a whole table:
       ``read_table(input)`` -> ``model.arrow_transform`` (preprocessing,
       segment assignment, numpy scoring, top 3 features, model id, scoring
       time) -> ``write_table(partition_by=["event_date"], commit_metadata={model id})``,
       which scores each batch in the Python task that writes it
       (the CLI's whole-table path also pins the input version and records
       the input path and version in the commit: no extra pass over the data).

   Both include the driver's Delta commit. rows/s = rows / wall seconds (the
   best of ``--repeats``); ratio = floor rows/s / scoring rows/s (goal <= 1.5).
   Each run also records the CPU seconds of the driver JVM (with a local
   master it runs the executors: Parquet reading, Arrow conversion) and of the
   Python workers (scoring and Parquet writing): the machine is saturated, so
   these say where each job's time goes.
   Peak memory per size, each high-water mark reset (``/proc/PID/clear_refs``)
   after the input is written (after a full JVM GC, and after the Python
   workers hand freed memory back to the OS, so the peaks are the jobs' own
   rather than what generating the input left) and read after the scoring
   job: the driver JVM
   (VmHWM; with a local master it also runs the executors), the Python driver
   (VmHWM), and the Python workers (each worker's VmHWM read by a small
   ``mapInArrow`` probe over enough tasks to reach every pooled worker;
   workers are reused, so these are the processes that scored and wrote).
   The peaks must not grow with rows: the largest size's peak may exceed the
   smallest's by at most max(15 %, 64 MiB). The JVM's RSS also depends on how
   far its garbage collector lets the heap expand before collecting (up to
   -Xmx, i.e. spark.driver.memory), so the jobs run with a 1 GiB driver heap
   (``--driver-memory``; segae-spark's session default is 4g): finishing every
   size within one fixed heap is the point, and the JVM's heap peak used and
   its live heap after a full GC are shown as well (information only).
   The 1-minute load average at the start and the end is recorded: on a
   shared machine the timings are low and noisy.
3. The baseline a SegmentAE user runs today, on ``--baseline-rows`` rows
   (200,000): the preprocessed feature matrix and segment of each row are
   computed with the model's Spark preprocessing and collected to the driver
   as a pandas DataFrame (not timed; SegmentAE's own pandas preprocessing and
   clustering would add to its time). Timed, per segment, as SegmentAE
   1.5.26's ``detections`` does it (segmentae/pipeline/segmentae.py,
   segmentae/pipeline/reconstruction.py): select the segment's rows with
   ``.loc``, Keras ``model.predict`` on them (default batch size 32,
   ``verbose=0``, predict function already traced by an untimed call), the
   row-by-row Python loop computing each row's MSE, MAE, RMSE and max error
   with scikit-learn (``compute_reconstruction_errors``), the metrics
   DataFrame, the per-column metrics, and the threshold comparison with
   ``Series.apply``. No I/O is included: the baseline starts from rows already
   in memory and keeps its flags in memory. Also reported, not used for the
   goal: a leaner loop (numpy MSE per row only, no scikit-learn), as a bound
   on how much of the baseline is SegmentAE's per-row metric overhead.
   Speedup = scoring job rows/s / baseline rows/s (goal >= 100).
4. The numpy scoring function alone on synthetic Arrow batches in this
   process (one core): an upper bound for the scoring part.

Prints a table and writes benchmarks/results/scoring_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from jvm_heap import JvmHeap

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "scoring_throughput")
WARM_UP_ROWS = 10_000
RATIO_GOAL = 1.5
SPEEDUP_GOAL = 100.0
# The jobs run in a 1 GiB driver heap at every size (the session default is 4g):
# with a fixed cap that suffices, the JVM's RSS shows what the jobs need, not how
# far G1 chose to grow a bigger heap before collecting.
DRIVER_MEMORY = "1g"
MEMORY_TOLERANCE = (0.15, 64.0)  # the largest size's peak may exceed the smallest's by max(15 %, 64 MiB)
MODEL_PARAMS = dict(
    labelCol="is_fraud", nClusters=4, autoencoder={"hidden_layers": [32, 16, 8], "epochs": 10}, maxRowsPerSegment=5000
)

_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- memory
def _status_kib(pid: int | str, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_mib(pid: int | str) -> float | None:
    """The process's peak resident set (VmHWM) in MiB; None where /proc cannot tell."""
    kib = _status_kib(pid, "VmHWM")
    if kib is None and str(pid) in ("self", str(os.getpid())):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return None if kib is None else kib / 1024


def reset_peak(pid: int | str) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _make_worker_probe(reset: bool):
    def probe(batches):
        import os
        import resource

        import pyarrow as pa

        for _ in batches:
            pass
        if reset:  # hand back what earlier jobs freed, so the peak measured next is the next jobs' own
            import ctypes
            import gc

            gc.collect()
            pa.default_memory_pool().release_unused()
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):
                pass

        def status_kib(key):
            try:
                with open("/proc/self/status", encoding="ascii") as fh:
                    for line in fh:
                        if line.startswith(key + ":"):
                            return int(line.split()[1])
            except OSError:
                return None
            return None

        peak = status_kib("VmHWM")
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = status_kib("VmRSS") or 0
        done = False
        if reset:
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                    fh.write("5")
                done = True
            except OSError:
                pass
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "peak_kib": [int(peak)], "rss_kib": [int(rss)], "reset": [done]})

    return probe


def probe_workers(spark, reset: bool) -> dict:
    """Peak RSS of the pooled Python workers (max over them), read inside a mapInArrow probe."""
    tasks = max(32, 8 * spark.sparkContext.defaultParallelism)
    rows = (
        spark.range(0, tasks, 1, tasks)
        .mapInArrow(_make_worker_probe(reset), "pid long, peak_kib long, rss_kib long, reset boolean")
        .collect()  # small: one row per probe task
    )
    peaks: dict[int, int] = {}
    for r in rows:
        peaks[r["pid"]] = max(peaks.get(r["pid"], 0), r["peak_kib"])
    return {
        "peak_mib": max(peaks.values()) / 1024,
        "peaks_mib": sorted((round(p / 1024, 1) for p in peaks.values()), reverse=True),
        "workers": len(peaks),
        "reset": all(r["reset"] for r in rows),
    }


# ------------------------------------------------------------------------ CPU
def _cpu_ticks(pid: str, children: bool) -> int:
    """utime + stime (and the reaped children's, when asked) of a process, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    own = int(fields[11]) + int(fields[12])
    return own + int(fields[13]) + int(fields[14]) if children else own


def cpu_seconds(jpid: int | None) -> dict:
    """CPU seconds used so far by the driver JVM (the executors too, with a local master), the
    pooled Python workers (the ``pyspark.daemon`` process tree; workers that exited count through
    their parent) and this Python process: where a job's CPU goes on a saturated machine."""
    workers = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                is_worker = b"pyspark.daemon" in fh.read()
        except OSError:
            continue
        if is_worker:
            workers += _cpu_ticks(pid, children=True)
    tick = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return {
        "jvm": None if jpid is None else _cpu_ticks(str(jpid), children=False) / tick,
        "python_workers": workers / tick,
        "driver_python": own.user + own.system,
    }


def jvm_pid(spark) -> int | None:
    try:
        return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:  # not a local JVM we can see (Spark Connect, ...)
        return None


# ------------------------------------------------------------------- the jobs
def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def io_floor(spark, source: str, target: str):
    from pyspark.sql import functions as F

    from segae_spark.io import read_table, write_table

    return write_table(read_table(spark, source).withColumn("c", F.lit(1.0)), target, mode="overwrite", partition_by=["event_date"])


def scoring_job(spark, model, source: str, target: str):
    """The data flow of ``segae-spark score --partition-by event_date`` on a whole table: read, transform, write."""
    from segae_spark.io import read_table, write_table

    return write_table(
        model.arrow_transform(read_table(spark, source)),
        target,
        mode="overwrite",
        partition_by=["event_date"],
        commit_metadata={"segae_spark.model_id": model.model_id},
    )


def best_of(repeats: int, fn, rows: int, what: str, jpid: int | None) -> dict:
    """The best of ``repeats`` runs, with the CPU seconds each process kind used in it."""
    runs = []
    for i in range(repeats):
        before = cpu_seconds(jpid)
        s, result = timed(fn)
        after = cpu_seconds(jpid)
        if result.rows != rows:
            raise RuntimeError(f"{what} wrote {result.rows} rows, expected {rows}")
        cpu = {k: None if after[k] is None else round(after[k] - before[k], 2) for k in after}
        runs.append((s, cpu))
        log(f"  {what} run {i + 1}/{repeats}: {s:.1f}s, {rows / s:,.0f} rows/s, {result.files} files; CPU s {cpu}")
    best, cpu = min(runs, key=lambda run: run[0])
    return {
        "seconds": round(best, 3),
        "rows_per_s": round(rows / best),
        "all_seconds": [round(s, 3) for s, _ in runs],
        "cpu_seconds": cpu,
    }


def breakdown(spark, model, source: str, rows: int) -> list[dict]:
    """Where the time goes: the scoring job's steps added one at a time, each run into Spark's no-op sink.

    The scan, then each preprocessing stage, the segment assignment, the
    scoring without and with the top features: ``transform`` without the write.
    """
    from segae_spark.io import read_table

    artifact = model.artifact

    def upto(k: int):
        def make():
            df = read_table(spark, source)
            for stage in artifact.preprocessing.stages[:k]:
                df = stage.transform(df)
            return df

        return make

    stages = artifact.preprocessing.stages
    steps = [("scan", upto(0))]
    steps += [(f"+ {type(stage).__name__}", upto(k + 1)) for k, stage in enumerate(stages)]
    steps += [
        ("+ segment assignment", lambda: artifact.segmenter.transform(upto(len(stages))())),
        ("transform without top features", lambda: model.copy({model.topFeatures: 0}).transform(read_table(spark, source))),
        ("transform", lambda: model.transform(read_table(spark, source))),
    ]
    result, previous = [], 0.0
    for name, make in steps:
        seconds, _ = timed(lambda: make().write.format("noop").mode("overwrite").save())
        result.append({"step": name, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds), "added_seconds": round(seconds - previous, 3)})
        previous = seconds
        log(f"  breakdown: {name} into the no-op sink: {seconds:.1f}s, {rows / seconds:,.0f} rows/s")
    return result


def table_bytes(path: str) -> int:
    """Bytes of the data files in a Delta table's current version."""
    from deltalake import DeltaTable

    return int(pa.compute.sum(pa.table(DeltaTable(path).get_add_actions(flatten=True)).column("size_bytes")).as_py())


# ------------------------------------------------------------ numpy engine
def bench_engine(model, rows: int, batch_rows: int = 10_000) -> float:
    """rows/s of score_batch alone (numpy forward pass + errors + flags + top features, as transform does)."""
    from segae_spark.models.numpy_engine import load_engine
    from segae_spark.scoring import OutputColumns, ScoringPlan, score_batch

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


# ------------------------------------------------------------------ baseline
def segmentae_row_errors(real_values: np.ndarray, predicted_values: np.ndarray):
    """SegmentAE 1.5.26's ``compute_reconstruction_errors``: four scikit-learn metrics per row, in a Python loop."""
    from sklearn.metrics import max_error, mean_absolute_error, mean_squared_error

    mse_per_row, mae_per_row, rmse_per_row, max_error_per_row = [], [], [], []
    for i in range(len(real_values)):
        row = real_values[i]
        pred_row = predicted_values[i]
        mse = mean_squared_error(row, pred_row)
        mse_per_row.append(mse)
        mae_per_row.append(mean_absolute_error(row, pred_row))
        rmse_per_row.append(np.sqrt(mse))
        max_error_per_row.append(max_error(row, pred_row))
    return mse_per_row, mae_per_row, rmse_per_row, max_error_per_row


def bench_baseline(spark, model, rows: int, seed: int) -> dict:
    """SegmentAE's driver-side detection loop on ``rows`` rows already in pandas (see the module docstring)."""
    import pandas as pd
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from segae_spark import generate_transactions
    from segae_spark.features.preprocessing import FEATURES_COL
    from segae_spark.models.keras_engine import KerasEngine
    from segae_spark.models.numpy_engine import load_engine
    from segae_spark.pipeline import _SEGMENT  # the segmenter's output column

    artifact = model.artifact
    prepared = artifact.segmenter.transform(artifact.preprocessing.transform(generate_transactions(spark, rows, seed=seed))).select(
        F.col(_SEGMENT).cast("int").alias("segment"), vector_to_array(F.col(FEATURES_COL), "float64").alias("x")
    )
    collected = prepared.limit(rows).toPandas()  # small: --baseline-rows rows (200,000 x 36 floats, ~60 MB)
    input_data = pd.DataFrame(np.stack(collected["x"].to_numpy()), columns=model.feature_names)
    cluster_predictions = pd.DataFrame({"cluster": collected["segment"].to_numpy()})
    del collected
    keras_models = {name: KerasEngine.from_keras_bytes(m.keras).model for name, m in artifact.models.items()}
    model_of = {s["segment"]: s["model"] for s in artifact.segments}
    thresholds = model.thresholds
    for m in keras_models.values():  # untimed: trace each model's predict function once
        m.predict(input_data.iloc[:64], verbose=0)

    t = dict.fromkeys(("select_rows", "keras_predict", "row_error_loop", "threshold_apply", "lean_mse_loop"), 0.0)
    scores = np.zeros(len(input_data))
    flagged = lean_mismatches = 0
    for cluster_id in cluster_predictions["cluster"].unique():
        threshold = thresholds[int(cluster_id)]
        t0 = time.perf_counter()
        cluster_indices = cluster_predictions.index[cluster_predictions["cluster"] == cluster_id].tolist()
        x_cluster = input_data.loc[cluster_indices]
        t1 = time.perf_counter()
        predictions = keras_models[model_of[int(cluster_id)]].predict(x_cluster, verbose=0)
        reconstructions = pd.DataFrame(predictions, columns=x_cluster.columns).astype(float)
        t2 = time.perf_counter()
        real_np, pred_np = x_cluster.values, reconstructions.values
        mse, mae, rmse, max_err = segmentae_row_errors(real_np, pred_np)
        metrics_df = pd.DataFrame({
            "MSE_Recons_error": mse, "MAE_Recons_error": mae, "RMSE_Recons_error": rmse, "Max_Recons_error": max_err,
            "Score": np.array(mse).mean() + np.array(mse).std(),
        })  # fmt: skip
        diff = real_np - pred_np
        pd.DataFrame({
            "Column": list(x_cluster.columns), "MSE": list(np.mean(np.square(diff), axis=0)),
            "MAE": list(np.mean(np.abs(diff), axis=0)), "RMSE": list(np.sqrt(np.mean(np.square(diff), axis=0))),
            "Max_Error": list(np.max(np.abs(diff), axis=0)), "partition": cluster_id,
        })  # fmt: skip  # SegmentAE's per-column metrics (compute_column_metrics)
        t3 = time.perf_counter()
        flags = metrics_df["MSE_Recons_error"].apply(lambda x: 1 if x > threshold else 0)
        t4 = time.perf_counter()
        lean = [float(np.mean((real_np[i] - pred_np[i]) ** 2)) for i in range(len(real_np))]
        lean_flags = [1 if e > threshold else 0 for e in lean]
        t5 = time.perf_counter()
        for key, seconds in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            t[key] += seconds
        scores[cluster_indices] = mse
        flagged += int(flags.sum())
        lean_mismatches += int(np.sum(np.asarray(lean_flags) != flags.to_numpy()))

    # Untimed check that the baseline computes the scores segae-spark computes.
    engines = {name: load_engine(m.npz) for name, m in artifact.models.items()}
    ours = np.zeros(len(input_data))
    for cluster_id in cluster_predictions["cluster"].unique():
        idx = np.flatnonzero(cluster_predictions["cluster"].to_numpy() == cluster_id)
        ours[idx] = engines[model_of[int(cluster_id)]].row_errors(input_data.to_numpy(np.float32)[idx], "mse")
    n = len(input_data)
    total = t["select_rows"] + t["keras_predict"] + t["row_error_loop"] + t["threshold_apply"]
    lean_total = t["select_rows"] + t["keras_predict"] + t["lean_mse_loop"]
    return {
        "rows": n,
        "seconds": round(total, 3),
        "rows_per_s": round(n / total),
        "seconds_by_step": {k: round(v, 3) for k, v in t.items()},
        "lean_seconds": round(lean_total, 3),
        "lean_rows_per_s": round(n / lean_total),
        "flagged_rows": flagged,
        "lean_flag_mismatches": lean_mismatches,
        "max_abs_score_diff_vs_numpy_engine": float(np.max(np.abs(scores - ours))),
        "includes": (
            "per segment: pandas .loc row selection, Keras model.predict (batch 32), SegmentAE 1.5.26's row-by-row "
            "scikit-learn MSE/MAE/RMSE/max-error loop, its metrics DataFrames, Series.apply threshold flags; "
            "excludes loading the data, preprocessing and clustering (done in Spark, collected untimed)"
        ),
        "lean_includes": "the same without scikit-learn: a Python loop of numpy MSE per row and the threshold comparison",
    }


# ------------------------------------------------------------------------ fit
def fit_and_save(model_dir: str, seed: int) -> None:
    """Runs in a child process: fit the benchmark's model and save it (TensorFlow stays out of the parent)."""
    from segae_spark import SegmentAE, generate_transactions, get_or_create_session

    spark = get_or_create_session()
    train = generate_transactions(spark, 50_000, seed=seed)
    start = time.perf_counter()
    model = SegmentAE(seed=seed, **MODEL_PARAMS).fit(train)
    fit_seconds = time.perf_counter() - start
    model.write().overwrite().save(model_dir)
    with open(os.path.join(os.path.dirname(os.path.abspath(model_dir)), "fit.json"), "w", encoding="utf-8") as fh:
        json.dump({"fit_seconds": round(fit_seconds, 2)}, fh)
    spark.stop()


# ----------------------------------------------------------------- reporting
def grows(small: float | None, large: float | None) -> bool | None:
    if small is None or large is None:
        return None
    return large - small > max(MEMORY_TOLERANCE[0] * small, MEMORY_TOLERANCE[1])


def _fmt(value, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    sizes, base, goals = report["sizes"], report["baseline"], report["goals"]
    lines = [
        "| rows | I/O floor rows/s | scoring job rows/s | floor / scoring (goal <= 1.5) | driver JVM peak MiB "
        "| driver Python peak MiB | Python worker peak MiB (workers) | speedup vs SegmentAE (goal >= 100) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        mem = s["memory"]
        lines.append(
            f"| {s['rows']:,} | {s['floor']['rows_per_s']:,} | {s['scoring']['rows_per_s']:,} | {s['ratio']:.2f} "
            f"| {_fmt(mem['driver_jvm_peak_mib'])} | {_fmt(mem['driver_python_peak_mib'])} "
            f"| {_fmt(mem['worker_peak_mib'])} ({mem['workers_probed']}) | {_fmt(s.get('speedup_vs_baseline'), ',.1f')}{'x' if s.get('speedup_vs_baseline') else ''} |"
        )
    lines += [
        "",
        "| rows | driver JVM RSS peak MiB | JVM heap peak used MiB | JVM live heap after GC MiB | JVM heap max MiB |",
        "|---|---|---|---|---|",
    ]
    for s in sizes:
        mem = s["memory"]
        lines.append(
            f"| {s['rows']:,} | {_fmt(mem['driver_jvm_peak_mib'])} | {_fmt(mem['driver_jvm_heap_peak_mib'])} "
            f"| {_fmt(mem['driver_jvm_heap_live_after_gc_mib'])} | {_fmt(mem['driver_jvm_heap_max_mib'])} |"
        )
    lines += ["", "| rows | input read partitions (tasks) | input MB | I/O floor output MB | scoring output MB |", "|---|---|---|---|---|"]
    for s in sizes:
        b = s["data_file_bytes"]
        lines.append(
            f"| {s['rows']:,} | {s['input_read_partitions']} | {b['input'] / 1e6:,.1f} | {b['floor_output'] / 1e6:,.1f} "
            f"| {b['scoring_output'] / 1e6:,.1f} |"
        )
    lines += [
        "",
        "CPU per job (the machine is saturated, so CPU seconds are what a job costs; with a local master the "
        "executors run in the driver JVM):",
        "",
        "| rows | job | wall s | JVM CPU s | Python workers CPU s | JVM us/row | Python workers us/row |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        for job in ("floor", "scoring"):
            run, cpu = s[job], s[job]["cpu_seconds"]
            per_row = {k: None if cpu[k] is None else cpu[k] * 1e6 / s["rows"] for k in ("jvm", "python_workers")}
            lines.append(
                f"| {s['rows']:,} | {'I/O floor' if job == 'floor' else 'scoring'} | {run['seconds']:.1f} | {_fmt(cpu['jvm'], '.1f')} "
                f"| {_fmt(cpu['python_workers'], '.1f')} | {_fmt(per_row['jvm'], '.2f')} | {_fmt(per_row['python_workers'], '.2f')} |"
            )
    if base:
        lines += ["", "| baseline (driver, pandas + Keras) | rows | seconds | rows/s |", "|---|---|---|---|"]
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in base["seconds_by_step"].items())
        lines.append(f"| SegmentAE 1.5.26 detection loop (the goal's baseline) | {base['rows']:,} | {base['seconds']:.1f} | {base['rows_per_s']:,} |")
        lines.append(f"| lean loop: numpy MSE per row, no scikit-learn (reference) | {base['rows']:,} | {base['lean_seconds']:.1f} | {base['lean_rows_per_s']:,} |")
        lines += ["", f"Baseline includes: {base['includes']}. Time by step: {steps}."]
        lines.append(f"Scores agree with segae-spark's numpy engine to {base['max_abs_score_diff_vs_numpy_engine']:.1e}.")
    for s in sizes:
        if "breakdown" in s:
            lines += ["", f"Breakdown at {s['rows']:,} rows: each step into Spark's no-op sink (nothing written); "
                      "steps add up cumulatively, so 'added s' is that step's cost.", "",
                      "| step | seconds | rows/s | added s |", "|---|---|---|---|"]  # fmt: skip
            lines += [f"| {b['step']} | {b['seconds']:.1f} | {b['rows_per_s']:,} | {b['added_seconds']:+.1f} |" for b in s["breakdown"]]
            lines.append(f"| I/O floor (read + write Delta, for reference) | {s['floor']['seconds']:.1f} | {s['floor']['rows_per_s']:,} | |")
            lines.append(f"| scoring job (transform + write Delta) | {s['scoring']['seconds']:.1f} | {s['scoring']['rows_per_s']:,} | |")
    lines += ["", f"numpy scoring function alone (one core): {report['numpy_engine_rows_per_s']:,} rows/s", "", "| goal | result |", "|---|---|"]
    for name, goal in goals.items():
        verdict = "n/a" if goal["met"] is None else ("met" if goal["met"] else "NOT met")
        lines.append(f"| {name}: {goal['rule']} | {goal['value']} ({verdict}) |")
    return "\n".join(lines)


def goals_of(sizes: list[dict], baseline: dict | None) -> dict:
    goals = {
        "io_ratio": {
            "rule": f"floor rows/s / scoring rows/s <= {RATIO_GOAL} at every size",
            "value": ", ".join(f"{s['ratio']:.2f}" for s in sizes),
            "met": all(s["ratio"] <= RATIO_GOAL for s in sizes),
        }
    }
    small, large = sizes[0], sizes[-1]
    verdicts = {}
    for key in ("driver_jvm_peak_mib", "driver_python_peak_mib", "worker_peak_mib"):
        verdicts[key] = grows(small["memory"][key], large["memory"][key]) if len(sizes) > 1 else None
    known = [v for v in verdicts.values() if v is not None]
    key = "driver_jvm_heap_live_after_gc_mib"  # informational: what the JVM retains, not bounded by -Xmx sizing
    verdicts[key] = grows(small["memory"][key], large["memory"][key]) if len(sizes) > 1 else None
    goals["memory_flat"] = {
        "rule": (
            f"peaks at {large['rows']:,} rows <= peaks at {small['rows']:,} rows + max(15 %, 64 MiB) "
            "(driver JVM, driver Python, Python worker)"
        ),
        "value": ", ".join(
            f"{k.replace('_peak_mib', '').replace('_mib', '')} {'grows' if v else 'flat' if v is not None else 'n/a'}"
            + (" (information only)" if k == key else "")
            for k, v in verdicts.items()
        ),
        "met": (not any(known)) if known else None,
        "grows_with_rows": verdicts,
    }
    if baseline:
        speedups = [s["speedup_vs_baseline"] for s in sizes]
        goals["speedup"] = {
            "rule": f"scoring job rows/s / SegmentAE baseline rows/s >= {SPEEDUP_GOAL:.0f} at every size",
            "value": ", ".join(f"{x:.1f}x" for x in speedups),
            "met": min(speedups) >= SPEEDUP_GOAL,
        }
    return goals


# ---------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000, 10_000_000], help="table sizes (default 2M and 10M)")
    parser.add_argument("--baseline-rows", type=int, default=200_000, help="rows for the SegmentAE baseline (0: skip it)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each job per size; the best counts")
    parser.add_argument("--breakdown", action="store_true", help="also time the scoring job's steps (scan, each preprocessing stage, segments, scoring) into the no-op sink")
    parser.add_argument("--workdir", help="where the tables go (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the tables and the model in the work directory")
    parser.add_argument("--model", help="score with this saved model instead of fitting the default one")
    parser.add_argument(
        "--driver-memory",
        default=DRIVER_MEMORY,
        help=f"spark.driver.memory: the heap of the JVM that, with a local master, also runs the executors (default {DRIVER_MEMORY})",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=RESULTS, help="results path without extension (.json and .md are written)")
    parser.add_argument("--fit-only", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_only:
        fit_and_save(args.fit_only, args.seed)
        return
    sizes_wanted = sorted(set(args.rows))
    if sizes_wanted[0] < WARM_UP_ROWS or args.repeats < 1 or args.baseline_rows < 0:
        parser.error(f"--rows must be >= {WARM_UP_ROWS}, --repeats >= 1, --baseline-rows >= 0")

    created = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="segae-bench-") if created else os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    model_dir = os.path.abspath(args.model) if args.model else os.path.join(workdir, "model")
    made: list[str] = [] if args.model else [model_dir, os.path.join(workdir, "fit.json")]
    try:
        fit_seconds = None
        if not args.model:
            log(f"fitting the model (50,000 rows) in a child process; work directory {workdir}")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--fit-only", model_dir, "--seed", str(args.seed)], check=True)
            with open(os.path.join(workdir, "fit.json"), encoding="utf-8") as fh:
                fit_seconds = json.load(fh)["fit_seconds"]

        from reporting import run_environment, versions_text, write_report
        from segae_spark import generate_transactions, get_or_create_session
        from segae_spark.io import read_table, write_table
        from segae_spark.pipeline import SegmentAEModel
        from segae_spark.session import has_native_delta

        spark = get_or_create_session({"spark.driver.memory": args.driver_memory})
        model = SegmentAEModel.load(model_dir)
        jpid = jvm_pid(spark)
        heap = JvmHeap(spark)
        load_start = os.getloadavg()[0]
        if load_start > os.cpu_count():
            log(f"WARNING: load average {load_start:.1f} on {os.cpu_count()} CPUs: other work shares this machine, timings will be low and noisy")
        log(f"model {model.model_id}: {len(model.feature_names)} features, {len(model.artifact.segments)} segments; driver JVM pid {jpid}")

        # Untimed warm-up: Python workers start, import the writer and decode the weights.
        warm_in = os.path.join(workdir, "warm_input")
        made += [warm_in, warm_in + "_floor", warm_in + "_scored"]
        write_table(generate_transactions(spark, WARM_UP_ROWS, seed=args.seed + 7), warm_in, mode="overwrite", partition_by=["event_date"])
        model.transform(generate_transactions(spark, WARM_UP_ROWS, seed=args.seed + 7)).write.format("noop").mode("overwrite").save()
        io_floor(spark, warm_in, warm_in + "_floor")
        scoring_job(spark, model, warm_in, warm_in + "_scored")
        log("warm-up done")

        sizes = []
        for n in sizes_wanted:
            source, floor_out, scored_out = (os.path.join(workdir, f"{kind}_{n}") for kind in ("input", "floor", "scored"))
            made += [source, floor_out, scored_out]
            log(f"size {n:,}: generating and writing the input table (not timed)")
            written = write_table(generate_transactions(spark, n, seed=args.seed + 1), source, mode="overwrite", partition_by=["event_date"])
            resets = {
                "driver_jvm": heap.reset_peak(collect_first=True) is None and jpid is not None and reset_peak(jpid),
                "driver_python": reset_peak("self"),
                "workers": probe_workers(spark, reset=True)["reset"],
            }
            log(f"size {n:,}: I/O floor (read, add a constant column, write Delta)")
            floor = best_of(args.repeats, lambda: io_floor(spark, source, floor_out), n, "I/O floor", jpid)
            log(f"size {n:,}: scoring job (read, transform, write Delta)")
            scoring = best_of(args.repeats, lambda: scoring_job(spark, model, source, scored_out), n, "scoring job", jpid)
            workers = probe_workers(spark, reset=False)
            memory = {
                "driver_jvm_peak_mib": None if jpid is None else peak_mib(jpid),
                "driver_python_peak_mib": peak_mib("self"),
                "worker_peak_mib": workers["peak_mib"],
                "workers_probed": workers["workers"],
                "worker_peaks_mib": workers["peaks_mib"],
                "driver_jvm_heap_peak_mib": heap.peak_mib(),
                "driver_jvm_heap_live_after_gc_mib": heap.live_mib(),
                "driver_jvm_heap_max_mib": heap.max_mib(),
                "peaks_reset_before": resets,
            }
            memory = {k: round(v, 1) if isinstance(v, float) else v for k, v in memory.items()}
            data_bytes = {"input": table_bytes(source), "floor_output": table_bytes(floor_out), "scoring_output": table_bytes(scored_out)}
            size = {
                "rows": n,
                "input_files": written.files,
                "input_read_partitions": read_table(spark, source).rdd.getNumPartitions(),
                "data_file_bytes": data_bytes,
                "floor": floor,
                "scoring": scoring,
                "ratio": round(floor["rows_per_s"] / scoring["rows_per_s"], 3),
                "memory": memory,
            }
            log(
                f"size {n:,}: floor {floor['rows_per_s']:,} rows/s, scoring {scoring['rows_per_s']:,} rows/s, "
                f"ratio {size['ratio']:.2f}; peaks MiB: JVM {_fmt(memory['driver_jvm_peak_mib'])}, "
                f"Python driver {_fmt(memory['driver_python_peak_mib'])}, worker {_fmt(memory['worker_peak_mib'])}"
            )
            if args.breakdown:
                log(f"size {n:,}: breakdown (the scoring job's steps into the no-op sink)")
                size["breakdown"] = breakdown(spark, model, source, n)
            sizes.append(size)
            if not args.keep:
                for path in (floor_out, scored_out, source):
                    shutil.rmtree(path, ignore_errors=True)

        tf_before_baseline = any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
        baseline = None
        if args.baseline_rows:
            log(f"baseline: SegmentAE's driver loop on {args.baseline_rows:,} rows (scikit-learn metrics per row: slow)")
            baseline = bench_baseline(spark, model, args.baseline_rows, args.seed + 2)
            log(f"baseline: {baseline['rows_per_s']:,} rows/s (lean loop {baseline['lean_rows_per_s']:,} rows/s)")
            for s in sizes:
                s["speedup_vs_baseline"] = round(s["scoring"]["rows_per_s"] / baseline["rows_per_s"], 1)
                s["speedup_vs_lean_loop"] = round(s["scoring"]["rows_per_s"] / baseline["lean_rows_per_s"], 1)
        log("numpy engine micro-benchmark")
        engine_rps = bench_engine(model, 500_000)

        with open("/proc/meminfo", encoding="ascii") as fh:
            mem_total = next((int(line.split()[1]) for line in fh if line.startswith("MemTotal:")), 0)
        conf = spark.sparkContext.getConf()
        environment = run_environment()
        report = {
            **environment,
            "machine": {**environment["machine"], "memory_gib": round(mem_total / 1024**2, 1)},
            "spark": {
                "master": spark.sparkContext.master,
                "parallelism": spark.sparkContext.defaultParallelism,
                "driver_memory": conf.get("spark.driver.memory", "1g"),
                "python_worker_reuse": conf.get("spark.python.worker.reuse", "true"),
                "delta_writer": "delta-spark" if has_native_delta(spark) else "delta-rs (executors write Parquet, the driver commits)",
            },
            "model": {
                "id": model.model_id,
                "features": len(model.feature_names),
                "segments": len(model.artifact.segments),
                "models": sorted(model.artifact.models),
                "params": None if args.model else MODEL_PARAMS,
                "path": args.model,
                "fit_seconds_50k_rows": fit_seconds,
            },
            "tensorflow_imported_by_driver_before_baseline": tf_before_baseline,
            "sizes": sizes,
            "baseline": baseline,
            "numpy_engine_rows_per_s": round(engine_rps),
            "seconds_total": round(time.perf_counter() - _T0, 1),
            "load_average_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        }
        report["goals"] = goals_of(sizes, baseline)
        table = markdown(report)
        header = (
            "# Scoring throughput: Delta in, Delta out\n\n"
            + versions_text(report)
            + f"; {report['machine']['cpus']} CPUs, {report['machine']['memory_gib']} GiB, Spark {report['spark']['master']} "
            f"(parallelism {report['spark']['parallelism']}, driver memory {report['spark']['driver_memory']}), "
            f"Delta writer {report['spark']['delta_writer']}. Model: {report['model']['features']} features, "
            f"{report['model']['segments']} segments, {'model ' + args.model if args.model else 'dense 32-16-8'}. Whole run {report['seconds_total']:.0f} s; "
            f"1-minute load average {report['load_average_1m']['start']} at the start, {report['load_average_1m']['end']} at the end.\n\n"
        )
        print(table)
        write_report(args.out, report, header + table, f"whole run {report['seconds_total']:.0f} s; ")
    finally:
        if created and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not args.keep:
            for path in made:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.exists(path):
                    os.remove(path)


if __name__ == "__main__":
    main()
