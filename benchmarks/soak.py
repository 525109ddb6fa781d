"""Soak: one application scores the same 3,000,000 rows three times on a local standalone cluster.

    make bench-soak                                   # 3,000,000 rows, 3 runs
    make bench-soak SOAK_ARGS="--rows 300000"         # a quick check

A long-lived application (a notebook, a scheduler that keeps its session)
scores again and again with the same executors and the same pooled Python
workers; whatever a run leaks, the next run starts from. This starts a
standalone master and two one-core workers on 127.0.0.1
(:class:`segae_spark.local_cluster.LocalCluster`), executors of 1 GiB heap,
fits the throughput benchmark's model in a child process, writes the rows
once as a Delta table partitioned by ``event_date`` (not timed), and then
runs the whole-table scoring job (``score_table``, what ``segae-spark score
--mode overwrite --partition-by event_date`` runs) ``--runs`` times into the
same output table.

After each run it reads, from ``/proc``, the resident set (VmRSS) and its
high-water mark since the run began (VmHWM, reset through ``clear_refs``
before each run) of every executor JVM and every Python worker those
executors forked (the ``pyspark.daemon`` trees); the table reports the
largest executor and the largest worker. Each run's output is checked:
as many rows as the input, and ids unique.

It also reads each executor's heap in use right after a full GC
(``jcmd GC.run`` / ``GC.heap_info``, where the JDK has ``jcmd``): what the
JVM retains, independent of how far G1 chose to grow the heap.

Before measuring, the driver runs a full GC, so Spark's ContextCleaner drops
what the run left on the executors (as a long-lived driver does on its own
at least every 30 minutes).

Goal: worker memory does not grow run to run. The executors' live heap after
a full GC stays within max(10 %, 64 MiB) of the first run's; the Python
workers' RSS and peak, which the first run includes starting them, within it
of the second run's. The executors' RSS is reported, not judged: G1 sizes the
heap up to its cap as it likes and returns memory after a full GC, so RSS
swings between runs without saying what the JVM retains.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = str(HERE / "results" / "soak")
TOLERANCE = (0.10, 64.0)  # a run's figure may exceed the first run's by at most max(10 %, 64 MiB)
EXECUTOR_MEMORY = "1g"

_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def _status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (KiB) and the parent pid of a process; empty when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return {}
    kib = {key: int(fields.get(key, "0 kB").split()[0]) for key in ("VmRSS", "VmHWM")}  # kernel threads have none
    return {"rss": kib["VmRSS"], "hwm": kib["VmHWM"], "ppid": int(fields["PPid"])}


def processes(executors: list[int]) -> dict[str, list[int]]:
    """The executor JVMs and every process descending from them (the Python workers)."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            parents[int(name)] = _status(int(name)).get("ppid")
    workers = []
    for pid, ppid in parents.items():
        seen = set()
        while ppid is not None and ppid not in seen:
            if ppid in executors:
                workers.append(pid)
                break
            seen.add(ppid)
            ppid = parents.get(ppid)
    return {"executors": executors, "python_workers": sorted(workers)}


def reset_peaks(pids: list[int]) -> None:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
        except OSError:
            pass  # exited meanwhile


def memory(pids: list[int]) -> dict:
    found = [s for s in map(_status, pids) if s]
    return {
        "count": len(found),
        "rss_mib": round(max((s["rss"] for s in found), default=0) / 1024, 1),
        "peak_mib": round(max((s["hwm"] for s in found), default=0) / 1024, 1),
        "rss_total_mib": round(sum(s["rss"] for s in found) / 1024, 1),
    }


def release_driver_references(spark) -> None:
    """Let Spark's ContextCleaner drop what the run left on the executors (broadcast joins' relations).

    The cleaner acts when the driver garbage-collects the objects that refer
    to them, which a long-lived application does on its own at least every
    ``spark.cleaner.periodicGC.interval`` (30 min); a soak of a few minutes
    forces it, or it would measure the driver's GC timing instead of the executors.
    """
    gc.collect()
    spark.sparkContext._jvm.java.lang.System.gc()
    time.sleep(2)  # the cleaner runs asynchronously


def live_heap_mib(pid: int) -> float | None:
    """The JVM's heap in use right after a full GC (``jcmd``): what it retains, whatever size G1 chose."""
    jcmd = shutil.which("jcmd")
    if jcmd is None:
        return None
    run = subprocess.run([jcmd, str(pid), "GC.run"], capture_output=True, text=True)
    info = subprocess.run([jcmd, str(pid), "GC.heap_info"], capture_output=True, text=True).stdout
    match = re.search(r"heap\s+total \d+K, used (\d+)K", info)
    return None if run.returncode or match is None else round(int(match.group(1)) / 1024, 1)


def grows(first: float, later: float) -> bool:
    return later - first > max(TOLERANCE[0] * first, TOLERANCE[1])


def _watched(run: dict) -> list[float]:
    """The figures that must stay flat once the first run has warmed the processes up."""
    return [run["python_workers"][key] for key in ("rss_mib", "peak_mib")]


