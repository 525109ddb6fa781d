"""Loaders for the public benchmark datasets, and the SegmentAE evaluation protocol.

The files live outside the project (``../shared/datasets`` from the project
root, see that folder's README) and are small (<= 50,000 rows), so each loader
reads its file with pandas / numpy on the driver and hands it to Spark with
``spark.createDataFrame``. Every table gets an ``id`` column (the row's index
in its file, 0-based), so rows stay identifiable, and a 0/1 integer label.

=====================  ==========================================  =========================
name                   file(s)                                     label column
=====================  ==========================================  =========================
nsl_kdd                nsl_kdd/KDDTrain+_20Percent.txt             ``label`` (attack != normal)
                       (``split="train"``, the default) or
                       nsl_kdd/KDDTest+.txt (``split="test"``)
htru2                  htru2/HTRU_2.csv                            ``class``
default_credit_card    default_credit_card/UCI_Credit_Card.csv     ``default_payment_next_month``
shuttle, cardio,       adbench/<n>_<name>.npz                      ``y``
thyroid, satellite,
annthyroid,
mammography,
satimage2, pageblocks
=====================  ==========================================  =========================

Column conventions:

* NSL-KDD: the 41 features under their documented names (``duration``,
  ``protocol_type``, ..., ``dst_host_srv_rerror_rate``); ``protocol_type``,
  ``service`` and ``flag`` stay strings (categoricals). The attack name is
  reduced to the 0/1 label and not kept (it would leak the label as a string
  feature); the difficulty column is dropped.
* HTRU2: the header's names with ``-`` replaced by ``_`` (``DM_SNR_Mean``);
  the file's old-Mac ``\\r`` line endings are normalised before parsing.
* Default of credit card clients: ``ID`` dropped (the loader's ``id`` is the
  row index); ``SEX``, ``EDUCATION`` and ``MARRIAGE`` become string
  categoricals; dots in names become underscores.
* ADBench: features ``x0 .. x{d-1}`` as float64 (the files hold float64,
  int16 or uint8; Spark has no unsigned types), label ``y``.

:func:`protocol_split` is the SegmentAE protocol of the datasets README (seed
42: shuffle the normal rows, 75 % of them train, the other 25 % plus every
anomaly test). :func:`benchmark_split` applies it per dataset, except for
NSL-KDD, which comes with its own test file: there the model trains on *all*
normal rows of ``KDDTrain+_20Percent.txt`` and is tested on the whole of
``KDDTest+.txt`` (normals and attacks, including attack types and categories
never seen in training), as the README's table says.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segae_spark.errors import ConfigError, SchemaError, TableNotFoundError

DEFAULT_ROOT = "../shared/datasets"
ID_COL = "id"
TRAIN_FRACTION = 0.75

NSL_KDD_COLUMNS = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land",
    "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised",
    "root_shell", "su_attempted", "num_root", "num_file_creations", "num_shells",
    "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login", "count",
    "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate",
    "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate", "dst_host_count",
    "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
)  # fmt: skip
NSL_KDD_CATEGORICAL = ("protocol_type", "service", "flag")
NSL_KDD_FILES = {"train": "nsl_kdd/KDDTrain+_20Percent.txt", "test": "nsl_kdd/KDDTest+.txt"}

ADBENCH_FILES = {
    "shuttle": "adbench/32_shuttle.npz",
    "cardio": "adbench/6_cardio.npz",
    "thyroid": "adbench/38_thyroid.npz",
    "satellite": "adbench/30_satellite.npz",
    "annthyroid": "adbench/2_annthyroid.npz",
    "mammography": "adbench/23_mammography.npz",
    "satimage2": "adbench/31_satimage-2.npz",
    "pageblocks": "adbench/27_PageBlocks.npz",
}

FILES: dict[str, tuple[str, ...]] = {
    "nsl_kdd": tuple(NSL_KDD_FILES.values()),
    "htru2": ("htru2/HTRU_2.csv",),
    "default_credit_card": ("default_credit_card/UCI_Credit_Card.csv",),
    **{name: (path,) for name, path in ADBENCH_FILES.items()},
}

#: Every dataset name :func:`load_dataset` accepts, in benchmark order.
DATASETS: tuple[str, ...] = tuple(FILES)

#: The label column each dataset's loader returns.
LABEL_COLS: dict[str, str] = {
    "nsl_kdd": "label",
    "htru2": "class",
    "default_credit_card": "default_payment_next_month",
    **{name: "y" for name in ADBENCH_FILES},
}

#: Categorical (string) feature columns per dataset; every other non-id, non-label column is numeric.
CATEGORICAL_COLS: dict[str, tuple[str, ...]] = {
    "nsl_kdd": NSL_KDD_CATEGORICAL,
    "default_credit_card": ("SEX", "EDUCATION", "MARRIAGE"),
}


def _check_name(name: str) -> None:
    if name not in FILES:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")


def dataset_paths(name: str, root: str = DEFAULT_ROOT) -> tuple[str, ...]:
    """The file(s) dataset ``name`` reads under ``root``."""
    _check_name(name)
    return tuple(os.path.join(root, rel) for rel in FILES[name])


def dataset_available(name: str, root: str = DEFAULT_ROOT) -> bool:
    """True when every file of dataset ``name`` exists under ``root``."""
    return all(os.path.isfile(p) for p in dataset_paths(name, root))


def _require(path: str, name: str) -> str:
    if not os.path.isfile(path):
        raise TableNotFoundError(
            f"dataset {name!r}: file {path!r} not found (absolute: {os.path.abspath(path)}); "
            f"set root= to the folder holding the benchmark datasets (default {DEFAULT_ROOT!r})"
        )
    return path


# ------------------------------------------------------------------ readers (pandas)
def _read_nsl_kdd(path: str) -> pd.DataFrame:
    names = list(NSL_KDD_COLUMNS) + ["attack", "difficulty"]
    dtypes = {c: str for c in NSL_KDD_CATEGORICAL} | {"attack": str}
    pdf = pd.read_csv(path, header=None, names=names, dtype=dtypes)
    if pdf.shape[1] != 43 or pdf["difficulty"].isna().any():
        raise SchemaError(f"{path}: expected 43 comma-separated fields per row (41 features, label, difficulty)")
    pdf["label"] = (pdf["attack"].str.strip() != "normal").astype("int32")
    return pdf.drop(columns=["attack", "difficulty"])


def _read_htru2(path: str) -> pd.DataFrame:
    with open(path, "rb") as fh:
        raw = fh.read()
    # The header ends in \r\n, the data rows in a bare \r (old-Mac endings).
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode("utf-8")
    pdf = pd.read_csv(io.StringIO(text))
    pdf.columns = [str(c).strip().replace("-", "_").replace(" ", "_") for c in pdf.columns]
    if "class" not in pdf.columns:
        raise SchemaError(f"{path}: no 'class' column in the header; columns: {list(pdf.columns)}")
    pdf["class"] = pdf["class"].astype("int32")
    return pdf


def _read_credit(path: str) -> pd.DataFrame:
    pdf = pd.read_csv(path)
    pdf.columns = [str(c).strip().replace(".", "_") for c in pdf.columns]
    label = LABEL_COLS["default_credit_card"]
    missing = [c for c in ("ID", label, *CATEGORICAL_COLS["default_credit_card"]) if c not in pdf.columns]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}; columns: {list(pdf.columns)}")
    pdf = pdf.drop(columns=["ID"])
    for c in CATEGORICAL_COLS["default_credit_card"]:
        pdf[c] = pdf[c].astype("int64").astype(str)
    pdf[label] = pdf[label].astype("int32")
    return pdf


def _read_npz(path: str) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as z:
        if "X" not in z.files or "y" not in z.files:
            raise SchemaError(f"{path}: expected arrays 'X' and 'y', found {z.files}")
        x, y = np.asarray(z["X"]), np.asarray(z["y"])
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise SchemaError(f"{path}: X must be 2-D and y 1-D of the same length, got {x.shape} and {y.shape}")
    pdf = pd.DataFrame(x.astype(np.float64), columns=[f"x{i}" for i in range(x.shape[1])])
    pdf["y"] = y.astype("int32")
    return pdf


def read_pandas(name: str, root: str = DEFAULT_ROOT, split: str | None = None) -> tuple[pd.DataFrame, str]:
    """Dataset ``name`` as a pandas DataFrame (``id`` first) and its label column.

    ``split`` picks NSL-KDD's file (``"train"``, the default, or ``"test"``);
    other datasets have one file and take no split.
    """
    _check_name(name)
    if name == "nsl_kdd":
        split = split or "train"
        if split not in NSL_KDD_FILES:
            raise ConfigError(f"nsl_kdd split must be one of {list(NSL_KDD_FILES)}, got {split!r}")
        pdf = _read_nsl_kdd(_require(os.path.join(root, NSL_KDD_FILES[split]), name))
    else:
        if split not in (None, "all"):
            raise ConfigError(f"dataset {name!r} has a single file and takes no split, got split={split!r}")
        path = _require(dataset_paths(name, root)[0], name)
        if name == "htru2":
            pdf = _read_htru2(path)
        elif name == "default_credit_card":
            pdf = _read_credit(path)
        else:
            pdf = _read_npz(path)
    pdf.insert(0, ID_COL, np.arange(len(pdf), dtype=np.int64))
    return pdf.reset_index(drop=True), LABEL_COLS[name]


def load_dataset(
    spark: SparkSession, name: str, root: str = DEFAULT_ROOT, split: str | None = None
) -> tuple[DataFrame, str]:
    """Dataset ``name`` as a Spark DataFrame (with an ``id`` column) and its 0/1 label column.

    >>> df, label = load_dataset(spark, "htru2")              # 17,898 rows, label "class"
    >>> test, label = load_dataset(spark, "nsl_kdd", split="test")

    Raises ConfigError for an unknown name or split, TableNotFoundError
    naming the path when a file is missing.
    """
    pdf, label = read_pandas(name, root, split)
    return spark.createDataFrame(pdf), label


def feature_columns(df_columns, label_col: str) -> list[str]:
    """The feature columns of a loaded dataset: all but ``id`` and the label."""
    return [c for c in df_columns if c not in (ID_COL, label_col)]


# ------------------------------------------------------------------ the protocol
def protocol_ids(ids: np.ndarray, labels: np.ndarray, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, test ids) of the SegmentAE protocol, computed on the driver.

    The normal rows' ids, in ascending order, are shuffled with
    ``np.random.default_rng(seed).permutation``; the first
    ``floor(0.75 * normals)`` train, the remaining normals and every anomaly
    test. Both results are sorted. Depends only on the (id, label) pairs.
    """
    ids = np.asarray(ids, dtype=np.int64)
    labels = np.asarray(labels)
    if ids.shape != labels.shape:
        raise ValueError(f"ids and labels differ in length: {ids.shape} vs {labels.shape}")
    if len(np.unique(ids)) != len(ids):
        raise SchemaError("the id column holds duplicates; protocol_split needs a unique row id")
    bad = sorted(set(np.unique(labels).tolist()) - {0, 1})
    if bad:
        raise SchemaError(f"the label must hold 0/1, found {bad[:10]}")
    normals = np.sort(ids[labels == 0])
    shuffled = normals[np.random.default_rng(seed).permutation(len(normals))]
    n_train = int(np.floor(TRAIN_FRACTION * len(normals)))
    train = np.sort(shuffled[:n_train])
    test = np.sort(np.concatenate([shuffled[n_train:], ids[labels == 1]]))
    return train, test


