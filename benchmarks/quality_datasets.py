"""Detection quality of segae-spark on public datasets, next to scikit-learn's IsolationForest.

    make bench-quality                                        # every dataset found
    make bench-quality QUALITY_ARGS="--datasets cardio,thyroid --epochs 10"

Protocol (../shared/datasets/README.md, the SegmentAE protocol): with seed 42
shuffle the normal rows, train on 75 % of them, test on the other 25 % plus
every anomaly. NSL-KDD has its own test file: train on every normal row of
KDDTrain+_20Percent.txt, test on all of KDDTest+.txt (see
:mod:`segae_spark.data.datasets`).

One config for every dataset (no per-dataset tuning):

* SegmentAE, fitted twice, ``trainingMode="shared"`` (one autoencoder, per-
  segment thresholds, SegmentAE's way) and ``"per_segment"`` (one autoencoder
  per segment, each in its own Spark task): median imputation, ``standard``
  scaler, string columns one-hot; KMeans with ``nClusters=3`` (2 when the
  training split has fewer than 1,500 rows); Dense autoencoder with hidden
  layers ``[h, h/2, max(2, h/4)]``, ``h = clip(next power of 2 >= d, 8, 64)``
  for ``d`` encoded features (numerics + one slot per training category + an
  unseen slot per categorical); 30 epochs (``--epochs``), batch 256, Adam
  1e-3, 10 % validation, early stopping patience 5; ``maxRowsPerSegment=20000``,
  ``minRowsPerSegment=200``; threshold = 0.99 quantile of the segment's
  training MSE (``thresholdMethod="quantile"``); seed 42.
* AEGMM (``autoencoder={"type": "aegmm", ...}``), fitted in both modes with the
  same SegmentAE config: encoder ``[h, h/2]``, latent ``max(2, h/4)`` (the
  dense bottleneck), the AEGMM defaults otherwise (2 mixture components,
  density net [10] with dropout 0.5, ``w_energy`` 0.1, ``w_cov_diag`` 0.005);
  its score is the sample energy (relative to its minimum), thresholded the
  same way.
* IsolationForest(n_estimators=200, random_state=42), default
  ``max_samples`` / ``contamination``, fitted on the same training normals;
  string columns one-hot with pandas ``get_dummies`` (test columns aligned to
  the training ones, unseen categories dropped), numerics as they are; score =
  ``-score_samples`` (higher = more anomalous).

Metrics on the test split, exact (scikit-learn on the collected
``(label, score, flag)`` of the small test split): ROC-AUC and PR-AUC
(average precision) of the score, best F1 over all score thresholds, and
precision / recall / F1 of SegmentAE's ``is_anomaly`` flag. SegmentAE's score
is the reconstruction error (``anomaly_score``, what ``evaluation`` ranks by
default); a second table ranks by ``score_ratio`` (error / the row's segment
threshold, the scale of the per-segment flag). ``fit s`` is the
wall time of ``SegmentAE.fit`` / ``IsolationForest.fit``; one small untimed
warm-up fit runs first, so the first dataset's fit does not pay for loading
TensorFlow into the Spark Python workers.

Writes benchmarks/results/quality_datasets.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support, roc_auc_score

from segae_spark import SegmentAE, get_or_create_session
from segae_spark.data.datasets import (
    CATEGORICAL_COLS,
    DATASETS,
    DEFAULT_ROOT,
    ID_COL,
    benchmark_pandas,
    dataset_available,
    dataset_paths,
    feature_columns,
)

from reporting import run_environment, versions_text, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "quality_datasets")
MODES = ("shared", "per_segment")
SYSTEMS = (
    ("segae_shared", "SegmentAE shared"),
    ("segae_per_segment", "SegmentAE per-segment"),
    ("aegmm_shared", "AEGMM shared"),
    ("aegmm_per_segment", "AEGMM per-segment"),
    ("iforest", "IsolationForest"),
)
SEGAE_SYSTEMS = tuple(key for key, _ in SYSTEMS if key != "iforest")
METRICS = ("roc_auc", "pr_auc", "best_f1")


# ---------------------------------------------------------------- config
def encoded_width(train: pd.DataFrame, label: str, categorical: tuple[str, ...]) -> int:
    """Width of the preprocessed feature vector: numerics + (categories + unseen slot) per string column."""
    cols = feature_columns(train.columns, label)
    return sum(train[c].nunique(dropna=False) + 1 if c in categorical else 1 for c in cols)


def hidden_layers(d: int) -> list[int]:
    h = min(64, max(8, 1 << max(0, math.ceil(math.log2(max(d, 1))))))
    return [h, h // 2, max(2, h // 4)]


def aegmm_config(width: int, epochs: int) -> dict:
    """The AEGMM counterpart of the dense config: encoder [h, h/2], latent max(2, h/4), as the dense bottleneck."""
    h1, h2, latent = hidden_layers(width)
    return {
        "type": "aegmm", "encoder_layers": [h1, h2], "latent_dim": latent, "epochs": epochs, "batch_size": 256,
        "learning_rate": 1e-3, "validation_split": 0.1, "early_stopping_patience": 5,
    }  # fmt: skip


def segae_params(train_rows: int, width: int, label: str, epochs: int, seed: int) -> dict:
    return {
        "labelCol": label,
        "idCol": ID_COL,
        "dateCol": "",
        "imputeStrategy": "median",
        "scaler": "standard",
        "nClusters": 3 if train_rows >= 1500 else 2,
        "autoencoder": {
            "hidden_layers": hidden_layers(width),
            "epochs": epochs,
            "batch_size": 256,
            "learning_rate": 1e-3,
            "validation_split": 0.1,
            "early_stopping_patience": 5,
        },
        "maxRowsPerSegment": 20000,
        "minRowsPerSegment": 200,
        "thresholdMethod": "quantile",
        "thresholdQuantile": 0.99,
        "thresholdMetric": "mse",
        "seed": seed,
    }


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """The arguments every dataset benchmark takes: which datasets, where, epochs and seed."""
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated subset of {','.join(DATASETS)}")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--root", default=DEFAULT_ROOT, help="folder of the benchmark datasets")


def dataset_names(parser: argparse.ArgumentParser, args) -> list[str]:
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; expected among {list(DATASETS)}")
    return names


@dataclasses.dataclass(frozen=True)
class BenchmarkDataset:
    """One dataset split by the protocol, with the documented SegmentAE config sized for it."""

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    label: str
    categorical: tuple[str, ...]
    width: int
    params: dict

    @classmethod
    def load(cls, name: str, root: str, seed: int, epochs: int) -> "BenchmarkDataset":
        train, test, label = benchmark_pandas(name, root, seed)
        categorical = CATEGORICAL_COLS.get(name, ())
        width = encoded_width(train, label, categorical)
        return cls(name, train, test, label, categorical, width, segae_params(len(train), width, label, epochs, seed))

    def summary(self) -> dict:
        return {
            "dataset": self.name,
            "train_rows": len(self.train),
            "test_rows": len(self.test),
            "test_anomalies": int(self.test[self.label].sum()),
            "features": len(feature_columns(self.train.columns, self.label)),
            "encoded_features": self.width,
            "n_clusters": self.params["nClusters"],
            "hidden_layers": self.params["autoencoder"]["hidden_layers"],
        }


# ---------------------------------------------------------------- metrics
def score_metrics(y: np.ndarray, score: np.ndarray) -> dict:
    precision, recall, _ = precision_recall_curve(y, score)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "best_f1": float(np.nanmax(f1)),
    }


def flag_metrics(y: np.ndarray, flag: np.ndarray) -> dict:
    p, r, f, _ = precision_recall_fscore_support(y, flag, average="binary", zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f), "flagged": int(flag.sum())}


# ---------------------------------------------------------------- systems
def warm_up(spark, seed: int) -> float:
    """A tiny untimed fit first, so no timed fit pays for loading TensorFlow into the Python workers."""
    from segae_spark import generate_transactions

    start = time.perf_counter()
    SegmentAE(
        labelCol="is_fraud", nClusters=2, maxRowsPerSegment=500, minRowsPerSegment=50,
        autoencoder={"hidden_layers": [8, 4], "epochs": 1}, seed=seed,
    ).fit(generate_transactions(spark, 4000, seed=seed + 100))  # fmt: skip
    return time.perf_counter() - start


def run_segae(train_df, test_df, label: str, params: dict, mode: str) -> dict:
    start = time.perf_counter()
    model = SegmentAE(**params, trainingMode=mode).fit(train_df)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    out = model.transform(test_df).select(label, "anomaly_score", "score_ratio", "is_anomaly").toPandas()  # small test split
    score_s = time.perf_counter() - start
    y = out[label].to_numpy().astype(int)
    flag = out["is_anomaly"].to_numpy().astype(int)
    timings = model.artifact.training["timings"]
    return {
        **score_metrics(y, out["anomaly_score"].to_numpy(dtype=np.float64)),
        "score_ratio": score_metrics(y, out["score_ratio"].to_numpy(dtype=np.float64)),
        "flag": flag_metrics(y, flag),
        "fit_s": round(fit_s, 2),
        "score_s": round(score_s, 2),
        "train_autoencoders_s": timings.get("train autoencoders"),
        "segments": [{"segment": s["segment"], "rows": s["rows"], "model": s["model"]} for s in model.artifact.segments],
        "encoded_features": len(model.feature_names),
    }


def one_hot_encoder(train: pd.DataFrame, label: str, categorical: tuple[str, ...]) -> Callable[[pd.DataFrame], np.ndarray]:
    """A function encoding a frame like ``train``: its feature columns, string ones one-hot with
    ``train``'s slots (a category ``train`` lacks is dropped, one it has and the frame lacks is 0)."""
    cols = feature_columns(train.columns, label)
    cats = [c for c in cols if c in categorical]

    def one_hot(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.get_dummies(frame[cols], columns=cats, dtype=np.float64) if cats else frame[cols]

    columns = one_hot(train).columns

    def encode(frame: pd.DataFrame) -> np.ndarray:
        return one_hot(frame).reindex(columns=columns, fill_value=0.0).to_numpy(dtype=np.float64)

    return encode


def iforest_matrices(train: pd.DataFrame, test: pd.DataFrame, label: str, categorical: tuple[str, ...]):
    encode = one_hot_encoder(train, label, categorical)
    return encode(train), encode(test)


def run_iforest(train: pd.DataFrame, test: pd.DataFrame, label: str, categorical: tuple[str, ...], seed: int) -> dict:
    x_train, x_test = iforest_matrices(train, test, label, categorical)
    forest = IsolationForest(n_estimators=200, random_state=seed)
    start = time.perf_counter()
    forest.fit(x_train)
    fit_s = time.perf_counter() - start
    score = -forest.score_samples(x_test)
    return {**score_metrics(test[label].to_numpy().astype(int), score), "fit_s": round(fit_s, 2), "encoded_features": x_train.shape[1]}


# ---------------------------------------------------------------- tables
def _f(v, digits=4):
    return "—" if v is None else f"{v:.{digits}f}"


def markdown_tables(results: list[dict], means: dict) -> str:
    head = ["dataset", "train / test rows", "features"]
    for _, title in SYSTEMS:
        head += [f"{title} ROC-AUC", "PR-AUC", "best F1", "fit s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r["dataset"], f"{r['train_rows']:,} / {r['test_rows']:,}", str(r["features"])]
        for key, _ in SYSTEMS:
            s = r.get(key)
            row += [_f(s and s["roc_auc"]), _f(s and s["pr_auc"]), _f(s and s["best_f1"]), _f(s and s["fit_s"], 1)]
        lines.append("| " + " | ".join(row) + " |")
    row = [f"**mean** ({len(results)})", "", ""]
    for key, _ in SYSTEMS:
        m = means.get(key, {})
        row += [_f(m.get("roc_auc")), _f(m.get("pr_auc")), _f(m.get("best_f1")), _f(m.get("fit_s"), 1)]
    lines.append("| " + " | ".join(row) + " |")

    raw = ["", "Ranked by `score_ratio` (error / the row's segment threshold) instead of the raw error:", ""]
    head = ["dataset"]
    for key in SEGAE_SYSTEMS:
        head += [f"{dict(SYSTEMS)[key]} ROC-AUC", "PR-AUC", "best F1"]
    raw += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r["dataset"]]
        for key in SEGAE_SYSTEMS:
            m = (r.get(key) or {}).get("score_ratio", {})
            row += [_f(m.get("roc_auc")), _f(m.get("pr_auc")), _f(m.get("best_f1"))]
        raw.append("| " + " | ".join(row) + " |")
    row = ["**mean**"]
    for key in SEGAE_SYSTEMS:
        m = means.get(key, {})
        row += [_f(m.get("score_ratio_roc_auc")), _f(m.get("score_ratio_pr_auc")), _f(m.get("score_ratio_best_f1"))]
    raw.append("| " + " | ".join(row) + " |")

    flags = ["", "Thresholded flag (`is_anomaly`, 0.99 quantile of the segment's training MSE) on the test split:", ""]
    head = ["dataset", "anomalies in test"]
    for key in SEGAE_SYSTEMS:
        title = dict(SYSTEMS)[key]
        head += [f"{title} precision", "recall", "F1"]
    flags += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r["dataset"], f"{r['test_anomalies']:,}"]
        for key in SEGAE_SYSTEMS:
            s = r.get(key)
            fl = s["flag"] if s else {}
            row += [_f(fl.get("precision")), _f(fl.get("recall")), _f(fl.get("f1"))]
        flags.append("| " + " | ".join(row) + " |")
    row = ["**mean**", ""]
    for key in SEGAE_SYSTEMS:
        m = means.get(key, {})
        row += [_f(m.get("flag_precision")), _f(m.get("flag_recall")), _f(m.get("flag_f1"))]
    flags.append("| " + " | ".join(row) + " |")
    return "\n".join(lines + [""] + wins(results) + raw + flags)


