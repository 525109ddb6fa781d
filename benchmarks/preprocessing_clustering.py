"""Preprocessing and clustering at scale: seconds per stage and peak driver memory by row count.

    make bench-prep                                      # 1,000,000 and 5,000,000 rows
    make bench-prep PREP_ARGS="--rows 1000000"

For each row count N, the synthetic transactions
(``generate_transactions(spark, N, seed)``) are first written to Parquet
(``--data-dir``, reused when already there), so their generation is never
timed. Then a fresh process (its own Spark session, ``--master``, default
``local[2]``) reads them and times what ``SegmentAE.fit`` does before it
trains autoencoders (without the hash layout shuffle in front of it):

1. ``fit preprocessing``: ``build_preprocessing`` with its defaults on the
   columns ``resolve_features`` picks (all but the label, id and date);
2. ``transform + cache``: the feature vectors computed and cached;
3. ``fit kmeans``: ``fit_segmenter(model="kmeans", n_clusters=8)``, best of
   ``clusterRuns`` (default 3) seeded fits;
4. ``assign segments``: ``segment_sizes`` over every row.

Memory, read in that process: the Python driver's peak RSS
(``resource.getrusage``, the peak over the whole process so far), and the
JVM's peak heap used during each stage (the sum of the heap pools' peak
usage, reset at the start of the stage, via ``spark._jvm``). With a
``local[...]`` master the driver JVM also runs the executors, so its heap
holds task buffers and the cached features as well: the table shows the
features cached in memory next to it, and the live heap after a full GC at
the end. Nothing is collected to the Python driver, so its RSS should not
grow with N. Writes benchmarks/results/preprocessing_clustering.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from jvm_heap import JvmHeap

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "preprocessing_clustering")
EXCLUDE = ["is_fraud", "transaction_id", "event_date"]
STAGES = ("fit preprocessing", "transform + cache", "fit kmeans", "assign segments")
MB = 1024 * 1024


def data_path(data_dir: str, rows: int, seed: int) -> str:
    return os.path.join(data_dir, f"transactions_{rows}_seed{seed}.parquet")


def write_data(sizes: list[int], data_dir: str, seed: int) -> dict[int, float]:
    """Write the transactions of each size to Parquet, unless already there; seconds per size written."""
    from segae_spark import generate_transactions, get_or_create_session

    missing = [n for n in sizes if not os.path.exists(os.path.join(data_path(data_dir, n, seed), "_SUCCESS"))]
    if not missing:
        return {}
    spark = get_or_create_session({"spark.master": "local[*]"})
    seconds = {}
    for rows in missing:
        start = time.perf_counter()
        generate_transactions(spark, rows, seed=seed).write.mode("overwrite").parquet(data_path(data_dir, rows, seed))
        seconds[rows] = round(time.perf_counter() - start, 1)
        print(f"[data] wrote {rows:,} rows in {seconds[rows]:.0f}s", file=sys.stderr, flush=True)
    spark.stop()
    return seconds


def python_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(path: str, rows: int, clusters: int, runs: int, seed: int, master: str) -> dict:
    """Time the four stages on the Parquet table at ``path``; runs in its own process."""
    from segae_spark import get_or_create_session
    from segae_spark.clustering import fit_segmenter, segment_sizes
    from segae_spark.features.preprocessing import FEATURES_COL, build_preprocessing
    from segae_spark.features.schema import resolve_features

    spark = get_or_create_session({"spark.master": master, "spark.app.name": "bench-prep"})
    heap = JvmHeap(spark)
    df = spark.read.parquet(path)
    spec = resolve_features(df.schema, [], [], EXCLUDE)
    stages = []

    def timed(name, work):
        heap.reset_peak()
        start = time.perf_counter()
        result = work()
        stages.append({
            "stage": name,
            "seconds": round(time.perf_counter() - start, 2),
            "jvm_heap_peak_mb": round(heap.peak_mib()),
            "python_peak_rss_mb": round(python_peak_mb()),
        })  # fmt: skip
        print(f"[{rows:,}] {name}: {stages[-1]['seconds']:.1f}s", file=sys.stderr, flush=True)
        return result

    preprocessing = timed("fit preprocessing", lambda: build_preprocessing(spec).fit(df))
    features = preprocessing.transform(df).select(FEATURES_COL).cache()
    timed("transform + cache", features.count)
    fit = timed(
        "fit kmeans", lambda: fit_segmenter(features, FEATURES_COL, "segment", model="kmeans", n_clusters=clusters, seed=seed, runs=runs)
    )
    sizes = timed("assign segments", lambda: segment_sizes(fit.model.transform(features), "segment", fit.n_segments))
    cached_memory, cached_disk = heap.cached_mib()
    result = {
        "rows": rows,
        "features": len(fit.model.clusterCenters()[0]),
        "stages": stages,
        "total_seconds": round(sum(s["seconds"] for s in stages), 2),
        "python_peak_rss_mb": round(python_peak_mb()),
        "jvm_heap_peak_mb": max(s["jvm_heap_peak_mb"] for s in stages),
        "jvm_heap_max_mb": round(heap.max_mib()),
        "jvm_heap_live_after_gc_mb": round(heap.live_mib()),
        "features_cached_memory_mb": round(cached_memory),
        "features_cached_disk_mb": round(cached_disk),
        "segment_sizes": sizes,
        "kmeans_cost": fit.model.summary.trainingCost,
        "spark_parallelism": spark.sparkContext.defaultParallelism,
    }
    spark.stop()
    return result


def markdown(runs: list[dict]) -> str:
    head = ["rows", "stage", "seconds", "JVM heap peak MB", "Python peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        for s in r["stages"]:
            lines.append(f"| {r['rows']:,} | {s['stage']} | {s['seconds']:.1f} | {s['jvm_heap_peak_mb']:,} | {s['python_peak_rss_mb']:,} |")
    head = ["rows", "total s", "Python peak RSS MB", "JVM heap peak MB", "JVM heap max MB", "JVM live heap after GC MB", "features cached in memory MB", "on disk MB"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        lines.append(
            "| " + " | ".join([
                f"{r['rows']:,}", f"{r['total_seconds']:.1f}", f"{r['python_peak_rss_mb']:,}", f"{r['jvm_heap_peak_mb']:,}",
                f"{r['jvm_heap_max_mb']:,}", f"{r['jvm_heap_live_after_gc_mb']:,}", f"{r['features_cached_memory_mb']:,}",
                f"{r['features_cached_disk_mb']:,}",
            ]) + " |"  # fmt: skip
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="row counts, comma-separated")
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="clusterRuns: seeded KMeans fits, the best kept")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "segae_bench_prep"))
    parser.add_argument("--out", default=RESULTS, help="results path without extension (.json and .md are written)")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # internal: measure this size in this process
    args = parser.parse_args()

    if args.measure:
        result = measure(data_path(args.data_dir, args.measure, args.seed), args.measure, args.clusters, args.runs, args.seed, args.master)
        print(json.dumps(result))
        return

    from reporting import run_environment, versions_text, write_report

    sizes = [int(n) for n in args.rows.split(",") if n.strip()]
    written = write_data(sizes, args.data_dir, args.seed)
    runs = []
    for rows in sizes:
        # A process per size: its peak RSS and its JVM are its own.
        command = [sys.executable, os.path.abspath(__file__), "--measure", str(rows)]
        command += ["--clusters", str(args.clusters), "--runs", str(args.runs), "--seed", str(args.seed)]
        command += ["--master", args.master, "--data-dir", args.data_dir]
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))

    report = {
        **run_environment(),
        "master": args.master,
        "config": {"clusterer": "kmeans", "K": args.clusters, "clusterRuns": args.runs, "seed": args.seed,
                   "preprocessing": "build_preprocessing defaults", "exclude": EXCLUDE},  # fmt: skip
        "data_written_seconds": written,
        "runs": runs,
    }
    table = markdown(runs)
    header = (
        "# Preprocessing and clustering: seconds per stage and peak driver memory\n\n"
        + versions_text(report)
        + f"; {report['machine']['cpus']} CPUs, master {args.master}, {report['machine']['platform']}.\n\n"
        f"Synthetic transactions read from Parquet; {runs[0]['features']} features after preprocessing "
        f"(build_preprocessing defaults); KMeans K={args.clusters}, best of {args.runs} seeded fits. "
        "Each row count runs in its own process. With a local master the driver JVM also runs the "
        "executors, so its heap holds the cached features too.\n\n"
    )
    print(table)
    write_report(args.out, report, header + table)


if __name__ == "__main__":
    main()