def protocol_split(df: DataFrame, label_col: str, seed: int = 42, id_col: str = ID_COL) -> tuple[DataFrame, DataFrame]:
    """(train_normals_df, test_df) by the SegmentAE protocol (see :func:`protocol_ids`).

    Collects only ``(id, label)`` to the driver (the benchmark tables are
    small) and shuffles with numpy, so the split is the same whatever Spark's
    partitioning; the two returned DataFrames filter ``df`` by id.
    """
    for c in (id_col, label_col):
        if c not in df.columns:
            raise SchemaError(f"protocol_split: column {c!r} is not in the table; columns: {df.columns}")
    keys = df.select(F.col(id_col).cast("long").alias("i"), F.col(label_col).cast("int").alias("y")).toPandas()  # small: ids and labels of a benchmark table (< 50k rows)
    if keys["y"].isna().any():
        raise SchemaError(f"protocol_split: label column {label_col!r} has nulls")
    train_ids, test_ids = protocol_ids(keys["i"].to_numpy(), keys["y"].to_numpy(), seed)
    spark = df.sparkSession
    train_keys = spark.createDataFrame(pd.DataFrame({id_col: train_ids}))
    test_keys = spark.createDataFrame(pd.DataFrame({id_col: test_ids}))
    return (
        df.join(F.broadcast(train_keys), on=id_col, how="left_semi"),
        df.join(F.broadcast(test_keys), on=id_col, how="left_semi"),
    )


