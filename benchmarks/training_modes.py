"""Training cost of K per-segment autoencoders against one shared autoencoder.

    make bench-modes                                         # 200,000 rows, K=8, M=10,000, 10 epochs
    make bench-modes MODES_ARGS="--rows 100000 --backends per_segment"

On the synthetic transactions (``generate_transactions(spark, rows, seed)``),
the model trains on the rows with ``event_date < 2024-03-01`` (normal rows
only: ``labelCol="is_fraud"``) and is evaluated on the rest (a later date
range it never saw) with ``model.evaluation`` (ROC-AUC / PR-AUC in Spark,
exact; precision / recall / F1 of ``is_anomaly``).

Same work in both modes: KMeans into K segments, then

* ``trainingMode="per_segment"``: K autoencoders, segment k's on at most M of
  its rows (the ``maxRowsPerSegment`` sample);
* ``trainingMode="shared"``: one autoencoder on the union of the same
  per-segment samples (at most K x M rows; ``training/segments.py``,
  ``group_samples``), per-segment thresholds.

Same architecture ([32, 16, 8]), batch 256, 10 % validation, and every model
runs exactly ``--epochs`` epochs (early-stopping patience = epochs, so early
stopping never cuts one model's work short against another's). Each mode runs
with each ``trainingBackend`` asked for: ``per_segment`` (the models spread
over at most one Spark task per task slot, each task training its models
together as one stacked computation; TensorFlow limited to
``spark.task.cpus`` threads) and ``local`` (the driver trains them together
with every core). One small
warm-up fit per backend runs first, so no timed fit pays for importing
TensorFlow into the Python workers.

Reported per run: wall time of ``SegmentAE.fit`` and of its "train
autoencoders" stage (``model.artifact.training["timings"]``), rows trained,
and the held-out metrics; then the ratio per-segment / shared for each
backend (goal <= 1.2). Writes benchmarks/results/training_modes.json and .md.
The default run took 243 s on 2 shared cores (measured 2026-11-23).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from pyspark.sql import functions as F

from segae_spark import SegmentAE, generate_transactions, get_or_create_session

from reporting import run_environment, versions_text, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "training_modes")
CUTOFF = "2024-03-01"
MODES = ("per_segment", "shared")


def params(args, mode: str, backend: str) -> dict:
    return {
        "labelCol": "is_fraud",
        "nClusters": args.clusters,
        "maxRowsPerSegment": args.max_rows_per_segment,
        "minRowsPerSegment": 200,
        "autoencoder": {
            "hidden_layers": [32, 16, 8],
            "epochs": args.epochs,
            "batch_size": 256,
            "validation_split": 0.1,
            "early_stopping_patience": args.epochs,
        },
        "thresholdMethod": "quantile",
        "thresholdQuantile": 0.99,
        "trainingMode": mode,
        "trainingBackend": backend,
        "seed": args.seed,
    }


def warm_up(spark, backend: str, seed: int) -> float:
    """A tiny fit with 2 models, so the Python workers (or the driver) have TensorFlow loaded."""
    start = time.perf_counter()
    data = generate_transactions(spark, 4000, seed=seed + 100)
    SegmentAE(
        labelCol="is_fraud", nClusters=2, maxRowsPerSegment=500, minRowsPerSegment=50,
        autoencoder={"hidden_layers": [8, 4], "epochs": 1}, trainingBackend=backend, seed=seed,
    ).fit(data)  # fmt: skip
    return time.perf_counter() - start


def run(train, test, p: dict) -> dict:
    start = time.perf_counter()
    model = SegmentAE(**p).fit(train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = model.evaluation(test, "is_fraud")["global"]
    eval_s = time.perf_counter() - start
    models = {name: m.training for name, m in model.artifact.models.items()}
    return {
        "mode": p["trainingMode"],
        "backend": p["trainingBackend"],
        "fit_s": round(fit_s, 2),
        "stages_s": model.artifact.training["timings"],
        "train_autoencoders_s": model.artifact.training["timings"]["train autoencoders"],
        "models": len(models),
        "rows_trained": sum(t["rows"] for t in models.values()),
        "epochs_run": sorted({t["epochs_run"] for t in models.values()}),
        "model_seconds_sum": round(sum(t["seconds"] for t in models.values()), 2),
        "per_model": {name: {k: t[k] for k in ("rows", "epochs_run", "seconds", "train_loss")} for name, t in sorted(models.items())},
        "segments": [{"segment": s["segment"], "rows": s["rows"], "model": s["model"]} for s in model.artifact.segments],
        "eval_s": round(eval_s, 2),
        "metrics": {k: metrics[k] for k in ("roc_auc", "pr_auc", "precision", "recall", "f1", "rows")},
    }


def markdown(runs: list[dict], ratios: list[dict]) -> str:
    head = ["mode", "backend", "models", "rows trained", "fit s", "train AEs s", "sum of model s", "ROC-AUC", "PR-AUC", "precision", "recall", "F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        m = r["metrics"]
        lines.append(
            "| " + " | ".join([
                r["mode"], r["backend"], str(r["models"]), f"{r['rows_trained']:,}", f"{r['fit_s']:.1f}",
                f"{r['train_autoencoders_s']:.1f}", f"{r['model_seconds_sum']:.1f}", f"{m['roc_auc']:.4f}",
                f"{m['pr_auc']:.4f}", f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
            ]) + " |"  # fmt: skip
        )
    lines += ["", "| per-segment / shared | fit ratio | train AEs ratio | goal |", "|---|---|---|---|"]
    for q in ratios:
        ok = "met" if q["fit_ratio"] <= 1.2 else "missed"
        lines.append(f"| {q['label']} | {q['fit_ratio']:.2f} | {q['train_autoencoders_ratio']:.2f} | <= 1.2 ({ok}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--clusters", type=int, default=8, help="K: segments, and autoencoders in per_segment mode")
    parser.add_argument("--max-rows-per-segment", type=int, default=10_000, help="M")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backends", default="per_segment,local", help="trainingBackend values to run, comma-separated")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=RESULTS, help="results path without extension (.json and .md are written)")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    total_start = time.perf_counter()
    spark = get_or_create_session()
    data = generate_transactions(spark, args.rows, seed=args.seed).cache()
    train = data.filter(F.col("event_date") < F.lit(CUTOFF))
    test = data.filter(F.col("event_date") >= F.lit(CUTOFF))
    counts = {r["t"]: r["n"] for r in data.groupBy((F.col("event_date") < F.lit(CUTOFF)).alias("t")).agg(F.count("*").alias("n")).collect()}
    train_normals = train.filter("is_fraud = 0").count()

    warm = {b: round(warm_up(spark, b, args.seed), 1) for b in backends}
    runs, ratios = [], []
    for backend in backends:
        by_mode = {}
        for mode in MODES:
            r = run(train, test, params(args, mode, backend))
            by_mode[mode] = r
            runs.append(r)
            print(
                f"[done] mode={mode} backend={backend}: fit {r['fit_s']:.1f}s, train AEs {r['train_autoencoders_s']:.1f}s, "
                f"pr_auc {r['metrics']['pr_auc']:.4f}",
                file=sys.stderr,
                flush=True,
            )
        per, shared = by_mode["per_segment"], by_mode["shared"]
        ratios.append({
            "label": f"backend={backend}",
            "fit_ratio": per["fit_s"] / shared["fit_s"],
            "train_autoencoders_ratio": per["train_autoencoders_s"] / shared["train_autoencoders_s"],
        })  # fmt: skip
    if len(backends) > 1:
        best = lambda mode, key: min(r[key] for r in runs if r["mode"] == mode)  # noqa: E731
        ratios.append({
            "label": "fastest backend of each mode",
            "fit_ratio": best("per_segment", "fit_s") / best("shared", "fit_s"),
            "train_autoencoders_ratio": best("per_segment", "train_autoencoders_s") / best("shared", "train_autoencoders_s"),
        })  # fmt: skip

    total_s = round(time.perf_counter() - total_start, 1)
    report = {
        **run_environment(),
        "spark_parallelism": spark.sparkContext.defaultParallelism,
        "spark_task_cpus": spark.conf.get("spark.task.cpus", "1"),
        "data": {"rows": args.rows, "seed": args.seed, "cutoff": CUTOFF, "train_rows": counts.get(True, 0),
                 "train_normal_rows": train_normals, "test_rows": counts.get(False, 0)},  # fmt: skip
        "config": {"K": args.clusters, "M": args.max_rows_per_segment, "epochs": args.epochs,
                   "params": params(args, "<mode>", "<backend>")},  # fmt: skip
        "warm_up_s": warm,
        "runs": runs,
        "ratios": ratios,
        "total_seconds": total_s,
    }
    table = markdown(runs, ratios)
    header = (
        f"# Training modes: {args.clusters} per-segment autoencoders vs one shared\n\n"
        + versions_text(report)
        + f"; {report['machine']['cpus']} CPUs, Spark parallelism {report['spark_parallelism']}, "
        f"{report['machine']['platform']}, Python {report['machine']['python']}.\n\n"
        f"{args.rows:,} synthetic transactions (seed {args.seed}); train on {train_normals:,} normal rows before "
        f"{CUTOFF}, evaluate on the {counts.get(False, 0):,} rows from {CUTOFF} on. K={args.clusters}, "
        f"M={args.max_rows_per_segment:,} rows per segment, {args.epochs} epochs for every model. "
        f"Whole run {total_s:.0f} s.\n\n"
    )
    print(table)
    write_report(args.out, report, header + table, f"whole run {total_s:.0f} s; ")


if __name__ == "__main__":
    main()
