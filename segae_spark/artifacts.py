"""The model directory: what a fitted SegmentAEModel is on disk.

::

    model_dir/
      manifest.json        format version, library and dependency versions,
                           feature schema, params, per-segment training error
                           statistics (thresholds follow from them), checksums
      metadata/            pyspark's DefaultParams metadata, so the model loads
                           as a stage of a saved pyspark.ml PipelineModel
      preprocessing/       Spark ML PipelineModel (impute, encode, scale)
      segmenter/           Spark ML clustering model
      models/NAME.npz      weights for the numpy scoring engine (absent for a
                           user model only Keras can run)
      models/NAME.keras    the same model for Keras users
      train_errors.npz     each segment's sorted training errors per metric, so
                           threshold rules can change without retraining
      supervised/          the optional second stage: a Spark ML PipelineModel
                           (assembler + random forest / GBT) on per-feature errors

No pickle anywhere: loading reads JSON, Parquet and ``.npz`` with
``allow_pickle=False``, so a model directory cannot run code. Every file is
checked against the manifest's SHA-256 before use.
"""

from __future__ import annotations

import io
import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata

import numpy as np
from pyarrow import fs as pafs
from pyspark.ml import PipelineModel

from segae_spark import __version__
from segae_spark.clustering import load_segmenter
from segae_spark.compat import save_params_metadata
from segae_spark.errors import ArtifactError
from segae_spark.features.schema import FeatureSpec
from segae_spark.model_files import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    TRAIN_ERRORS,
    check_weights,
    file_checksums,
    filesystem_of,
    read_manifest,
    read_train_errors,
    verify_checksums,
)
from segae_spark.supervised import SupervisedConfig, SupervisedStage
from segae_spark.training.segments import TrainedModel

SUPERVISED = "supervised"


@dataclass
class ModelArtifact:
    """The learned state of a SegmentAEModel, independent of where it is stored."""

    spec: FeatureSpec
    feature_names: list[str]
    preprocessing: PipelineModel
    segmenter: object
    models: dict[str, TrainedModel]
    segments: list[dict]
    train_errors: dict[int, dict[str, np.ndarray]]
    training: dict = field(default_factory=dict)
    supervised: SupervisedStage | None = None


def dependency_versions() -> dict[str, str]:
    """Python, segae-spark and the installed versions of the libraries results depend on."""
    versions = {"python": platform.python_version(), "segae_spark": __version__}
    for dist in ("pyspark", "numpy", "pyarrow", "pandas", "keras", "tensorflow", "tensorflow-cpu", "deltalake", "scikit-learn", "horovod"):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def write_artifact(path: str, model, spark) -> None:
    """Write ``model`` (a fitted SegmentAEModel) as a model directory at ``path``."""
    artifact: ModelArtifact = model.artifact
    filesystem, root = filesystem_of(path)
    info = filesystem.get_file_info(root)
    if info.type != pafs.FileType.NotFound and filesystem.get_file_info(f"{root}/{MANIFEST}").type != pafs.FileType.NotFound:
        raise ArtifactError(f"{path} already holds a model; use model.write().overwrite().save(path) to replace it")
    save_params_metadata(model, path, spark)
    artifact.preprocessing.write().overwrite().save(f"{path}/preprocessing")
    artifact.segmenter.write().overwrite().save(f"{path}/segmenter")
    if artifact.supervised is not None:
        artifact.supervised.model.write().overwrite().save(f"{path}/{SUPERVISED}")
    filesystem.create_dir(f"{root}/models", recursive=True)
    for name, trained in artifact.models.items():
        for suffix, blob in ((".npz", trained.npz), (".keras", trained.keras)):
            if blob is None:
                continue
            with filesystem.open_output_stream(f"{root}/models/{name}{suffix}") as out:
                out.write(blob)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **{
            f"segment_{seg}__{metric}": values
            for seg, by_metric in sorted(artifact.train_errors.items())
            for metric, values in sorted(by_metric.items())
        },
    )
    with filesystem.open_output_stream(f"{root}/{TRAIN_ERRORS}") as out:
        out.write(buffer.getvalue())
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_id": model.model_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": dependency_versions(),
        "features": {**artifact.spec.to_dict(), "names": artifact.feature_names, "size": len(artifact.feature_names)},
        "params": model.param_values(),
        "segments": artifact.segments,
        "models": {name: m.training for name, m in artifact.models.items()},
        "training": artifact.training,
        "supervised": (
            {"config": artifact.supervised.config.to_dict(), **artifact.supervised.info} if artifact.supervised is not None else None
        ),
        "checksums": file_checksums(filesystem, root),
    }
    with filesystem.open_output_stream(f"{root}/{MANIFEST}") as out:
        out.write(json.dumps(manifest, indent=2, sort_keys=True).encode())


def read_artifact(path: str) -> tuple[ModelArtifact, dict]:
    """Load the model directory at ``path``: (learned state, params)."""
    manifest = read_manifest(path)
    verify_checksums(path, manifest)
    filesystem, root = filesystem_of(path)
    models = {}
    for name, training in manifest["models"].items():
        blobs = {}
        for suffix in (".npz", ".keras"):
            if f"models/{name}{suffix}" in manifest["checksums"]:
                with filesystem.open_input_stream(f"{root}/models/{name}{suffix}") as stream:
                    blobs[suffix] = stream.readall()
        if ".keras" not in blobs:
            raise ArtifactError(f"model directory {path} lacks models/{name}.keras")
        if ".npz" in blobs:
            check_weights(path, f"models/{name}.npz", blobs[".npz"])
        models[name] = TrainedModel(name, blobs.get(".npz"), blobs[".keras"], training)
    features = manifest["features"]
    if TRAIN_ERRORS not in manifest["checksums"]:
        raise ArtifactError(f"model directory {path}: {MANIFEST} has no checksum for {TRAIN_ERRORS}; the directory is damaged")
    with filesystem.open_input_stream(f"{root}/{TRAIN_ERRORS}") as stream:
        train_errors = read_train_errors(path, stream.readall())
    artifact = ModelArtifact(
        spec=FeatureSpec.from_dict(features),
        feature_names=list(features["names"]),
        preprocessing=PipelineModel.load(f"{path}/preprocessing"),
        segmenter=load_segmenter(f"{path}/segmenter"),
        models=models,
        segments=manifest["segments"],
        train_errors=train_errors,
        training=manifest.get("training", {}),
        supervised=_read_supervised(path, manifest.get("supervised")),
    )
    return artifact, manifest["params"]


def _read_supervised(path: str, recorded: dict | None) -> SupervisedStage | None:
    """The supervised second stage the manifest records, if any."""
    if not recorded:
        return None
    info = {k: v for k, v in recorded.items() if k != "config"}
    return SupervisedStage(PipelineModel.load(f"{path}/{SUPERVISED}"), SupervisedConfig.from_dict(recorded["config"]), info)
