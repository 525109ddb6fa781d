"""Wall time of the grid-search optimizer against training the same candidates one by one.

    make bench-optimizer                                   # 60,000 rows, the acceptance grid
    make bench-optimizer OPTIMIZER_ARGS="--rows 200000 --epochs 10"

The grid is the acceptance test's: 2 autoencoder configs x 2 clusterers
(kmeans, minibatch_kmeans) x 2 cluster counts (3, 5) x 3 threshold ratios,
per-segment mode, on the synthetic transactions split by a seeded hash into
train (70 %) and labelled validation (30 %).

* ``optimizer``: ``SegmentAEOptimizer.fit`` (preprocessing fitted once, each
  clustering once, candidates of a clustering trained two at a time, each
  candidate's validation errors computed once for all ratios);
* ``one by one``: what a SegmentAE user does without it: for each candidate
  ``SegmentAE(...).fit(train)``, then ``model.evaluation(valid, ratio)`` for
  each ratio (every fit repeats the preprocessing and the clustering, every
  evaluation re-scores the validation rows).

With ``--supervised`` each candidate also gets a random forest and a GBT
second stage (leaderboard rows of their own; the one-by-one run, timed
without them, is then not the same work: compare times without the flag).

Both runs must agree: every (candidate, ratio) gets the same model id and
the same metrics (checked, to 1e-9), so the time saved is work not repeated,
not work skipped. A warm-up fit runs first so neither run pays for importing
TensorFlow into the Python workers. Writes benchmarks/results/optimizer.json
and .md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from segae_spark import SegmentAE, SegmentAEOptimizer, generate_transactions, get_or_create_session
from segae_spark.optimizer import split_validation

from reporting import run_environment, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "optimizer")
KEYS = ("roc_auc", "pr_auc", "f1", "precision", "recall", "tp", "fp")


def base(args) -> SegmentAE:
    return SegmentAE(
        labelCol="is_fraud", idCol="transaction_id", dateCol="event_date", scaler="standard",
        maxRowsPerSegment=args.max_rows_per_segment, minRowsPerSegment=100, seed=args.seed,
    )  # fmt: skip


def grid(args) -> dict:
    ae = {"epochs": args.epochs, "batch_size": 256}
    stages = [{"classifier": "random_forest", "num_trees": 50, "max_depth": 6}, {"classifier": "gbt", "max_iter": 30, "max_depth": 4}]
    return {
        "supervised": stages if args.supervised else None,
        "autoencoders": [{**ae, "hidden_layers": [16, 8]}, {**ae, "hidden_layers": [32, 16, 8]}],
        "cluster_models": ["kmeans", "minibatch_kmeans"],
        "n_clusters": [3, 5],
        "training_modes": ["per_segment"],
        "threshold_ratios": [2.0, 4.0, 6.0],
    }


def one_by_one(args, optimizer: SegmentAEOptimizer, train, valid) -> tuple[float, dict]:
    start = time.perf_counter()
    results = {}
    for c in optimizer.candidates:
        model = base(args).setParams(**c.params()).fit(train)
        for ratio in optimizer.threshold_ratios:
            m = model.evaluation(valid, "is_fraud", threshold_ratio=ratio)["global"]
            results[(c.index, ratio)] = {"model_id": model.model_id, **{k: m[k] for k in KEYS}}
        print(f"[one by one] candidate {c.index + 1}/{len(optimizer.candidates)} at {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    return time.perf_counter() - start, results


def disagreements(leaderboard: list[dict], naive: dict) -> list[str]:
    out = []
    for row in leaderboard:
        if row["second_stage"] != "none":
            continue
        other = naive[(row["candidate"], row["threshold_ratio"])]
        if other["model_id"] != row["model_id"]:
            out.append(f"candidate {row['candidate']}: model {row['model_id']} vs {other['model_id']}")
        for k in KEYS:
            a, b = row[k], other[k]
            if (a is None) != (b is None) or a is not None and abs(a - b) > 1e-9:
                out.append(f"candidate {row['candidate']} ratio {row['threshold_ratio']}: {k} {a} vs {b}")
    return out


def markdown(report: dict) -> str:
    r = report
    lines = [
        "| run | wall s | candidates | leaderboard rows |",
        "|---|---|---|---|",
        f"| optimizer | {r['optimizer_s']:.1f} | {r['candidates']} | {r['rows']} |",
        f"| one by one | {r['one_by_one_s']:.1f} | {r['candidates']} | {r['rows']} |",
        "",
        f"one by one / optimizer: **{r['speedup']:.2f}x**; results identical: {not r['disagreements']}",
        "",
        "Top 5 of the leaderboard (PR-AUC):",
        "",
        "| rank | candidate | clusterer | k | autoencoder | second stage | ratio | PR-AUC | ROC-AUC | F1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["leaderboard"][:5]:
        lines.append(
            f"| {row['rank']} | {row['candidate']} | {row['cluster_model']} | {row['n_clusters']} | {row['autoencoder']} | "
            f"{row['second_stage']} | {row['threshold_ratio']:g} | {row['pr_auc']:.4f} | {row['roc_auc']:.4f} | {row['f1']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-rows-per-segment", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--supervised", action="store_true",
        help="also a random forest and a GBT second stage per candidate (the one-by-one run skips them)",
    )  # fmt: skip
    parser.add_argument("--out", default=RESULTS, help="results path without extension (.json and .md are written)")
    args = parser.parse_args()

    spark = get_or_create_session()
    data = generate_transactions(spark, args.rows, seed=args.seed)
    train, valid = split_validation(data, 0.3, seed=args.seed)
    train, valid = train.cache(), valid.cache()
    counts = {"train": train.count(), "validation": valid.count()}
    warm = time.perf_counter()
    base(args).setParams(nClusters=2, autoencoder={"hidden_layers": [4], "epochs": 1}).fit(train.limit(2000))
    warm_s = time.perf_counter() - warm

    optimizer = SegmentAEOptimizer(base(args), **grid(args))
    start = time.perf_counter()
    result = optimizer.fit(train, valid)
    optimizer_s = time.perf_counter() - start
    print(f"[optimizer] {optimizer_s:.1f}s", file=sys.stderr, flush=True)
    naive_s, naive = one_by_one(args, optimizer, train, valid)

    report = {
        **run_environment(),
        "spark_parallelism": spark.sparkContext.defaultParallelism,
        "data": {"rows": args.rows, "seed": args.seed, **counts},
        "grid": grid(args),
        "candidates": len(optimizer.candidates),
        "rows": len(result.leaderboard),
        "warm_up_s": round(warm_s, 1),
        "optimizer_s": round(optimizer_s, 1),
        "one_by_one_s": round(naive_s, 1),
        "speedup": naive_s / optimizer_s,
        "disagreements": disagreements(result.leaderboard, naive),
        "leaderboard": result.leaderboard,
    }
    table = markdown(report)
    print(table)
    write_report(args.out, report, table)
    if report["disagreements"]:
        print("\n".join(report["disagreements"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
