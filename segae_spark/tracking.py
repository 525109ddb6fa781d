"""MLflow tracking: one run per trained model, with a pyfunc model that scores pandas frames.

:func:`log_model_run` logs to the tracking URI MLflow is configured with
(``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``; nothing is chosen
here):

* params: the model's Params from its manifest (every one, defaults
  included), updated with the caller's ``params`` (e.g. the YAML config),
  nested keys joined with dots;
* metrics: the model's training summary (rows, segments, each segment's
  training rows, threshold and training error statistics as
  ``segment_<k>_...``, stage timings) and the caller's ``metrics``, e.g. the
  dict :func:`segae_spark.evaluation.evaluate` returns (its ``global``
  entries as they are, each segment's under ``segment_<k>_``);
* artifacts: the model directory (``segae_model/``, loadable with
  ``SegmentAEModel.load`` once downloaded) and the report, when given;
* an MLflow pyfunc model (``pyfunc``) whose ``predict`` takes a pandas frame
  of the feature columns and returns segment, anomaly_score, threshold,
  score_ratio and is_anomaly, as ``SegmentAEModel.transform`` gives them
  (:class:`~segae_spark.local_scoring.PandasScorer`, no Spark session);
  ``mlflow.pyfunc.spark_udf`` runs it on Spark DataFrames.

The pyfunc model is logged as code (MLflow's "models from code":
:mod:`segae_spark.mlflow_pyfunc`) with the model directory as its artifact,
so nothing is pickled. MLflow is an optional dependency, imported only here,
when logging.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from segae_spark import __version__
from segae_spark.errors import ConfigError, SchemaError
from segae_spark.local_scoring import PandasScorer, read_thresholds
from segae_spark.model_files import read_manifest
from segae_spark.progress import logger

# Artifact names: the model directory in the run, and in the pyfunc model.
MODEL_DIR_ARTIFACT = "segae_model"
PYFUNC_NAME = "pyfunc"
REPORT_ARTIFACT = "report"
# MLflow refuses longer param values.
_MAX_PARAM_LENGTH = 6000
_PYFUNC_CODE = Path(__file__).with_name("mlflow_pyfunc.py")


@dataclass(frozen=True)
class LoggedRun:
    """Where :func:`log_model_run` logged: ``model_uri`` is the pyfunc model (None when it could not be logged)."""

    run_id: str
    experiment_id: str
    model_uri: str | None


def require_mlflow():
    """The ``mlflow`` module; ConfigError saying how to install it when it is missing."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError("MLflow tracking needs mlflow: pip install 'segae-spark[mlflow]'") from None
    return mlflow


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as ``a.b`` keys; lists as JSON; values cut to MLflow's 6,000 characters."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:_MAX_PARAM_LENGTH]
    return flat


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric metrics, flat: ``global`` entries unprefixed, ``segments`` entries as ``segment_<k>_<name>``.

    The shape :func:`segae_spark.evaluation.evaluate` returns; other nested
    mappings are joined with dots. None (an undefined area under a curve)
    and anything that is not a number are left out.
    """
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "segments" and isinstance(value, list):
            for segment in value:
                k = segment.get("segment")
                flat.update(flatten_metrics({n: v for n, v in segment.items() if n != "segment"}, f"{prefix}segment_{k}_"))
        elif key == "global" and isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix))
        elif isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def model_metrics(model_dir: str, manifest: dict) -> dict[str, float]:
    """The training summary of a model directory as metrics (see the module doc)."""
    thresholds = read_thresholds(model_dir, manifest)
    training = manifest.get("training", {})
    metrics = {"segments": float(len(manifest["segments"])), "features": float(len(manifest["features"]["names"]))}
    if isinstance(training.get("rows"), (int, float)):
        metrics["training_rows"] = float(training["rows"])
    for stage, seconds in (training.get("timings") or {}).items():
        metrics[f"seconds_{stage.replace(' ', '_')}"] = float(seconds)
    for segment in manifest["segments"]:
        k = segment["segment"]
        errors = segment.get("train_errors", {})
        metrics.update(
            {
                f"segment_{k}_train_rows": float(segment["rows"]),
                f"segment_{k}_threshold": thresholds[k],
                **{f"segment_{k}_train_error_{stat}": float(errors[stat]) for stat in ("mean", "std", "p95") if stat in errors},
            }
        )
    return {name: value for name, value in metrics.items() if math.isfinite(value)}


def _signature(scorer: PandasScorer):
    """Input: the feature columns, required, of any type (the scorer casts them as Spark would); output: the score columns.

    Typed inputs would let MLflow refuse, before the scorer sees them, frames
    Spark scores: an int64 column for a double feature, or the float64 NaNs
    pandas gives an integer column with nulls.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    out = scorer.plan.outputs
    outputs = [(out.segment, "integer"), (out.score, "double"), (out.threshold, "double"), (out.score_ratio, "double"), (out.prediction, "integer")]
    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), name) for name in scorer.features]),
        outputs=Schema([ColSpec(kind, name) for name, kind in outputs]),
    )