def wins(results: list[dict]) -> list[str]:
    """How often each SegmentAE mode's ROC-AUC is at or above IsolationForest's (the issue's goal)."""
    lines = []
    for key in SEGAE_SYSTEMS:
        done = [r for r in results if r.get(key) and r.get("iforest")]
        for ranking, get in (("error", lambda m: m["roc_auc"]), ("score_ratio", lambda m: m["score_ratio"]["roc_auc"])):
            ahead = [r["dataset"] for r in done if get(r[key]) >= r["iforest"]["roc_auc"]]
            lines.append(
                f"- {dict(SYSTEMS)[key]} ROC-AUC, ranked by {ranking}, at or above IsolationForest on "
                f"{len(ahead)} of {len(done)} datasets" + (f" ({', '.join(ahead)})" if ahead else "")
            )
    return lines


def compute_means(results: list[dict]) -> dict:
    means = {}
    for key, _ in SYSTEMS:
        done = [r[key] for r in results if r.get(key)]
        if not done:
            continue
        m = {k: float(np.mean([d[k] for d in done])) for k in (*METRICS, "fit_s")}
        if "flag" in done[0]:
            for k in ("precision", "recall", "f1"):
                m[f"flag_{k}"] = float(np.mean([d["flag"][k] for d in done]))
            for k in METRICS:
                m[f"score_ratio_{k}"] = float(np.mean([d["score_ratio"][k] for d in done]))
        means[key] = m
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_args(parser)
    parser.add_argument("--out", default=RESULTS, help="results path without extension (.json and .md are written)")
    args = parser.parse_args()
    names = dataset_names(parser, args)

    total_start = time.perf_counter()
    spark = get_or_create_session({"spark.sql.shuffle.partitions": "4"})
    results, skipped = [], []
    warm_s = warm_up(spark, args.seed) if any(dataset_available(n, args.root) for n in names) else 0.0
    for name in names:
        if not dataset_available(name, args.root):
            missing = [p for p in dataset_paths(name, args.root) if not os.path.isfile(p)]
            skipped.append({"dataset": name, "missing": missing})
            print(f"[skip] {name}: file(s) not found: {', '.join(missing)}", file=sys.stderr)
            continue
        start = time.perf_counter()
        data = BenchmarkDataset.load(name, args.root, args.seed, args.epochs)
        train, test, label, categorical, width, params = data.train, data.test, data.label, data.categorical, data.width, data.params
        result = data.summary()
        train_df, test_df = spark.createDataFrame(train), spark.createDataFrame(test)
        for mode in MODES:
            result[f"segae_{mode}"] = run_segae(train_df, test_df, label, params, mode)
        aegmm_params = {**params, "autoencoder": aegmm_config(width, args.epochs)}
        for mode in MODES:
            result[f"aegmm_{mode}"] = run_segae(train_df, test_df, label, aegmm_params, mode)
        result["iforest"] = run_iforest(train, test, label, categorical, args.seed)
        result["seconds"] = round(time.perf_counter() - start, 1)
        results.append(result)
        print(
            f"[done] {name}: " + "  ".join(f"{k} roc={result[k]['roc_auc']:.4f} pr={result[k]['pr_auc']:.4f}" for k, _ in SYSTEMS)
            + f"  ({result['seconds']:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    means = compute_means(results)
    total_s = round(time.perf_counter() - total_start, 1)
    report = {
        **run_environment(),
        "spark_parallelism": spark.sparkContext.defaultParallelism,
        "protocol": "seed 42; 75% of shuffled normals train; test = other 25% normals + all anomalies; "
        "nsl_kdd: all normals of KDDTrain+_20Percent train, all of KDDTest+ tests",
        "config": {
            "segae": {k: v for k, v in segae_params(10_000, 16, "<label>", args.epochs, args.seed).items() if k not in ("labelCol",)}
            | {"nClusters": "3 (2 if < 1500 training rows)", "autoencoder.hidden_layers": "[h, h/2, max(2, h/4)], h = clip(pow2ceil(d), 8, 64)"},
            "segae_modes": list(MODES),
            "aegmm": "the SegmentAE config with autoencoder = "
            + json.dumps(aegmm_config(16, args.epochs) | {"encoder_layers": "[h, h/2]", "latent_dim": "max(2, h/4)"}),
            "iforest": {"n_estimators": 200, "random_state": args.seed, "categoricals": "pandas get_dummies, aligned"},
        },
        "results": results,
        "means": means,
        "skipped": skipped,
        "warm_up_seconds": round(warm_s, 1),
        "total_seconds": total_s,
    }
    table = markdown_tables(results, means)
    header = (
        "# Detection quality on public datasets\n\n"
        + versions_text(report)
        + f"; {report['machine']['cpus']} CPUs, {report['machine']['platform']}, Python {report['machine']['python']}. "
        f"Epochs {args.epochs}, seed {args.seed}. Whole run {total_s:.0f} s.\n\n"
        "Protocol: " + report["protocol"] + ". Config: see `benchmarks/quality_datasets.py`.\n\n"
    )
    notes = "".join(f"\nSkipped {s['dataset']}: missing {', '.join(s['missing'])}" for s in skipped)
    print(table)
    if notes:
        print(notes.strip())
    write_report(args.out, report, header + table + "\n" + notes, f"whole run {total_s:.0f} s; ")


if __name__ == "__main__":
    main()
