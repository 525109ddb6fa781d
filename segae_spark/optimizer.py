"""Grid search over SegmentAE configurations, ranked on a labelled validation table.

SegmentAE's optimizer tries autoencoders x clusterers x cluster counts x
threshold ratios and ranks them; this one does the same work once where it
can be shared:

* the preprocessing is fitted once for the whole grid (it depends on none of
  the grid's axes);
* each (clusterer, cluster count) is fitted once, its segment assignment
  cached, and every autoencoder and training mode trains on it;
* the candidates of one clustering train at the same time, each in its own
  Spark job of parallel tasks (``parallelism`` jobs at once);
* each trained candidate scores the validation table once, and every
  threshold ratio is evaluated from those scores in one aggregation
  (:func:`~segae_spark.evaluation.threshold_sweep`);
* with ``supervised`` settings, each candidate also gets each supervised
  second stage (:mod:`segae_spark.supervised`), fitted on the training
  table's labelled rows and ranked on the same validation rows by its fraud
  probability (flag: probability > 0.5): one more leaderboard row each.

Only the best model so far stays in memory. The leaderboard has one row per
(candidate, threshold ratio), sorted by the chosen metric, ties broken by F1
and then by the grid's order, so the same data, grid and seed give the same
leaderboard and the same best model.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, StructField, StructType

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.evaluation import RANK_BY, threshold_sweep
from segae_spark.pipeline import SegmentAE, SegmentAEModel, _output_columns
from segae_spark.progress import logger
from segae_spark.supervised import SupervisedConfig
from segae_spark.thresholds import check_ratio
from segae_spark.training.segments import TRAINING_MODES

METRICS = ("pr_auc", "roc_auc", "f1", "recall", "precision")

LEADERBOARD_SCHEMA = StructType(
    [
        StructField("rank", IntegerType(), False),
        StructField("candidate", IntegerType(), False),
        StructField("autoencoder", StringType(), False),
        StructField("cluster_model", StringType(), False),
        StructField("n_clusters", StringType(), False),
        StructField("segments", IntegerType(), False),
        StructField("training_mode", StringType(), False),
        StructField("second_stage", StringType(), False),
        StructField("threshold_ratio", DoubleType(), False),
        StructField("roc_auc", DoubleType(), True),
        StructField("pr_auc", DoubleType(), True),
        StructField("f1", DoubleType(), False),
        StructField("precision", DoubleType(), False),
        StructField("recall", DoubleType(), False),
        StructField("accuracy", DoubleType(), False),
        StructField("tp", LongType(), False),
        StructField("fp", LongType(), False),
        StructField("fn", LongType(), False),
        StructField("tn", LongType(), False),
        StructField("train_seconds", DoubleType(), False),
        StructField("model_id", StringType(), False),
    ]
)
COLUMNS = [f.name for f in LEADERBOARD_SCHEMA.fields]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the grid, threshold ratios aside (they need no training)."""

    index: int
    autoencoder: dict
    cluster_model: str
    n_clusters: int | str
    training_mode: str

    def params(self) -> dict:
        return {
            "autoencoder": self.autoencoder,
            "clusterModel": self.cluster_model,
            "nClusters": self.n_clusters,
            "trainingMode": self.training_mode,
        }

    def describe(self) -> str:
        return f"{self.cluster_model} k={self.n_clusters} {self.training_mode} autoencoder={json.dumps(self.autoencoder, sort_keys=True)}"


