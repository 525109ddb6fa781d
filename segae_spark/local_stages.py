"""The fitted preprocessing and segmenter of a model directory, read and applied without Spark.

A model directory holds its preprocessing as a saved Spark ML
``PipelineModel`` and its segmenter as a saved clustering model: JSON
metadata (class, params, small learned numbers) plus Parquet data. Here they
are read with pyarrow and JSON only and applied to pandas columns, each stage
doing what its Spark counterpart does, value for value:

* ``FeatureCasterModel`` (:mod:`segae_spark.features.casting`): numerics to
  double as Spark's ``try_cast`` does (numbers held as strings parsed as
  ``java.lang.Double.parseDouble`` reads them; unparsable, NaN and +-inf
  become null), categoricals to strings as ``CAST(... AS STRING)`` does;
* ``NumericImputerModel`` (and Spark's ``ImputerModel``, which models saved
  before it used): nulls and NaNs become the saved surrogates;
* ``CategoricalImputerModel``: nulls become the saved fill values;
* the category encoders: codes from the saved frequency tables through
  :mod:`segae_spark.features.codes`, the functions the Spark stages use;
* ``ColumnScalerModel``: ``(x - offset) * scale``;
* ``VectorAssembler``: an :class:`~segae_spark.features.arrays.ArrayAssembly`,
  the assembly Spark scoring itself runs in numpy;
* the segmenter: the centroids of a Euclidean ``KMeansModel`` or a
  ``CentroidSegmenterModel`` (rows go to the nearest one, as in scoring).

Anything else (a bisecting K-means or Gaussian-mixture segmenter, a
categorical column trained as floating-point numbers, a stage this module
does not know) is refused with a ConfigError or ArtifactError naming it,
never scored differently. Nothing here imports pyspark.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from segae_spark.errors import ArtifactError, ConfigError, SchemaError
from segae_spark.features.arrays import ArrayAssembly
from segae_spark.features.codes import inverse_frequency_codes, label_codes, one_hot_slots
from segae_spark.model_files import filesystem_of

# Columns between stages: name -> float64 values (NaN = null) or object values (None = null).
Columns = dict[str, np.ndarray]

_INTEGER_TYPES = ("tinyint", "smallint", "int", "bigint")
_CASTER = "segae_spark.features.casting.FeatureCasterModel"
_IMPUTER = "segae_spark.features.imputers.NumericImputerModel"
_SPARK_IMPUTER = "org.apache.spark.ml.feature.ImputerModel"
_FILLER = "segae_spark.features.imputers.CategoricalImputerModel"
_SCALER = "segae_spark.features.scalers.ColumnScalerModel"
_ASSEMBLER = "org.apache.spark.ml.feature.VectorAssembler"
_ENCODERS = {
    "segae_spark.features.encoders.InverseFrequencyEncoderModel": "inverse_frequency",
    "segae_spark.features.encoders.LabelEncoderModel": "label",
    "segae_spark.features.encoders.CappedOneHotEncoderModel": "one_hot",
}
_KMEANS = "org.apache.spark.ml.clustering.KMeansModel"
_CENTROIDS = "segae_spark.clustering.centroids.CentroidSegmenterModel"
# Segmenters whose assignment is not the nearest centroid: they score in Spark only.
_SPARK_ONLY_SEGMENTERS = {
    "org.apache.spark.ml.clustering.BisectingKMeansModel": "bisecting_kmeans",
    "org.apache.spark.ml.clustering.GaussianMixtureModel": "gaussian_mixture",
}

# java.lang.Double.parseDouble's grammar (after String.trim): decimal or hexadecimal
# floating point with an optional f/F/d/D suffix; NaN / Infinity spellings are the
# ones Spark also accepts, and all of them become null anyway.
_JAVA_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[fFdD]?")
_JAVA_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+[fFdD]?")
_JAVA_TRIM = "".join(chr(c) for c in range(33))  # String.trim drops every char <= U+0020


def parse_double(text: str) -> float:
    """``try_cast(text AS DOUBLE)`` in Spark: the number, or NaN where Spark gives null."""
    text = text.strip(_JAVA_TRIM)
    if _JAVA_DECIMAL.fullmatch(text):
        return float(text.rstrip("fFdD"))
    if _JAVA_HEX.fullmatch(text):
        return float.fromhex(text.rstrip("fFdD"))
    return math.nan  # includes NaN / Infinity, which the caster turns into null as well


def _is_null(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _as_double(series: pd.Series, name: str, trained_as_string: bool) -> np.ndarray:
    """The column as float64 with NaN for null, as ``FeatureCasterModel`` casts numerics (NaN, +-inf -> null)."""
    if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = np.array([_double_of(v, name, trained_as_string) for v in series], dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


def _double_of(value, name: str, trained_as_string: bool) -> float:
    if _is_null(value):
        return math.nan
    if isinstance(value, (bool, np.bool_, int, np.integer, float, np.floating, Decimal)):
        return float(value)
    if isinstance(value, str) and trained_as_string:
        return parse_double(value)
    raise SchemaError(
        f"feature column {name!r} holds {type(value).__name__} values such as {value!r}; the model was trained on "
        "it as numbers" + ("" if isinstance(value, str) else " (numbers, booleans or numbers held as strings)")
    )


def _as_strings(series: pd.Series, name: str, trained_type: str) -> np.ndarray:
    """The column as ``CAST(column AS STRING)`` gives it: str values or None.

    Integers print as integers; so do the whole floats pandas uses for an
    integer column with nulls, when training saw the column as integers.
    Other floats would print as Java doubles, which this module does not
    reproduce: they are refused.
    """

    def text(value) -> str | None:
        if _is_null(value):
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, np.bool_)):
            return "true" if value else "false"
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        if isinstance(value, (float, np.floating)) and float(value).is_integer() and trained_type in _INTEGER_TYPES:
            return str(int(value))
        raise SchemaError(
            f"categorical column {name!r} holds {type(value).__name__} values such as {value!r}; local scoring "
            f"takes strings, integers or booleans there (the model was trained on it as {trained_type})"
        )

    return np.array([text(v) for v in series], dtype=object)


@dataclass(frozen=True)
class _Cast:
    numeric: tuple[tuple[str, str], ...]
    categorical: tuple[tuple[str, str], ...]
    types: dict[str, str]

    def apply(self, frame: pd.DataFrame, columns: Columns) -> None:
        for name, out in self.numeric:
            columns[out] = _as_double(frame[name], name, self.types.get(name) == "string")
        for name, out in self.categorical:
            columns[out] = _as_strings(frame[name], name, self.types.get(name, "string"))


@dataclass(frozen=True)
class _Impute:
    pairs: tuple[tuple[str, str], ...]
    surrogates: tuple[float, ...]
    missing_value: float

    def apply(self, frame: pd.DataFrame, columns: Columns) -> None:
        for (name, out), surrogate in zip(self.pairs, self.surrogates):
            values = columns[name]
            missing = np.isnan(values) | (values == self.missing_value)
            columns[out] = np.where(missing, surrogate, values)


@dataclass(frozen=True)
class _Fill:
    pairs: tuple[tuple[str, str], ...]
    fills: tuple[str, ...]

    def apply(self, frame: pd.DataFrame, columns: Columns) -> None:
        for (name, out), fill in zip(self.pairs, self.fills):
            columns[out] = np.array([fill if v is None else v for v in columns[name]], dtype=object)


@dataclass(frozen=True)
class _Encode:
    pairs: tuple[tuple[str, str], ...]
    codes: tuple[dict[str, float], ...]
    unseen: tuple[float, ...]
    slots: tuple[int, ...] | None  # one-hot: positions per column (the assembly widths)

    def apply(self, frame: pd.DataFrame, columns: Columns) -> None:
        for (name, out), codes, unseen in zip(self.pairs, self.codes, self.unseen):
            columns[out] = np.array([codes.get(v, unseen) for v in columns[name]], dtype=np.float64)


@dataclass(frozen=True)
class _Scale:
    pairs: tuple[tuple[str, str], ...]
    offset: tuple[float, ...]
    scale: tuple[float, ...]

    def apply(self, frame: pd.DataFrame, columns: Columns) -> None:
        for (name, out), offset, scale in zip(self.pairs, self.offset, self.scale):
            columns[out] = (columns[name] - offset) * scale


@dataclass(frozen=True)
class LocalPreprocessing:
    """The fitted preprocessing of a model directory, applied to pandas frames."""

    inputs: tuple[str, ...]
    stages: tuple
    assembly: ArrayAssembly

    def assembly_batch(self, frame: pd.DataFrame) -> pa.RecordBatch:
        """The columns the ``VectorAssembler`` would read, as the batch :func:`~segae_spark.arrow_scoring.score_batch` takes."""
        missing = [c for c in self.inputs if c not in frame.columns]
        if missing:
            raise SchemaError(f"input is missing feature column(s) {missing}; the model was trained on {list(self.inputs)}")
        columns: Columns = {}
        for stage in self.stages:
            stage.apply(frame, columns)
        return pa.RecordBatch.from_arrays([pa.array(columns[c], pa.float64()) for c in self.assembly.columns], names=list(self.assembly.columns))


def _files(filesystem: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(directory))
    except FileNotFoundError:
        raise ArtifactError(f"{directory} is missing from the model directory") from None
    return sorted(infos, key=lambda info: info.base_name)


def read_stage_metadata(filesystem: pafs.FileSystem, path: str) -> dict:
    """The DefaultParams metadata JSON of the Spark ML stage saved at ``path`` (``metadata/part-*``, Spark 3.5 or 4)."""
    parts = [i for i in _files(filesystem, f"{path}/metadata") if i.base_name.startswith("part-") and not i.base_name.endswith(".crc")]
    if not parts:
        raise ArtifactError(f"{path}/metadata holds no metadata file")
    with filesystem.open_input_stream(parts[0].path) as stream:
        line = stream.readall().decode("utf-8").split("\n", 1)[0]
    try:
        metadata = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}/metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict) or "class" not in metadata:
        raise ArtifactError(f"{path}/metadata is not Spark ML stage metadata")
    return metadata


def _param(metadata: dict, name: str):
    for key in ("paramMap", "defaultParamMap"):
        if name in metadata.get(key, {}):
            return metadata[key][name]
    raise ArtifactError(f"stage {metadata.get('uid')} ({metadata['class']}) has no param {name!r} in its metadata")


def _pairs(metadata: dict, inputs: str = "inputCols", outputs: str = "outputCols") -> tuple[tuple[str, str], ...]:
    return tuple(zip(_param(metadata, inputs), _param(metadata, outputs)))


def _read_table(filesystem: pafs.FileSystem, path: str) -> pa.Table:
    try:
        return pq.read_table(path, filesystem=filesystem)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ArtifactError(f"{path} is not a readable Parquet table: {exc}") from None


def _read_stage(filesystem: pafs.FileSystem, path: str, metadata: dict, types: dict[str, str]):
    kind = metadata["class"]
    if kind == _CASTER:
        numeric = _pairs(metadata, "numericCols", "numericOutputCols")
        categorical = _pairs(metadata, "categoricalCols", "categoricalOutputCols")
        floating = [c for c, _ in categorical if types.get(c, "string") not in ("string", "boolean", *_INTEGER_TYPES)]
        if floating:
            raise ConfigError(
                f"categorical column(s) {floating} were trained as {[types[c] for c in floating]}; local scoring "
                "reproduces Spark's string form of strings, integers and booleans only: score this model in Spark"
            )
        return _Cast(numeric, categorical, dict(types))
    if kind == _IMPUTER:
        return _Impute(_pairs(metadata), tuple(float(v) for v in metadata["state"]["surrogates"]), math.nan)
    if kind == _SPARK_IMPUTER:
        pairs = _pairs(metadata)
        surrogates = _read_table(filesystem, f"{path}/data")
        if surrogates.num_rows != 1 or any(name not in surrogates.column_names for name, _ in pairs):
            raise ArtifactError(f"{path}/data does not hold one surrogate per imputed column")
        values = tuple(float(surrogates.column(name)[0].as_py()) for name, _ in pairs)
        return _Impute(pairs, values, float(_param(metadata, "missingValue")))
    if kind == _FILLER:
        return _Fill(_pairs(metadata), tuple(metadata["state"]["fill_values"]))
    if kind == _SCALER:
        state = metadata["state"]
        return _Scale(_pairs(metadata), tuple(map(float, state["offset"])), tuple(map(float, state["scale"])))
    if kind in _ENCODERS:
        return _read_encoder(filesystem, path, metadata, _ENCODERS[kind])
    raise ArtifactError(f"{path} holds a {kind} stage, which local scoring does not know; score this model in Spark")


def _read_encoder(filesystem: pafs.FileSystem, path: str, metadata: dict, encoder: str) -> _Encode:
    """Codes of every saved category (the table ``CategoryEncoderModel`` writes), as the Spark stage computes them."""
    pairs = _pairs(metadata)
    state = metadata["state"]
    table = _read_table(filesystem, f"{path}/categories").to_pandas().sort_values(["column", "position"])
    codes, unseen, slots = [], [], []
    for i in range(len(pairs)):
        rows = table[table["column"] == i]
        counts = [int(n) for n in rows["count"]]
        if not counts:
            raise ArtifactError(f"{path}/categories has no categories for column {pairs[i][0]}")
        if encoder == "inverse_frequency":
            values, other = inverse_frequency_codes(counts, int(state["rows"]))
        elif encoder == "label":
            values, other = label_codes(counts)
        else:
            values, other = one_hot_slots(counts, int(_param(metadata, "maxCategories")))
            slots.append(int(other) + 1)
        codes.append(dict(zip(rows["category"], values)))
        unseen.append(other)
    return _Encode(pairs, tuple(codes), tuple(unseen), tuple(slots) if encoder == "one_hot" else None)


def read_preprocessing(model_dir: str, numeric: list[str], categorical: list[str], types: dict[str, str]) -> LocalPreprocessing:
    """The ``preprocessing/`` PipelineModel of ``model_dir``, every stage read without Spark."""
    filesystem, root = filesystem_of(model_dir)
    pipeline = read_stage_metadata(filesystem, f"{root}/preprocessing")
    folders = {info.base_name.split("_", 1)[-1]: info.path for info in _files(filesystem, f"{root}/preprocessing/stages")}
    stages, widths = [], {}
    for uid in _param(pipeline, "stageUids"):
        if uid not in folders:
            raise ArtifactError(f"{model_dir}/preprocessing/stages lacks the folder of stage {uid}")
        metadata = read_stage_metadata(filesystem, folders[uid])
        if metadata["class"] == _ASSEMBLER:
            if uid != _param(pipeline, "stageUids")[-1]:
                raise ArtifactError(f"{model_dir}/preprocessing has a VectorAssembler before its last stage")
            columns = tuple(_param(metadata, "inputCols"))
            assembly = ArrayAssembly(columns, tuple(widths.get(c, 0) for c in columns))
            return LocalPreprocessing(tuple(numeric) + tuple(categorical), tuple(stages), assembly)
        stage = _read_stage(filesystem, folders[uid], metadata, types)
        if isinstance(stage, _Encode) and stage.slots is not None:
            widths.update({out: n for (_, out), n in zip(stage.pairs, stage.slots)})
        stages.append(stage)
    raise ArtifactError(f"{model_dir}/preprocessing does not end with a VectorAssembler")


def _vector(value: dict) -> list[float]:
    """A Spark ML vector as saved in Parquet (``type`` 0: sparse, 1: dense)."""
    if value["type"] == 1:
        return list(value["values"])
    dense = [0.0] * value["size"]
    for index, number in zip(value["indices"], value["values"]):
        dense[index] = number
    return dense


def read_centroids(model_dir: str) -> np.ndarray:
    """The centroids of the model's ``segmenter/``, for a segmenter that assigns each row its nearest one.

    ConfigError for the segmenters that assign otherwise (bisecting K-means
    descends its tree, a Gaussian mixture takes the most probable component,
    a cosine K-means compares angles): they score in Spark only.
    """
    filesystem, root = filesystem_of(model_dir)
    path = f"{root}/segmenter"
    metadata = read_stage_metadata(filesystem, path)
    kind = metadata["class"]
    if kind in _SPARK_ONLY_SEGMENTERS:
        raise ConfigError(
            f"model {model_dir} segments rows with {_SPARK_ONLY_SEGMENTERS[kind]} ({kind.rsplit('.', 1)[-1]}), which "
            "local scoring does not reproduce; it supports kmeans, minibatch_kmeans and agglomerative: score this "
            "model in Spark (SegmentAEModel.transform)"
        )
    if kind == _KMEANS:
        if _param(metadata, "distanceMeasure") != "euclidean":
            raise ConfigError(f"model {model_dir} segments rows by {_param(metadata, 'distanceMeasure')} K-means; local scoring supports euclidean only")
        rows = sorted(_read_table(filesystem, f"{path}/data").to_pylist(), key=lambda r: r["clusterIdx"])
        centers = [_vector(r["clusterCenter"]) for r in rows]
    elif kind == _CENTROIDS:
        rows = sorted(_read_table(filesystem, f"{path}/data").to_pylist(), key=lambda r: r["cluster"])
        centers = [r["center"] for r in rows]
    else:
        raise ArtifactError(f"{path} holds a {kind!r} model, not a segmenter")
    array = np.array(centers, dtype=np.float64)
    if array.ndim != 2 or not len(array) or not np.isfinite(array).all():
        raise ArtifactError(f"{path}/data does not hold finite centroids of equal length")
    return array
