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

No pickle anywhere: loading reads JSON, Parquet and ``.npz`` with
``allow_pickle=False``, so a model directory cannot run code. Every file is
checked against the manifest's SHA-256 before use.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
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
from segae_spark.training.segments import TrainedModel

FORMAT = "segae-spark-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRAIN_ERRORS = "train_errors.npz"
_SKIP_CHECKSUM = (".crc", "_SUCCESS")


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


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def dependency_versions() -> dict[str, str]:
    """Python, segae-spark and the installed versions of the libraries results depend on."""
    versions = {"python": platform.python_version(), "segae_spark": __version__}
    for dist in ("pyspark", "numpy", "pyarrow", "pandas", "keras", "tensorflow", "tensorflow-cpu", "deltalake", "scikit-learn"):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def _checksums(filesystem: pafs.FileSystem, root: str) -> dict[str, str]:
    sums = {}
    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = os.path.relpath(info.path, root)
        if info.type != pafs.FileType.File or relative == MANIFEST or info.base_name.endswith(_SKIP_CHECKSUM):
            continue
        with filesystem.open_input_stream(info.path) as stream:
            sums[relative] = hashlib.sha256(stream.readall()).hexdigest()
    return dict(sorted(sums.items()))


def write_artifact(path: str, model, spark) -> None:
    """Write ``model`` (a fitted SegmentAEModel) as a model directory at ``path``."""
    artifact: ModelArtifact = model.artifact
    filesystem, root = _filesystem(path)
    info = filesystem.get_file_info(root)
    if info.type != pafs.FileType.NotFound and filesystem.get_file_info(f"{root}/{MANIFEST}").type != pafs.FileType.NotFound:
        raise ArtifactError(f"{path} already holds a model; use model.write().overwrite().save(path) to replace it")
    save_params_metadata(model, path, spark)
    artifact.preprocessing.write().overwrite().save(f"{path}/preprocessing")
    artifact.segmenter.write().overwrite().save(f"{path}/segmenter")
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
        "checksums": _checksums(filesystem, root),
    }
    with filesystem.open_output_stream(f"{root}/{MANIFEST}") as out:
        out.write(json.dumps(manifest, indent=2, sort_keys=True).encode())


# Keys a manifest must hold, with their JSON types, so a damaged or hand-edited
# manifest is refused by name here instead of failing later with a KeyError.
_REQUIRED_KEYS = {"features": dict, "params": dict, "segments": list, "models": dict, "checksums": dict}
_REQUIRED_FEATURE_KEYS = {"numeric": list, "categorical": list, "names": list}
_JSON_TYPES = {dict: "an object", list: "a list"}


def _check_keys(where: str, data: dict, required: dict) -> None:
    missing = sorted(k for k in required if k not in data)
    if missing:
        raise ArtifactError(f"{where} lacks key(s) {missing}; the model directory is damaged")
    for key, kind in required.items():
        if not isinstance(data[key], kind):
            raise ArtifactError(f"{where}: key {key!r} must be {_JSON_TYPES[kind]}, got {type(data[key]).__name__}")


def read_manifest(path: str) -> dict:
    """Read and check the manifest of the model directory at ``path``.

    Everything loading needs is checked here (format, version, required keys
    and their types), so a damaged manifest is one ArtifactError naming the
    file and the key, never a KeyError from deeper down.
    """
    filesystem, root = _filesystem(path)
    where = f"{path}/{MANIFEST}"
    try:
        with filesystem.open_input_stream(f"{root}/{MANIFEST}") as stream:
            manifest = json.loads(stream.readall())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a segae-spark model directory: {MANIFEST} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where} must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not a {FORMAT} manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has model format version {version!r}; this segae-spark {__version__} reads up to {FORMAT_VERSION}"
        )
    _check_keys(where, manifest, _REQUIRED_KEYS)
    _check_keys(f"{where}: features", manifest["features"], _REQUIRED_FEATURE_KEYS)
    return manifest


def verify_checksums(path: str, manifest: dict) -> None:
    """Raise ArtifactError naming every file that is missing or whose SHA-256 differs from the manifest's."""
    filesystem, root = _filesystem(path)
    expected = manifest["checksums"]
    actual = _checksums(filesystem, root)
    missing = sorted(set(expected) - set(actual))
    changed = sorted(name for name in expected if name in actual and actual[name] != expected[name])
    problems = ([f"changed files {changed} (SHA-256 checksum differs from {MANIFEST})"] if changed else []) + (
        [f"missing files {missing}"] if missing else []
    )
    if problems:
        raise ArtifactError(f"model directory {path} is damaged: {'; '.join(problems)}")


def _check_weights(path: str, relative: str, blob: bytes) -> None:
    """Parse ``.npz`` weights now, on the driver, so a bad file fails the load and names itself.

    Executors would otherwise meet it in the middle of a scoring job. The
    parse never unpickles (``allow_pickle=False``): an object array, the only
    way an ``.npz`` can carry code, is refused here.
    """
    from segae_spark.models.numpy_engine import load_engine

    try:
        load_engine(blob)
    except ArtifactError as exc:
        raise ArtifactError(f"model directory {path}: {relative}: {exc}") from None


def _read_train_errors(path: str, data: bytes) -> dict[int, dict[str, np.ndarray]]:
    """``segment_<n>__<metric>`` arrays of ``train_errors.npz``; ArtifactError on pickles or bad names."""
    where = f"model directory {path}: {TRAIN_ERRORS}"
    train_errors: dict[int, dict[str, np.ndarray]] = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            for key in stored.files:
                segment, _, metric = key.removeprefix("segment_").partition("__")
                if not segment.isdigit() or not metric:
                    raise ArtifactError(f"{where} has an unexpected array {key!r}")
                values = stored[key]
                if values.dtype.kind not in "fiu":
                    raise ArtifactError(f"{where}: array {key!r} holds {values.dtype}, expected numbers")
                train_errors.setdefault(int(segment), {})[metric] = values
    except ArtifactError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ArtifactError(f"{where} holds a pickled object array; model files never contain pickles, refusing to load") from None
        raise ArtifactError(f"{where} is not a readable .npz archive: {exc}") from None
    except Exception as exc:  # BadZipFile, OSError, EOFError ...
        raise ArtifactError(f"{where} is not a readable .npz archive: {exc}") from None
    return train_errors


def read_artifact(path: str) -> tuple[ModelArtifact, dict]:
    """Load the model directory at ``path``: (learned state, params)."""
    manifest = read_manifest(path)
    verify_checksums(path, manifest)
    filesystem, root = _filesystem(path)
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
            _check_weights(path, f"models/{name}.npz", blobs[".npz"])
        models[name] = TrainedModel(name, blobs.get(".npz"), blobs[".keras"], training)
    features = manifest["features"]
    if TRAIN_ERRORS not in manifest["checksums"]:
        raise ArtifactError(f"model directory {path}: {MANIFEST} has no checksum for {TRAIN_ERRORS}; the directory is damaged")
    with filesystem.open_input_stream(f"{root}/{TRAIN_ERRORS}") as stream:
        train_errors = _read_train_errors(path, stream.readall())
    artifact = ModelArtifact(
        spec=FeatureSpec.from_dict(features),
        feature_names=list(features["names"]),
        preprocessing=PipelineModel.load(f"{path}/preprocessing"),
        segmenter=load_segmenter(f"{path}/segmenter"),
        models=models,
        segments=manifest["segments"],
        train_errors=train_errors,
        training=manifest.get("training", {}),
    )
    return artifact, manifest["params"]