@dataclasses.dataclass
class OptimizerResult:
    """The ranked leaderboard and the best model (set to its best threshold ratio)."""

    leaderboard: list[dict]
    best_model: SegmentAEModel
    metric: str
    seconds: float

    @property
    def best(self) -> dict:
        return self.leaderboard[0]

    def to_dataframe(self, spark) -> DataFrame:
        return spark.createDataFrame([tuple(row[c] for c in COLUMNS) for row in self.leaderboard], LEADERBOARD_SCHEMA)

    def save(self, out_dir: str, overwrite: bool = False) -> dict[str, str]:
        """Write ``leaderboard.csv``, the ``leaderboard`` Delta table and ``best_model/`` under ``out_dir``."""
        from segae_spark.io import write_table

        paths = output_paths(out_dir, overwrite)
        os.makedirs(out_dir, exist_ok=True)
        writer = self.best_model.write()
        (writer.overwrite() if overwrite else writer).save(paths["model"])
        write_table(self.to_dataframe(SparkSession.active()), paths["delta"], mode="overwrite" if overwrite else "error")
        with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
            out = csv.DictWriter(fh, fieldnames=COLUMNS)
            out.writeheader()
            out.writerows({c: row[c] for c in COLUMNS} for row in self.leaderboard)
        return paths


def output_paths(out_dir: str, overwrite: bool = False) -> dict[str, str]:
    """Where :meth:`OptimizerResult.save` writes; refuses existing results unless ``overwrite``.

    Call it before a long search too, so a run that could not save fails first.
    """
    paths = {
        "csv": os.path.join(out_dir, "leaderboard.csv"),
        "delta": os.path.join(out_dir, "leaderboard"),
        "model": os.path.join(out_dir, "best_model"),
    }
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not overwrite:
        raise ConfigError(f"optimizer output already exists: {existing}; pass overwrite=True (CLI: --overwrite)")
    return paths


def _grid_values(name: str, values, default) -> list:
    values = [default] if values is None else list(values)
    if not values:
        raise ConfigError(f"the grid's {name} is empty; give at least one value or leave it unset")
    return values