def markdown(report: dict) -> str:
    lines = [
        f"# Soak: {report['rows']:,} rows scored {len(report['runs'])} times by one application",
        "",
        f"{report['cluster']}; {report['machine']}.",
        "",
        "| run | seconds | rows/s | output rows | executors | max executor RSS MiB | max executor peak MiB "
        "| max executor live heap MiB | Python workers | max worker RSS MiB | max worker peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        e, w = r["executors"], r["python_workers"]
        lines.append(
            f"| {r['run']} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['output_rows']:,} | {e['count']} | {e['rss_mib']:.0f} "
            f"| {e['peak_mib']:.0f} | {_mib(e['live_heap_mib'])} | {w['count']} | {w['rss_mib']:.0f} | {w['peak_mib']:.0f} |"
        )
    verdict = {True: "met", False: "NOT met", None: "not judged (no jcmd to read the live heap)"}[report["memory_flat"]]
    lines += [
        "",
        "Goal: the executors' live heap after a full GC stays within max(10 %, 64 MiB) of the first run's, and",
        "after the first run (which starts the Python workers and imports the scoring code) each run's worker RSS",
        f"and peak stay within it of the second run's: **{verdict}**. The executors' RSS is reported, not judged:",
        "G1 grows the heap up to its 1 GiB cap as it likes and gives memory back after each full GC, so it",
        "swings from run to run without saying what the JVM retains.",
    ]
    return "\n".join(lines) + "\n"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", help="where the cluster, tables and model go (default: a new temporary directory, removed)")
    parser.add_argument("--model", help="score with this saved model instead of fitting the throughput benchmark's")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=RESULTS, help="results path without extension (.json and .md are written)")
    args = parser.parse_args()
    if args.rows < 1000 or args.runs < 2:
        parser.error("--rows must be >= 1000 and --runs >= 2")

    created = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="segae-soak-") if created else os.path.abspath(args.workdir))
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = Path(os.path.abspath(args.model)) if args.model else workdir / "model"
    try:
        if not args.model:
            log(f"fitting the model in a child process (TensorFlow stays out of this one); work directory {workdir}")
            shutil.rmtree(model_dir, ignore_errors=True)
            subprocess.run([sys.executable, str(HERE / "scoring_throughput.py"), "--fit-only", str(model_dir), "--seed", str(args.seed)], check=True)

        from segae_spark import generate_transactions, get_or_create_session
        from segae_spark.batch_scoring import score_table
        from segae_spark.io import read_table, table_row_count, write_table
        from segae_spark.local_cluster import LocalCluster
        from segae_spark.pipeline import SegmentAEModel

        with LocalCluster(workdir / "cluster", workers=2, cores=1, memory="1536m") as cluster:
            spark = get_or_create_session({
                "spark.master": cluster.master_url, "spark.app.name": "segae-spark-soak",
                "spark.executor.memory": EXECUTOR_MEMORY, "spark.driver.memory": "1g",
            })  # fmt: skip
            source, target = str(workdir / "transactions"), str(workdir / "scored")
            log(f"writing {args.rows:,} synthetic transactions to {source}")
            write_table(generate_transactions(spark, args.rows, seed=args.seed), source, mode="overwrite", partition_by=["event_date"])
            model = SegmentAEModel.load(str(model_dir))
            runs = []
            for run in range(1, args.runs + 1):
                pids = processes(cluster.executor_pids())
                reset_peaks(pids["executors"] + pids["python_workers"])
                start = time.perf_counter()
                score_table(model, spark, source, target, mode="overwrite", partition_by=["event_date"])
                seconds = time.perf_counter() - start
                release_driver_references(spark)
                pids = processes(cluster.executor_pids())
                output_rows = table_row_count(spark, target)
                unique = read_table(spark, target).select("transaction_id").distinct().count()
                if output_rows != args.rows or unique != args.rows:
                    raise SystemExit(f"run {run}: {output_rows:,} rows, {unique:,} unique ids; expected {args.rows:,}")
                executors = memory(pids["executors"])
                heaps = [live_heap_mib(pid) for pid in pids["executors"]]
                executors["live_heap_mib"] = max(heaps) if heaps and None not in heaps else None
                runs.append({
                    "run": run, "seconds": round(seconds, 2), "rows_per_s": args.rows / seconds, "output_rows": output_rows,
                    "executors": executors, "python_workers": memory(pids["python_workers"]),
                })  # fmt: skip
                log(f"run {run}: {seconds:.1f}s, executors {runs[-1]['executors']}, workers {runs[-1]['python_workers']}")
            spark.stop()
    finally:
        if created:
            shutil.rmtree(workdir, ignore_errors=True)

    heaps = [r["executors"]["live_heap_mib"] for r in runs]
    flat = None if None in heaps else not (
        any(grows(heaps[0], h) for h in heaps[1:])
        or any(grows(a, b) for r in runs[2:] for a, b in zip(_watched(runs[1]), _watched(r)))
    )
    report = {
        "rows": args.rows,
        "cluster": f"standalone master + 2 workers x 1 core on 127.0.0.1, executors {EXECUTOR_MEMORY} heap",
        "machine": f"{os.cpu_count()} cores",
        "runs": runs,
        "tolerance": {"relative": TOLERANCE[0], "mib": TOLERANCE[1]},
        "memory_flat": flat,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(args.out + ".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
