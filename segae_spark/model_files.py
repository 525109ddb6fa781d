"""The files of a model directory that read without Spark: manifest, checksums, weights, training errors.

:mod:`segae_spark.artifacts` describes the layout and writes and loads the
whole model with Spark; what is here needs only pyarrow's filesystems, JSON
and numpy, so local scoring (:mod:`segae_spark.local_scoring`) checks a
model directory exactly as ``SegmentAEModel.load`` does in a process without
pyspark. Nothing here unpickles: ``.npz`` files are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
from pyarrow import fs as pafs

from segae_spark import __version__
from segae_spark.errors import ArtifactError

FORMAT = "segae-spark-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRAIN_ERRORS = "train_errors.npz"
_SKIP_CHECKSUM = (".crc", "_SUCCESS")


def filesystem_of(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``path`` (a URI, or a local path made absolute) and the path on it."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def file_checksums(filesystem: pafs.FileSystem, root: str) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path, but the manifest and Spark's ``.crc`` / ``_SUCCESS`` markers."""
    sums = {}
    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = os.path.relpath(info.path, root)
        if info.type != pafs.FileType.File or relative == MANIFEST or info.base_name.endswith(_SKIP_CHECKSUM):
            continue
        with filesystem.open_input_stream(info.path) as stream:
            sums[relative] = hashlib.sha256(stream.readall()).hexdigest()
    return dict(sorted(sums.items()))


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
    filesystem, root = filesystem_of(path)
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
    filesystem, root = filesystem_of(path)
    expected = manifest["checksums"]
    actual = file_checksums(filesystem, root)
    missing = sorted(set(expected) - set(actual))
    changed = sorted(name for name in expected if name in actual and actual[name] != expected[name])
    problems = ([f"changed files {changed} (SHA-256 checksum differs from {MANIFEST})"] if changed else []) + (
        [f"missing files {missing}"] if missing else []
    )
    if problems:
        raise ArtifactError(f"model directory {path} is damaged: {'; '.join(problems)}")


def check_weights(path: str, relative: str, blob: bytes) -> None:
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


def read_train_errors(path: str, data: bytes) -> dict[int, dict[str, np.ndarray]]:
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