class SegmentAEOptimizer:
    """Grid search over autoencoders x clusterers x cluster counts x training modes x threshold ratios.

    ``estimator`` holds every other param (preprocessing, threshold method and
    metric, seed, ...); an axis left as ``None`` takes the estimator's value.

    >>> result = SegmentAEOptimizer(SegmentAE(labelCol="is_fraud"), n_clusters=[3, 5],
    ...                             threshold_ratios=[2, 4, 6]).fit(train_df, valid_df)
    >>> result.best_model.transform(new_df)
    """

    def __init__(
        self,
        estimator: SegmentAE | None = None,
        autoencoders: list[dict] | None = None,
        cluster_models: list[str] | None = None,
        n_clusters: list[int | str] | None = None,
        training_modes: list[str] | None = None,
        threshold_ratios: list[float] | None = None,
        metric: str = "pr_auc",
        rank_by: str = "score",
        parallelism: int | None = None,
        supervised: list[dict] | None = None,
    ):
        self.estimator = estimator if estimator is not None else SegmentAE()
        get = self.estimator.getOrDefault
        est = self.estimator
        self.autoencoders = [dict(a) for a in _grid_values("autoencoders", autoencoders, get(est.autoencoder))]
        self.cluster_models = _grid_values("cluster_models", cluster_models, get(est.clusterModel))
        self.n_clusters = _grid_values("n_clusters", n_clusters, get(est.nClusters))
        self.training_modes = _grid_values("training_modes", training_modes, get(est.trainingMode))
        self.threshold_ratios = [check_ratio(r) for r in _grid_values("threshold_ratios", threshold_ratios, get(est.thresholdRatio))]
        if metric not in METRICS:
            raise ConfigError(f"metric must be one of {METRICS}, got {metric!r}")
        if rank_by not in RANK_BY:
            raise ConfigError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
        bad_modes = [m for m in self.training_modes if m not in TRAINING_MODES]
        if bad_modes:
            raise ConfigError(f"training modes must be among {TRAINING_MODES}, got {bad_modes}")
        if get(est.thresholdMethod) != "mean_ratio" and len(self.threshold_ratios) > 1:
            raise ConfigError(
                f"threshold ratios only move mean_ratio thresholds; thresholdMethod is {get(est.thresholdMethod)!r}: "
                "give one ratio or use thresholdMethod='mean_ratio'"
            )
        if parallelism is not None and (isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1):
            raise ConfigError(f"parallelism must be an integer >= 1, got {parallelism!r}")
        self.metric, self.rank_by, self.parallelism = metric, rank_by, parallelism
        self.supervised = [SupervisedConfig.from_dict({"seed": get(est.seed), **s}).to_dict() for s in supervised or []]
        self.candidates = [
            Candidate(i, ae, cm, k, mode)
            for i, (cm, k, ae, mode) in enumerate(
                itertools.product(self.cluster_models, self.n_clusters, self.autoencoders, self.training_modes)
            )
        ]

    def _sort_key(self, row: dict) -> tuple:
        value = row[self.metric]
        return (value is None, -(value or 0.0), -row["f1"], row["candidate"], row["second_stage"], row["threshold_ratio"])

    def fit(self, train: DataFrame, validation: DataFrame, label_col: str | None = None) -> OptimizerResult:
        """Train and evaluate every candidate; ``label_col`` defaults to the estimator's ``labelCol``."""
        start = time.perf_counter()
        label = label_col or self.estimator.getOrDefault(self.estimator.labelCol)
        if not label:
            raise ConfigError("the optimizer ranks candidates on labelled validation rows: give label_col or set labelCol")
        base = self.estimator.copy({self.estimator.labelCol: label})
        estimators = [base.copy({base.getParam(k): v for k, v in c.params().items()}) for c in self.candidates]
        for estimator in estimators:  # every bad value fails before any Spark work
            estimator._validate(train)
        _check_validation(validation, label)
        # Default: two candidates at once (one trains while the other scores), more on a large cluster.
        slots = self.parallelism or max(2, train.sparkSession.sparkContext.defaultParallelism // 8)
        logger.info(
            "optimize: %d candidate(s) x %d threshold ratio(s), %d clustering(s), up to %d training job(s) at once",
            len(self.candidates), len(self.threshold_ratios), len(self.cluster_models) * len(self.n_clusters), slots,
        )  # fmt: skip
        prepared = base._prepare(train)
        rows: list[dict] = []
        best: list = [None, None]  # (sort key, model)
        lock = threading.Lock()
        done = itertools.count(1)
        try:
            with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="segae-optimize") as pool:
                for (cluster_model, k), group in itertools.groupby(
                    zip(self.candidates, estimators), key=lambda ce: (ce[0].cluster_model, ce[0].n_clusters)
                ):
                    group = list(group)
                    segments = group[0][1]._segment(prepared)
                    assigned = segments.assigned.cache()
                    segments = dataclasses.replace(segments, assigned=assigned)

                    def run(candidate: Candidate, estimator: SegmentAE, segments=segments) -> None:
                        evaluated = self._run(candidate, estimator, prepared, segments, train, validation, label)
                        with lock:
                            results = [r for _, rs in evaluated for r in rs]
                            rows.extend(results)
                            for model, model_rows in evaluated:
                                key = min(self._sort_key(r) for r in model_rows)
                                if best[0] is None or key < best[0]:
                                    best[0], best[1] = key, model
                            top = min(results, key=self._sort_key)
                            logger.info(
                                "optimize: candidate %d/%d done (%s): %s=%s at ratio %g, %d segment(s), trained in %.1fs",
                                next(done), len(self.candidates), candidate.describe(), self.metric,
                                _fmt(top[self.metric]), top["threshold_ratio"], top["segments"], top["train_seconds"],
                            )  # fmt: skip

                    for future in [pool.submit(run, c, e) for c, e in group]:
                        future.result()
                    assigned.unpersist()
        finally:
            prepared.features.unpersist()
        rows.sort(key=self._sort_key)
        for rank, row in enumerate(rows, start=1):
            row["rank"] = rank
        best_model = best[1].setThresholdRatio(rows[0]["threshold_ratio"])
        seconds = time.perf_counter() - start
        logger.info(
            "optimize: %d leaderboard rows in %.1fs; best: candidate %d at ratio %g, %s=%s",
            len(rows), seconds, rows[0]["candidate"], rows[0]["threshold_ratio"], self.metric, _fmt(rows[0][self.metric]),
        )  # fmt: skip
        return OptimizerResult(rows, best_model, self.metric, seconds)

    def _run(self, candidate, estimator, prepared, segments, train, validation, label) -> list[tuple[SegmentAEModel, list[dict]]]:
        """Train one candidate, score the validation rows once, evaluate every threshold ratio;
        then fit and evaluate each supervised second stage on top of it."""
        start = time.perf_counter()
        model = estimator._train(prepared, segments)
        train_seconds = round(time.perf_counter() - start, 3)
        outputs = _output_columns(model)
        thresholds = [model._with(thresholdRatio=r).thresholds for r in self.threshold_ratios]
        roc_auc, pr_auc, per_ratio = _sweep(model, validation, label, outputs.score, thresholds, self.rank_by)
        common = {
            "candidate": candidate.index,
            "autoencoder": json.dumps(candidate.autoencoder, sort_keys=True),
            "cluster_model": candidate.cluster_model,
            "n_clusters": str(candidate.n_clusters),
            "segments": len(segments.counts),
            "training_mode": candidate.training_mode,
            "second_stage": "none",
            "train_seconds": train_seconds,
        }
        evaluated = [
            (model, [_row(common, model.model_id, ratio, roc_auc, pr_auc, m) for ratio, m in zip(self.threshold_ratios, per_ratio)])
        ]
        for settings in self.supervised:
            start = time.perf_counter()
            staged = model.fit_supervised(train, label, **settings)
            seconds = round(train_seconds + time.perf_counter() - start, 3)
            # The stage flags probability > 0.5 in every segment; its areas rank by the probability.
            half = [{seg: 0.5 for seg in thresholds[0]}]
            probability = staged.getOrDefault(staged.probabilityCol)
            roc, pr, (m,) = _sweep(staged, validation, label, probability, half, "score")
            stage = json.dumps(settings, sort_keys=True)
            ratio = staged.getOrDefault(staged.thresholdRatio)
            row = _row({**common, "second_stage": stage, "train_seconds": seconds}, staged.model_id, ratio, roc, pr, m)
            evaluated.append((staged, [row]))
        return evaluated


