"""Runs SegmentAE 1.5.26 (the pandas / Keras library) for benchmarks/peers.py, in its own venv.

    .venv-segmentae/bin/python benchmarks/segmentae_runner.py JOBS.json

SegmentAE pins pydantic, matplotlib and atlantic versions that clash with
segae-spark's, so it lives in ``.venv-segmentae`` (``make venv-segmentae``) and
this script is the only code that imports it. It imports nothing from
segae_spark: peers.py writes each split as CSV and a list of jobs as JSON;
this script writes each job's scores to ``.npz`` (no pickle) and a JSON
summary, and peers.py computes every metric with the same code for every
system.

Missing numbers are set to the training median first (see
``_fill_numeric_gaps``; PyOD gets the same). A job is SegmentAE's documented workflow (its README's "Predictive
Application"): ``Preprocessing`` (fit on the training rows), ``Clustering``
(KMeans), ``DenseAutoencoder.fit``, ``SegmentAE.reconstruction`` on the
training rows; then, timed as scoring, ``Preprocessing.transform`` and

* ``"quality"``: ``SegmentAE.evaluation(test, y, threshold_ratio=1.0)``; the
  score is each test row's MSE reconstruction error (what SegmentAE
  thresholds), the flag its ``Predicted Anomalies`` at its default ratio 1.0;
* ``"speed"``: ``SegmentAE.detections(rows, threshold_ratio=1.0)``.

Keras is seeded (``keras.utils.set_random_seed``) so reruns match; SegmentAE's
own prints and progress bars go to this process's stdout, which peers.py
sends to a log file.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd


def _fit(job: dict, train: pd.DataFrame):
    import keras
    from segmentae import Clustering, Preprocessing, SegmentAE
    from segmentae.autoencoders import DenseAutoencoder

    keras.utils.set_random_seed(job["seed"])
    start = time.perf_counter()
    pr = Preprocessing(encoder=job["encoder"], scaler=job["scaler"], imputer="Simple")
    pr.fit(X=train)
    x_train = pr.transform(X=train).reset_index(drop=True)
    cl = Clustering(cluster_model=["KMeans"], n_clusters=job["n_clusters"], random_state=job["seed"])
    cl.clustering_fit(X=x_train)
    ae = DenseAutoencoder(
        hidden_dims=job["hidden_layers"], learning_rate=job["learning_rate"], epochs=job["epochs"],
        val_size=job["validation_split"], stopping_patient=job["early_stopping_patience"], batch_size=job["batch_size"],
    )  # fmt: skip
    ae.fit(input_data=x_train)
    sg = SegmentAE(ae_model=ae, cl_model=cl)
    sg.reconstruction(input_data=x_train, threshold_metric="mse")
    return pr, sg, time.perf_counter() - start


def _features(df: pd.DataFrame, job: dict) -> pd.DataFrame:
    return df.drop(columns=[c for c in job["drop"] if c in df.columns]).reset_index(drop=True)


def _fill_numeric_gaps(train: pd.DataFrame, other: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Missing numbers set to the training median, before SegmentAE sees them.

    SegmentAE's "Simple" imputer fills only the columns that had gaps when it
    was fitted, and its clustering refuses a row with a missing value: a test
    row with a gap where no training row had one stops the whole evaluation.
    """
    medians = train.median(numeric_only=True)
    return train.fillna(medians), other.fillna(medians)


def run_quality(job: dict) -> dict:
    test = pd.read_csv(job["test"])
    y = test[job["label"]].astype(int).reset_index(drop=True)
    train, x_test = _fill_numeric_gaps(_features(pd.read_csv(job["train"]), job), _features(test, job))
    pr, sg, fit_s = _fit(job, train)
    start = time.perf_counter()
    x_test = pr.transform(X=x_test).reset_index(drop=True)
    result = sg.evaluation(input_data=x_test, target_col=y, threshold_ratio=1.0)
    score_s = time.perf_counter() - start
    score = np.full(len(test), np.nan)
    for cluster in sg.reconstruction_test.values():
        score[np.asarray(cluster["indexs"], dtype=np.int64)] = cluster["metrics"]["MSE_Recons_error"].to_numpy()
    flags = result["y_true vs y_pred"]["Predicted Anomalies"].sort_index()
    flag = np.zeros(len(test), dtype=np.int8)
    flag[flags.index.to_numpy(dtype=np.int64)] = flags.to_numpy(dtype=np.int8)
    if np.isnan(score).any():
        raise RuntimeError(f"{job['name']}: SegmentAE left {int(np.isnan(score).sum())} test rows unscored")
    np.savez(job["out"], score=score, flag=flag)
    return {"fit_s": fit_s, "score_s": score_s, "rows": len(test), "encoded_features": int(x_test.shape[1])}


def run_speed(job: dict) -> dict:
    train, rows = _fill_numeric_gaps(_features(pd.read_csv(job["train"]), job), _features(pd.read_csv(job["score"]), job))
    pr, sg, fit_s = _fit(job, train)
    start = time.perf_counter()
    x = pr.transform(X=rows).reset_index(drop=True)
    transform_s = time.perf_counter() - start
    detected = sg.detections(input_data=x, threshold_ratio=1.0)
    score_s = time.perf_counter() - start
    return {
        "fit_s": fit_s, "score_s": score_s, "transform_s": transform_s, "rows": len(rows),
        "flagged": int(detected["Predicted Anomalies"].sum()),
    }  # fmt: skip


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[2].strip())
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    results = {}
    for job in spec["jobs"]:
        run = run_quality if job["kind"] == "quality" else run_speed
        results[job["name"]] = run(job)
        print(f"[segmentae] {job['name']}: {results[job['name']]}", file=sys.stderr, flush=True)
        with open(spec["results"], "w") as f:  # after every job, so a crash keeps the finished ones
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
