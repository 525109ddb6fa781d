"""segae-spark side by side with SegmentAE, PyOD and scikit-learn: detection quality and scoring speed, one run.

    make bench-peers                                   # every dataset, 1M-row speed run (18-38 min on 2 cores)
    make bench-peers PEERS_ARGS="--datasets cardio,thyroid --speed-rows 100000"

**Quality.** For every dataset in ../shared/datasets, with the protocol of its
README (seed 42: 75 % of the shuffled normals train, the other 25 % and every
anomaly test; NSL-KDD trains on the normals of its train file and tests on
its test file), on the same splits:

* ``segae-spark shared`` / ``per-segment``: ``SegmentAE`` with the documented
  config of ``benchmarks/quality_datasets.py`` (``segae_params``: standard
  scaling, KMeans K = 3 (2 under 1,500 training rows), dense ``[h, h/2, h/4]`` sized by the encoded width,
  30 epochs with early stopping, threshold = 0.99 quantile of the segment's
  training MSE), in each training mode.
* ``segae-spark optimizer's best``: the ``SegmentAEOptimizer``'s best of 8
  configs: 2 autoencoders (that dense net and a shallower ``[h, h/4]``) x
  K in {K0, K0 + 2} (K0: the default config's K) x training mode {shared,
  per-segment}; the default config is one of them. Ranked by ROC-AUC on a
  validation table carved from the **training normals only**:
  20 % of them (seeded), plus as many synthetic anomalies as a quarter of
  those rows, made from them (half with every column resampled on its own,
  which breaks the dependencies between columns; half drawn uniformly from
  each numeric column's range widened by 10 %, as ADBench's "dependency" and
  "global" anomalies). No test row, and no real anomaly, is seen before the
  test. The chosen model (trained on the other 80 %) scores the test split.
* ``SegmentAE 1.5.26`` (the pandas / Keras library), in ``.venv-segmentae``
  through ``benchmarks/segmentae_runner.py``: its README's workflow with the
  same hidden layers, K, epochs, batch size, learning rate, validation share
  and patience; its ``OneHotEncoder`` for string columns, its ``MinMaxScaler``
  (its decoder ends in a sigmoid, so inputs belong in [0, 1]); score = the
  MSE reconstruction error, flag at its default ``threshold_ratio=1.0``;
  missing numbers set to the training median first (its imputer fills only
  the columns that had gaps when fitted).
* ``PyOD IForest`` (200 trees), ``PyOD ECOD`` (its AutoEncoder needs PyTorch,
  several GB here, so ECOD stands in, as the issue allows) and
  ``scikit-learn IsolationForest`` (200 trees), on the training normals with
  string columns one-hot (pandas ``get_dummies``, test aligned) and missing
  values set to the training median (PyOD refuses them); flag at each
  one's own threshold (PyOD: ``contamination=0.1``; scikit-learn:
  ``contamination="auto"``).

Per system and dataset: ROC-AUC and PR-AUC of the score, best F1 over all
thresholds, precision / recall of the system's own flag, fit seconds and
test-split scoring rows/s (tiny splits: that is mostly fixed cost, see the
speed table for throughput). Metrics come from one function for every system
(scikit-learn, on the collected scores of the small test split).

**Scoring speed.** On ``--speed-rows`` synthetic transactions (default 1M;
``generate_transactions``, seed 43), with every model fitted on the normal
rows of 50,000 others (seed 42): segae-spark's production path (what
``segae-spark score`` runs: the saved model, the rows as a Delta table,
``arrow_transform`` written by delta-rs, one commit), the generic Spark job
(read Parquet, ``transform``, write with Spark's Parquet writer, which turns
every row back into a JVM row), segae-spark's in-process ``PandasScorer`` on
the same rows in memory, SegmentAE's ``Preprocessing.transform`` +
``detections()``, and PyOD's ``decision_function`` (IForest, ECOD) after
encoding the rows as their training rows were (timed with it). Rows/s each,
same machine, same run.
SegmentAE scores under 1,000 rows/s here (24 minutes per million rows: its
errors are computed row by row in Python), so it scores the first
``--segmentae-speed-rows`` of them (default 100,000; 0 for all): a rate,
measured on a tenth of the rows.

Writes benchmarks/results/peers.json, peers.md and peers.png (mean ROC-AUC
per system and ROC-AUC per dataset).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import pandas as pd

from segae_spark import SegmentAE, SegmentAEModel, SegmentAEOptimizer, generate_transactions, get_or_create_session
from segae_spark.batch_scoring import score_table
from segae_spark.data.datasets import ID_COL, dataset_available
from segae_spark.io import write_table

from quality_datasets import (
    MODES,
    BenchmarkDataset,
    add_dataset_args,
    dataset_names,
    encoded_width,
    flag_metrics,
    hidden_layers,
    one_hot_encoder,
    score_metrics,
    segae_params,
    warm_up,
)
from reporting import run_environment, versions_text, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "peers")
SEGMENTAE_PYTHON = os.path.join(ROOT, ".venv-segmentae", "bin", "python")
SYSTEMS = (
    ("segae_shared", "segae-spark shared"),
    ("segae_per_segment", "segae-spark per-segment"),
    ("segae_best", "segae-spark optimizer's best"),
    ("segmentae", "SegmentAE 1.5.26"),
    ("pyod_iforest", "PyOD IForest"),
    ("pyod_ecod", "PyOD ECOD"),
    ("sklearn_iforest", "scikit-learn IsolationForest"),
)
TITLES = dict(SYSTEMS)
VALIDATION_FRACTION = 0.2
SPEED_TRAIN_ROWS = 50_000
SYNTHETIC = {"label": "is_fraud", "id": "transaction_id", "date": "event_date"}


# ---------------------------------------------------------------- validation for the optimizer
def synthetic_anomalies(normals: pd.DataFrame, columns: list[str], n: int, seed: int) -> pd.DataFrame:
    """``n`` rows unlike ``normals``: half resample every column independently, half are uniform per numeric column.

    Made only from training normals, so the optimizer ranks configs without
    seeing a real anomaly. Categorical (string) columns are resampled in both
    halves. The other columns (id, label) are left for the caller.
    """
    rng = np.random.default_rng(seed)
    n_dep = n // 2
    out = normals.iloc[rng.integers(0, len(normals), n)].reset_index(drop=True).copy()
    for col in columns:
        values = normals[col].to_numpy()
        out[col] = values[rng.integers(0, len(values), n)]
        if pd.api.types.is_numeric_dtype(normals[col]) and n > n_dep:
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            pad = 0.1 * (hi - lo)
            uniform = rng.uniform(lo - pad, hi + pad, n - n_dep)
            if pd.api.types.is_integer_dtype(normals[col]):
                uniform = np.round(uniform)
            out.loc[n_dep:, col] = uniform.astype(normals[col].dtype)
    return out


def validation_split(train: pd.DataFrame, label: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows): 20 % of the training normals plus synthetic anomalies made from them."""
    order = np.random.default_rng(seed).permutation(len(train))
    n_valid = int(round(VALIDATION_FRACTION * len(train)))
    valid, rest = train.iloc[np.sort(order[:n_valid])], train.iloc[np.sort(order[n_valid:])]
    columns = [c for c in train.columns if c not in (ID_COL, label)]
    fake = synthetic_anomalies(valid, columns, max(20, n_valid // 4), seed)
    fake[label] = 1
    fake[ID_COL] = np.arange(len(fake), dtype=np.int64) + int(train[ID_COL].max()) + 1
    return rest.reset_index(drop=True), pd.concat([valid, fake[train.columns]], ignore_index=True)


# ---------------------------------------------------------------- systems
def system_result(y: np.ndarray, score: np.ndarray, flag: np.ndarray, fit_s: float, score_s: float) -> dict:
    return {
        **score_metrics(y, score),
        **{k: v for k, v in flag_metrics(y, flag).items() if k in ("precision", "recall", "flagged")},
        "fit_s": round(fit_s, 2),
        "score_rows_per_s": round(len(y) / score_s, 1) if score_s > 0 else None,
    }


def score_segae(model, test_df, label: str) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    out = model.transform(test_df).select(ID_COL, label, "anomaly_score", "is_anomaly").toPandas()  # small: a test split
    return out.sort_values(ID_COL).reset_index(drop=True), time.perf_counter() - start


def run_segae(spark, train, test, label: str, params: dict, mode: str) -> dict:
    start = time.perf_counter()
    model = SegmentAE(**params, trainingMode=mode).fit(spark.createDataFrame(train))
    fit_s = time.perf_counter() - start
    out, score_s = score_segae(model, spark.createDataFrame(test), label)
    return system_result(out[label].to_numpy(int), out["anomaly_score"].to_numpy(float), out["is_anomaly"].to_numpy(int), fit_s, score_s)


def optimizer_grid(width: int, epochs: int) -> list[dict]:
    h1, h2, h3 = hidden_layers(width)
    ae = {"epochs": epochs, "batch_size": 256, "learning_rate": 1e-3, "validation_split": 0.1, "early_stopping_patience": 5}
    return [{**ae, "hidden_layers": [h1, h2, h3]}, {**ae, "hidden_layers": [h1, h3]}]


def run_segae_best(spark, train, test, label: str, params: dict, width: int, epochs: int, seed: int) -> dict:
    rest, valid = validation_split(train, label, seed)
    start = time.perf_counter()
    k = params["nClusters"]
    result = SegmentAEOptimizer(
        SegmentAE(**params), autoencoders=optimizer_grid(width, epochs), n_clusters=[k, k + 2], training_modes=list(MODES),
        metric="roc_auc",
    ).fit(spark.createDataFrame(rest), spark.createDataFrame(valid))  # fmt: skip
    fit_s = time.perf_counter() - start
    out, score_s = score_segae(result.best_model, spark.createDataFrame(test), label)
    best = result.best
    return {
        **system_result(out[label].to_numpy(int), out["anomaly_score"].to_numpy(float), out["is_anomaly"].to_numpy(int), fit_s, score_s),
        "chosen": {
            "autoencoder": best["autoencoder"], "n_clusters": best["n_clusters"], "training_mode": best["training_mode"],
            "validation_roc_auc": best["roc_auc"],
        },  # fmt: skip
    }


def detector_encoder(train: pd.DataFrame, label: str, categorical: tuple[str, ...]) -> Callable[[pd.DataFrame], np.ndarray]:
    """``quality_datasets.one_hot_encoder`` learnt on ``train``, missing values set to its median.

    PyOD refuses missing values (the credit-card and synthetic tables have
    some); scikit-learn's forest gets the same matrices, so the three differ
    only in the detector. The returned function encodes a frame like the
    training rows (their one-hot columns, their medians): what a detector's
    user runs before ``decision_function``, so the speed run times it.
    """
    one_hot = one_hot_encoder(train, label, categorical)
    medians = np.nan_to_num(np.nanmedian(one_hot(train), axis=0))

    def encode(frame: pd.DataFrame) -> np.ndarray:
        x = one_hot(frame)
        return np.where(np.isnan(x), medians, x)

    return encode


def run_pyod_and_sklearn(train, test, label: str, categorical: tuple[str, ...], seed: int) -> dict:
    from pyod.models.ecod import ECOD
    from pyod.models.iforest import IForest
    from sklearn.ensemble import IsolationForest

    encode = detector_encoder(train, label, categorical)
    x_train, x_test = encode(train), encode(test)
    y = test[label].to_numpy(int)
    results = {}
    for key, model in (
        ("pyod_iforest", IForest(n_estimators=200, random_state=seed)),
        ("pyod_ecod", ECOD()),
        ("sklearn_iforest", IsolationForest(n_estimators=200, random_state=seed)),
    ):
        start = time.perf_counter()
        model.fit(x_train)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        if key == "sklearn_iforest":
            score, flag = -model.score_samples(x_test), (model.predict(x_test) == -1).astype(int)
        else:
            score, flag = model.decision_function(x_test), model.predict(x_test)
        results[key] = system_result(y, score, flag, fit_s, time.perf_counter() - start)
    return results


def segmentae_job(name: str, kind: str, params: dict, drop: list[str], **paths) -> dict:
    """SegmentAE's counterpart of the segae-spark ``params``: label, K, autoencoder and seed taken from them."""
    ae = params["autoencoder"]
    return {
        "name": name, "kind": kind, "label": params["labelCol"], "drop": drop, "encoder": "OneHotEncoder", "scaler": "MinMaxScaler",
        "n_clusters": params["nClusters"], "hidden_layers": ae["hidden_layers"], "epochs": ae["epochs"],
        "batch_size": ae["batch_size"], "learning_rate": ae["learning_rate"], "validation_split": ae["validation_split"],
        "early_stopping_patience": ae["early_stopping_patience"], "seed": params["seed"], **paths,
    }  # fmt: skip


def run_segmentae(python: str, jobs: list[dict], workdir: str) -> tuple[dict, float]:
    """Run every SegmentAE job in one process of its own venv; its prints go to segmentae.log in ``workdir``."""
    spec = os.path.join(workdir, "segmentae_jobs.json")
    results = os.path.join(workdir, "segmentae_results.json")
    with open(spec, "w") as f:
        json.dump({"jobs": jobs, "results": results}, f)
    start = time.perf_counter()
    with open(os.path.join(workdir, "segmentae.log"), "w") as log:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([python, os.path.join(HERE, "segmentae_runner.py"), spec], stdout=log, stderr=subprocess.PIPE, text=True, env=env)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"SegmentAE runner failed (exit {proc.returncode}); its log: {os.path.join(workdir, 'segmentae.log')}")
    with open(results) as f:
        return json.load(f), time.perf_counter() - start


# ---------------------------------------------------------------- scoring speed
def speed_run(spark, args, workdir: str, segmentae_python: str | None) -> dict:
    """Rows/s of each system scoring ``args.speed_rows`` synthetic transactions, models fitted on 50,000 others."""
    from pyod.models.ecod import ECOD
    from pyod.models.iforest import IForest

    from segae_spark.local_scoring import PandasScorer

    label, idc, datec = SYNTHETIC["label"], SYNTHETIC["id"], SYNTHETIC["date"]
    train_path, rows_path = os.path.join(workdir, "speed_train.parquet"), os.path.join(workdir, "speed_rows.parquet")
    generate_transactions(spark, SPEED_TRAIN_ROWS, seed=args.seed).filter(f"{label} = 0").write.parquet(train_path)
    generate_transactions(spark, args.speed_rows, seed=args.seed + 1).write.parquet(rows_path)
    train = pd.read_parquet(train_path)
    categorical = tuple(c for c in train.columns if train[c].dtype == object and c not in (idc, datec))
    width = encoded_width(train.drop(columns=[idc, datec]).assign(**{ID_COL: 0}), label, categorical)
    params = segae_params(len(train), width, label, args.epochs, args.seed) | {"idCol": idc, "dateCol": datec}
    out = {"rows": args.speed_rows, "train_rows": len(train), "systems": {}}

    model = SegmentAE(**params, trainingMode="per_segment").fit(spark.read.parquet(train_path))
    model_dir = os.path.join(workdir, "speed_model")
    model.save(model_dir)
    start = time.perf_counter()
    model.transform(spark.read.parquet(rows_path)).write.parquet(os.path.join(workdir, "speed_scored.parquet"))
    out["systems"]["segae_spark_job"] = {"rows": args.speed_rows, "seconds": time.perf_counter() - start}

    # The production path, as `segae-spark score` runs it: the saved model, a Delta table in,
    # arrow_transform written by delta-rs (the executors write the files, the driver commits).
    delta_rows = os.path.join(workdir, "speed_rows_delta")
    write_table(spark.read.parquet(rows_path), delta_rows)
    start = time.perf_counter()
    run = score_table(SegmentAEModel.load(model_dir), spark, delta_rows, os.path.join(workdir, "speed_scored_delta"))
    out["systems"]["segae_score_job"] = {"rows": run.rows, "seconds": time.perf_counter() - start}

    rows = pd.read_parquet(rows_path)
    scorer = PandasScorer.load(model_dir)
    start = time.perf_counter()
    scored = scorer.score(rows)
    out["systems"]["segae_pandas_scorer"] = {"rows": len(scored), "seconds": time.perf_counter() - start}

    features = [c for c in train.columns if c not in (idc, datec)]
    encode = detector_encoder(train[features], label, categorical)
    for key, detector in (("pyod_iforest", IForest(n_estimators=200, random_state=args.seed)), ("pyod_ecod", ECOD())):
        detector.fit(encode(train[features]))
        start = time.perf_counter()
        detector.decision_function(encode(rows[features]))
        out["systems"][key] = {"rows": len(rows), "seconds": time.perf_counter() - start}

    if segmentae_python:
        n = min(args.segmentae_speed_rows or len(rows), len(rows))
        train_csv, rows_csv = os.path.join(workdir, "speed_train.csv"), os.path.join(workdir, "speed_rows.csv")
        train.to_csv(train_csv, index=False)
        rows.head(n).to_csv(rows_csv, index=False)
        job = segmentae_job("speed", "speed", params, [idc, datec, label], train=train_csv, score=rows_csv)
        result, _ = run_segmentae(segmentae_python, [job], workdir)
        out["systems"]["segmentae"] = {"rows": result["speed"]["rows"], "seconds": result["speed"]["score_s"]}
    for s in out["systems"].values():
        s["rows_per_s"] = round(s["rows"] / s["seconds"], 1)
        s["seconds"] = round(s["seconds"], 2)
    if "segmentae" in out["systems"]:
        base = out["systems"]["segmentae"]["rows_per_s"]
        for s in out["systems"].values():
            s["x_segmentae"] = round(s["rows_per_s"] / base, 1)
    return out


# ---------------------------------------------------------------- report
def _f(v, digits=4):
    return "—" if v is None else f"{v:.{digits}f}"


def compute_means(results: list[dict]) -> dict:
    means = {}
    for key, _ in SYSTEMS:
        done = [r[key] for r in results if r.get(key)]
        if done:
            means[key] = {k: float(np.mean([d[k] for d in done])) for k in ("roc_auc", "pr_auc", "best_f1", "precision", "recall", "fit_s")}
    return means


def goals(results: list[dict], means: dict, speed: dict | None) -> list[str]:
    """The issue's three goals, each with its verdict."""
    lines = []
    if means:
        ranked = sorted(means, key=lambda k: -means[k]["roc_auc"])
        if "segae_best" in means:
            met = ranked[0] == "segae_best"
            lines.append(
                f"- Highest mean ROC-AUC of all systems for segae-spark's best config: **{'met' if met else 'missed'}**. "
                f"Ranking: " + ", ".join(f"{TITLES[k]} {means[k]['roc_auc']:.4f}" for k in ranked) + "."
            )
    pairs = [r for r in results if r.get("segae_per_segment") and r.get("segmentae")]
    if pairs:
        behind = [r["dataset"] for r in pairs if r["segae_per_segment"]["roc_auc"] < r["segmentae"]["roc_auc"]]
        lines.append(
            f"- Per-segment ROC-AUC at least SegmentAE's on every dataset: **{'met' if not behind else 'missed'}** "
            f"({len(pairs) - len(behind)} of {len(pairs)}" + (f"; below on {', '.join(behind)})" if behind else ")")
        )
    if speed and "segmentae" in speed["systems"]:
        score_x = speed["systems"]["segae_score_job"]["x_segmentae"]
        spark_x = speed["systems"]["segae_spark_job"]["x_segmentae"]
        lines.append(
            f"- Scoring at least 100x SegmentAE's rows/s: **{'met' if score_x >= 100 else 'missed'}** for `segae-spark score` "
            f"(Delta in, delta-rs out: the production path) with {score_x:.0f}x; "
            f"the generic Spark job (`transform`, Spark's Parquet writer): {spark_x:.0f}x."
        )
    return lines


def markdown(results: list[dict], means: dict, speed: dict | None) -> str:
    head = ["dataset", "train / test rows"] + [TITLES[k] for k, _ in SYSTEMS]
    blocks = []
    for metric, title in (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("best_f1", "Best F1 over thresholds")):
        lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in results:
            row = [r["dataset"], f"{r['train_rows']:,} / {r['test_rows']:,}"]
            values = [r[k][metric] if r.get(k) else None for k, _ in SYSTEMS]
            top = max(v for v in values if v is not None)
            row += [f"**{_f(v)}**" if v == top else _f(v) for v in values]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("| **mean** | | " + " | ".join(_f(means.get(k, {}).get(metric)) for k, _ in SYSTEMS) + " |")
        blocks.append("\n".join(lines))
    lines = ["### Own threshold: precision / recall; fit seconds; test-split scoring rows/s", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r["dataset"], f"{r['test_anomalies']:,} anomalies"]
        for k, _ in SYSTEMS:
            s = r.get(k)
            row.append(f"{s['precision']:.2f} / {s['recall']:.2f}; {s['fit_s']:.1f} s; {s['score_rows_per_s']:,.0f}" if s else "—")
        lines.append("| " + " | ".join(row) + " |")
    blocks.append("\n".join(lines))
    chosen = [
        "### The optimizer's choice per dataset (validation: training normals + synthetic anomalies)", "",
        "| dataset | training mode | K | hidden layers | validation ROC-AUC | test ROC-AUC | default config's test ROC-AUC (shared / per-segment) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in results:
        c = (r.get("segae_best") or {}).get("chosen")
        if c:
            layers = json.loads(c["autoencoder"]).get("hidden_layers")
            chosen.append(
                f"| {r['dataset']} | {c['training_mode']} | {c['n_clusters']} | {layers} | {_f(c['validation_roc_auc'])} | "
                f"{_f(r['segae_best']['roc_auc'])} | {_f(r['segae_shared']['roc_auc'])} / {_f(r['segae_per_segment']['roc_auc'])} |"
            )
    blocks.append("\n".join(chosen))
    if speed:
        lines = [f"### Scoring speed: {speed['rows']:,} synthetic transactions (models fitted on {speed['train_rows']:,} others)", "", "| system | rows scored | seconds | rows/s | x SegmentAE |", "|---|---|---|---|---|"]
        names = {"segae_score_job": "segae-spark score (Delta in, arrow_transform, delta-rs out)", "segae_spark_job": "segae-spark Spark job (Parquet in, transform, Spark's Parquet writer)", "segae_pandas_scorer": "segae-spark PandasScorer (in memory)", "pyod_iforest": "PyOD IForest decision_function", "pyod_ecod": "PyOD ECOD decision_function", "segmentae": "SegmentAE 1.5.26 transform + detections()"}
        for key, s in speed["systems"].items():
            lines.append(f"| {names[key]} | {s['rows']:,} | {s['seconds']:.1f} | {s['rows_per_s']:,.0f} | {s.get('x_segmentae', '—')} |")
        blocks.append("\n".join(lines))
    return "\n".join(["## Goals", "", *goals(results, means, speed)]) + "\n\n" + "\n\n".join(blocks)


def chart(results: list[dict], means: dict, path: str) -> None:
    """Mean ROC-AUC per system (left) and ROC-AUC per dataset (right), as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, _ in SYSTEMS if k in means]
    colors = plt.get_cmap("tab10").colors
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [1, 3]})
    left.barh([TITLES[k] for k in keys][::-1], [means[k]["roc_auc"] for k in keys][::-1], color=[colors[i] for i in range(len(keys))][::-1])
    left.set_xlim(0.5, 1.0)
    left.set_xlabel(f"mean ROC-AUC over {len(results)} datasets")
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        right.bar(np.arange(len(results)) + i * width, [r[k]["roc_auc"] if r.get(k) else 0 for r in results], width, label=TITLES[k], color=colors[i])
    right.set_xticks(np.arange(len(results)) + 0.4 - width / 2, [r["dataset"] for r in results], rotation=30, ha="right")
    right.set_ylim(0.4, 1.0)
    right.set_ylabel("ROC-AUC (test split)")
    right.legend(fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_args(parser)
    parser.add_argument("--speed-rows", type=int, default=1_000_000, help="rows of the scoring-speed run (0: skip it)")
    parser.add_argument("--segmentae-speed-rows", type=int, default=100_000, help="SegmentAE scores only the first N of them (0: all)")
    parser.add_argument("--segmentae-python", default=SEGMENTAE_PYTHON, help="python of the SegmentAE venv ('' skips SegmentAE)")
    parser.add_argument("--out", default=RESULTS, help="results path without extension (.json, .md and .png are written)")
    args = parser.parse_args()
    names = dataset_names(parser, args)
    segmentae_python = args.segmentae_python or None
    if segmentae_python and not os.path.isfile(segmentae_python):
        parser.error(f"{segmentae_python} not found: run `make venv-segmentae`, or pass --segmentae-python '' to leave SegmentAE out")

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("segae_spark").setLevel(logging.INFO)
    total_start = time.perf_counter()
    spark = get_or_create_session({"spark.sql.shuffle.partitions": "4"})
    warm_up(spark, args.seed)
    datasets, skipped = [], []
    for name in names:
        if dataset_available(name, args.root):
            datasets.append(BenchmarkDataset.load(name, args.root, args.seed, args.epochs))
        else:
            skipped.append(name)
            print(f"[skip] {name}: not found under {args.root}", file=sys.stderr)
    results = [data.summary() for data in datasets]
    with tempfile.TemporaryDirectory(prefix="segae-peers-") as workdir:
        segmentae_s = None
        if segmentae_python and datasets:  # first: the slowest system to set up, and the likeliest to fail
            jobs = []
            for data in datasets:
                paths = {k: os.path.join(workdir, f"{data.name}_{k}.csv") for k in ("train", "test")}
                data.train.to_csv(paths["train"], index=False)
                data.test.to_csv(paths["test"], index=False)
                out = os.path.join(workdir, f"{data.name}_segmentae.npz")
                jobs.append(segmentae_job(data.name, "quality", data.params, [ID_COL, data.label], out=out, **paths))
            summary, segmentae_s = run_segmentae(segmentae_python, jobs, workdir)
            for data, result, job in zip(datasets, results, jobs):
                scores, s = np.load(job["out"], allow_pickle=False), summary[data.name]
                result["segmentae"] = system_result(data.test[data.label].to_numpy(int), scores["score"], scores["flag"], s["fit_s"], s["score_s"])
        speed = speed_run(spark, args, workdir, segmentae_python) if args.speed_rows > 0 else None
        for data, result in zip(datasets, results):
            start = time.perf_counter()
            train, test, label, params = data.train, data.test, data.label, data.params
            for mode in MODES:
                result[f"segae_{mode}"] = run_segae(spark, train, test, label, params, mode)
            result["segae_best"] = run_segae_best(spark, train, test, label, params, data.width, args.epochs, args.seed)
            result.update(run_pyod_and_sklearn(train, test, label, data.categorical, args.seed))
            result["seconds"] = round(time.perf_counter() - start, 1)
            print(f"[done] {data.name} ({result['seconds']:.0f}s): " + "  ".join(f"{k}={result[k]['roc_auc']:.4f}" for k, _ in SYSTEMS if k in result), file=sys.stderr, flush=True)

    means = compute_means(results)
    total_s = round(time.perf_counter() - total_start, 1)
    report = {
        **run_environment(),
        "protocol": "seed 42; 75% of shuffled normals train; test = other 25% normals + all anomalies; "
        "nsl_kdd: all normals of KDDTrain+_20Percent train, all of KDDTest+ tests",
        "config": {
            "segae": "benchmarks/quality_datasets.py segae_params", "optimizer_grid": "2 autoencoders ([h, h/2, h/4], [h, h/4]) x K {K0, K0 + 2} x mode {shared, per_segment}, metric roc_auc",
            "validation": f"{VALIDATION_FRACTION:.0%} of training normals + synthetic anomalies (a quarter as many)",
            "segmentae": "OneHotEncoder, MinMaxScaler, KMeans, DenseAutoencoder with the segae hidden layers / epochs / batch, threshold_ratio 1.0",
            "pyod": "IForest(n_estimators=200), ECOD()", "sklearn": "IsolationForest(n_estimators=200)",
        },  # fmt: skip
        "results": results,
        "means": means,
        "speed": speed,
        "segmentae_seconds": segmentae_s,
        "skipped": skipped,
        "total_seconds": total_s,
    }
    text = markdown(results, means, speed)
    header = (
        "# segae-spark next to SegmentAE, PyOD and scikit-learn\n\n"
        + versions_text(report)
        + f", pyod {_version('pyod')}; {report['machine']['cpus']} CPUs, {report['machine']['platform']}. "
        f"Epochs {args.epochs}, seed {args.seed}. Whole run {total_s:.0f} s.\n\n"
        "Protocol: " + report["protocol"] + ". Configs: see `benchmarks/peers.py`.\n\n"
    )
    if results:
        chart(results, means, args.out + ".png")
    print(text)
    write_report(args.out, report, header + text + "\n", f"whole run {total_s:.0f} s; ")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