def _scorer_or_reason(model_dir: str) -> tuple[PandasScorer | None, str]:
    try:
        return PandasScorer.load(model_dir), ""
    except ConfigError as exc:  # a model local scoring does not reproduce: everything else is still logged
        return None, str(exc)


def log_model_run(
    model_dir: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    *,
    report_path: str | None = None,
    run_name: str | None = None,
    experiment: str | None = None,
    input_example=None,
    artifacts: list[str] | None = None,
) -> LoggedRun:
    """Log the model saved at ``model_dir`` as one MLflow run (see the module doc for what is logged).

    ``experiment`` names the MLflow experiment (created when missing; else
    MLflow's active one, e.g. from ``MLFLOW_EXPERIMENT_NAME``). When a run is
    already active, the new run is nested in it (one child run per model of
    a search). ``input_example``: a few rows (a pandas DataFrame); their
    feature columns are stored with the pyfunc model, which MLflow scores
    once to check it. ``artifacts``: more files to log at the run's root
    (e.g. the optimizer's leaderboard). A model the pyfunc cannot serve (a segmenter or
    autoencoder local scoring does not reproduce) is logged without it, with
    a warning and the reason in the run's ``segae_spark.pyfunc`` tag.
    """
    mlflow = require_mlflow()
    model_dir = str(model_dir)
    if not os.path.isdir(model_dir):
        raise ConfigError(f"log_model_run needs a local model directory; {model_dir} is not one")
    if report_path is not None and not os.path.exists(report_path):
        raise ConfigError(f"report {report_path} does not exist")
    scorer, reason = _scorer_or_reason(model_dir)  # checks every file's checksum, also when it refuses the model
    manifest = read_manifest(model_dir)
    if scorer is not None and input_example is not None:
        missing = [c for c in scorer.features if c not in input_example.columns]
        if missing:
            raise SchemaError(f"input_example lacks feature column(s) {missing}")
    all_params = {**flatten_params(manifest["params"]), **flatten_params(params or {})}
    all_metrics = {**model_metrics(model_dir, manifest), **flatten_metrics(metrics or {})}
    if experiment:
        mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        mlflow.log_params(all_params)
        mlflow.log_metrics(all_metrics)
        mlflow.set_tags(
            {
                "segae_spark.model_id": manifest.get("model_id", ""),
                "segae_spark.version": __version__,
                "segae_spark.pyfunc": "logged" if scorer is not None else f"not logged: {reason}"[:_MAX_PARAM_LENGTH],
            }
        )
        mlflow.log_artifacts(model_dir, MODEL_DIR_ARTIFACT)
        if report_path is not None:
            if os.path.isdir(report_path):
                mlflow.log_artifacts(report_path, REPORT_ARTIFACT)
            else:
                mlflow.log_artifact(report_path, REPORT_ARTIFACT)
        for path in artifacts or []:
            mlflow.log_artifact(path)
        model_uri = None
        if scorer is None:
            logger.warning("mlflow: pyfunc model not logged: %s", reason)
        else:
            example = None if input_example is None else input_example[list(scorer.features)]
            info = mlflow.pyfunc.log_model(
                name=PYFUNC_NAME,
                python_model=str(_PYFUNC_CODE),
                artifacts={MODEL_DIR_ARTIFACT: model_dir},
                signature=_signature(scorer),
                input_example=example,
                pip_requirements=[f"segae-spark[spark]=={__version__}"],
            )
            model_uri = info.model_uri
    logger.info("mlflow: logged run %s (experiment %s) to %s", run.info.run_id, run.info.experiment_id, mlflow.get_tracking_uri())
    return LoggedRun(run.info.run_id, run.info.experiment_id, model_uri)