def _sweep(model: SegmentAEModel, validation: DataFrame, label: str, score_col: str, thresholds: list[dict], rank_by: str):
    """Score the validation rows once (cached) and evaluate every threshold set from those scores."""
    outputs = _output_columns(model)
    scored = model.transform(validation).select(outputs.segment, score_col, outputs.threshold, label).cache()
    try:
        return threshold_sweep(scored, label, thresholds, score_col, outputs.segment, outputs.threshold, rank_by=rank_by)
    finally:
        scored.unpersist()


def _row(common: dict, model_id: str, ratio: float, roc_auc, pr_auc, metrics: dict) -> dict:
    flag_metrics = {k: metrics[k] for k in ("f1", "precision", "recall", "accuracy", "tp", "fp", "fn", "tn")}
    return {**common, "model_id": model_id, "threshold_ratio": ratio, "roc_auc": roc_auc, "pr_auc": pr_auc, **flag_metrics}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _check_validation(validation: DataFrame, label: str) -> None:
    if label not in validation.columns:
        raise SchemaError(f"label column {label!r} is not a column of the validation data; columns: {validation.columns}")
    values = validation.select(F.col(label).cast("int")).filter(F.col(label).isNotNull()).distinct().limit(3)
    labels = {int(r[0]) for r in values.collect()}  # small: at most 3 values, enough to tell {0, 1} from anything else
    if labels != {0, 1}:
        raise SchemaError(
            f"the validation data's label {label!r} must hold both 0 and 1 to rank candidates, found {sorted(labels)[:10]}"
        )


def split_validation(df: DataFrame, fraction: float, seed: int, columns: list[str] | None = None) -> tuple[DataFrame, DataFrame]:
    """A seeded, order-independent (train, validation) split by each row's content hash."""
    from segae_spark.training.sampling import hash_uniform, row_hash

    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {fraction!r}")
    u = hash_uniform(row_hash(seed, columns or df.columns))
    return df.filter(u >= fraction), df.filter(u < fraction)