def benchmark_pandas(name: str, root: str = DEFAULT_ROOT, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(train normals, test, label column) of dataset ``name`` as pandas, by the protocol.

    NSL-KDD: every normal row of the train file trains, the whole test file
    tests; every other dataset: :func:`protocol_ids` with ``seed``.
    """
    if name == "nsl_kdd":
        train, label = read_pandas(name, root, "train")
        test, _ = read_pandas(name, root, "test")
        return train[train[label] == 0].reset_index(drop=True), test, label
    pdf, label = read_pandas(name, root)
    train_ids, test_ids = protocol_ids(pdf[ID_COL].to_numpy(), pdf[label].to_numpy(), seed)
    by_id = pdf.set_index(ID_COL, drop=False)
    return by_id.loc[train_ids].reset_index(drop=True), by_id.loc[test_ids].reset_index(drop=True), label


def benchmark_split(
    spark: SparkSession, name: str, root: str = DEFAULT_ROOT, seed: int = 42
) -> tuple[DataFrame, DataFrame, str]:
    """(train normals, test, label column) of dataset ``name`` as Spark DataFrames.

    The same rows as :func:`benchmark_pandas` (and, except for NSL-KDD, as
    ``protocol_split(load_dataset(...))``).
    """
    train, test, label = benchmark_pandas(name, root, seed)
    return spark.createDataFrame(train), spark.createDataFrame(test), label
