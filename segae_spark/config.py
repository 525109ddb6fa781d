"""The YAML config shared by the CLI and the spark-submit jobs.

One schema, validated before any Spark work starts: an unknown key or a value
of the wrong type is a ConfigError naming the dotted key and what was expected.
``to_params`` maps a validated config to SegmentAE's Params.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

import yaml

from segae_spark.errors import ConfigError

# key -> expected type (a tuple: any of these types or literal values), or a
# nested schema; "autoencoder" and "spark" are free mappings checked by their
# consumers (segae_spark.models.autoencoder_config_from_dict, Spark).
SCHEMA: dict[str, Any] = {
    "label_col": str,
    "seed": int,
    "features": {"numeric": list, "categorical": list, "exclude": list, "id_col": str, "date_col": str},
    "preprocessing": {
        "impute_strategy": str,
        "categorical_impute_strategy": str,
        "encoder": str,
        "max_categories": int,
        "scaler": str,
    },
    "clustering": {"model": str, "n_clusters": (int, "auto"), "k_range": list, "sample_size": int, "runs": int},
    "autoencoder": dict,
    "training": {"mode": str, "backend": str, "max_rows_per_segment": int, "min_rows_per_segment": int, "data_parallel_workers": int, "staging_dir": str},
    "threshold": {"method": str, "metric": str, "ratio": (int, float), "quantile": float, "contamination": float},
    "spark": dict,
    # Paths and options of the train and score commands (`segae-spark train|score
    # --config`, jobs/*.py); a command-line option overrides the same key here.
    "train": {"input": str, "model_dir": str, "overwrite": bool},
    # MLflow tracking of `segae-spark train` (`--mlflow` sets enabled); see segae_spark.tracking.
    "mlflow": {"enabled": bool, "experiment": str, "run_name": str},
    "score": {
        "model_dir": str,
        "input": str,
        "output": str,
        "mode": str,
        "partition_by": str,
        "date_col": str,
        "from": (str, dt.date),
        "to": (str, dt.date),
        "chunk": str,
        "replace_where": bool,
        "since_last": bool,
        "since_version": int,
        "threshold_ratio": (int, float),
    },
    # `segae-spark optimize --config` (conf/optimize.yaml): the grid and where its results go;
    # every other section gives the params the grid's candidates share.
    "optimize": {
        "train": str,
        "validation": str,
        "validation_fraction": float,
        "out": str,
        "overwrite": bool,
        "metric": str,
        "rank_by": str,
        "parallelism": int,
        "grid": {
            "autoencoders": list,
            "cluster_models": list,
            "n_clusters": list,
            "training_modes": list,
            "threshold_ratios": list,
            "supervised": list,
        },
    },
}

# dotted config key -> SegmentAE Param name
PARAM_NAMES = {
    "label_col": "labelCol",
    "seed": "seed",
    "features.numeric": "numericCols",
    "features.categorical": "categoricalCols",
    "features.exclude": "excludeCols",
    "features.id_col": "idCol",
    "features.date_col": "dateCol",
    "preprocessing.impute_strategy": "imputeStrategy",
    "preprocessing.categorical_impute_strategy": "categoricalImputeStrategy",
    "preprocessing.encoder": "encoder",
    "preprocessing.max_categories": "maxCategories",
    "preprocessing.scaler": "scaler",
    "clustering.model": "clusterModel",
    "clustering.n_clusters": "nClusters",
    "clustering.k_range": "nClustersRange",
    "clustering.sample_size": "clusterSampleSize",
    "clustering.runs": "clusterRuns",
    "autoencoder": "autoencoder",
    "training.max_rows_per_segment": "maxRowsPerSegment",
    "training.min_rows_per_segment": "minRowsPerSegment",
    "training.mode": "trainingMode",
    "training.backend": "trainingBackend",
    "training.data_parallel_workers": "dataParallelWorkers",
    "training.staging_dir": "stagingDir",
    "threshold.method": "thresholdMethod",
    "threshold.quantile": "thresholdQuantile",
    "threshold.contamination": "contamination",
    "threshold.metric": "thresholdMetric",
    "threshold.ratio": "thresholdRatio",
}


_TYPE_NAMES = {dict: "mapping", dt.date: "date (YYYY-MM-DD)"}


def _type_name(expected) -> str:
    options = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) if isinstance(t, type) else repr(t) for t in options)


def _matches(item: Any, expected) -> bool:
    options = expected if isinstance(expected, tuple) else (expected,)
    return any(isinstance(item, o) if isinstance(o, type) else item == o for o in options)


def _check(value: Any, schema: Mapping[str, Any], prefix: str) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(value).__name__}")
    for key, item in value.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in schema:
            raise ConfigError(f"unknown config key {dotted!r}; allowed here: {sorted(schema)}")
        expected = schema[key]
        if isinstance(expected, dict):
            _check(item, expected, dotted)
        elif isinstance(item, bool) and expected is not bool or not _matches(item, expected):
            raise ConfigError(f"config key {dotted!r} must be a {_type_name(expected)}, got {item!r}")


def validate_config(config: Mapping[str, Any] | None) -> dict:
    """Check ``config`` against the schema and return it as a plain dict."""
    config = dict(config or {})
    _check(config, SCHEMA, "")
    return config


def load_config(path: str | None) -> dict:
    """Read and validate a YAML config file (``None`` gives an empty config)."""
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    try:
        return validate_config(data or {})
    except ConfigError as exc:  # name the file as well as the key
        raise ConfigError(f"config file {path}: {exc}") from None


def _lookup(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def to_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """SegmentAE keyword arguments for every key present in ``config``."""
    params = {}
    for dotted, name in PARAM_NAMES.items():
        present, value = _lookup(config, dotted)
        if present:
            params[name] = value
    return params
