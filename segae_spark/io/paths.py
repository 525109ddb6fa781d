"""Where a table lives and what format it is in.

Paths are resolved once, on the driver, into a :class:`TablePath` holding the
string Spark should read, the URI delta-rs should open, and a pyarrow
filesystem to look around with. We inspect paths with pyarrow (not the JVM's
Hadoop classes) so the same code works under Spark Connect and from executors,
which write Delta data files through the same filesystem.

A path without a scheme is a local path and is made absolute here: executors
may run with another working directory, and the Delta log stores paths
relative to the table root, so the root must be unambiguous.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pyarrow.fs as pafs

from segae_spark.errors import ConfigError, TableNotFoundError

FORMATS = ("delta", "parquet", "csv")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2")
_PARQUET_SUFFIXES = (".parquet",)


@dataclass(frozen=True)
class TablePath:
    """A resolved table location.

    ``path`` is what the user gave, normalised (absolute for local paths); it
    is what Spark reads and what errors name. ``fs_path`` is the same location
    for ``filesystem()``.
    """

    path: str
    fs_path: str
    is_local: bool

    def filesystem(self) -> pafs.FileSystem:
        if self.is_local:
            return pafs.LocalFileSystem()
        fs, _ = pafs.FileSystem.from_uri(self.path)
        return fs

    def child(self, name: str) -> str:
        """``fs_path`` of an entry directly under this location."""
        return f"{self.fs_path.rstrip('/')}/{name}"


def resolve(path: str) -> TablePath:
    """Normalise ``path``; raise ConfigError for an empty or unusable one."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigError(f"table path must be a non-empty string, got {path!r}")
    text = os.fspath(path).strip()
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif text.startswith("file:"):
        text = text[len("file:") :]
    if _SCHEME.match(text):
        try:
            _, fs_path = pafs.FileSystem.from_uri(text)
        except Exception as exc:  # pyarrow raises ArrowInvalid / ArrowNotImplementedError
            raise ConfigError(f"cannot open {text!r}: pyarrow has no filesystem for it ({exc})") from exc
        return TablePath(path=text.rstrip("/"), fs_path=fs_path.rstrip("/"), is_local=False)
    local = os.path.abspath(os.path.expanduser(text))
    return TablePath(path=local, fs_path=local, is_local=True)


def exists(table: TablePath) -> bool:
    return table.filesystem().get_file_info(table.fs_path).type != pafs.FileType.NotFound


def is_delta_table(table: TablePath) -> bool:
    """A Delta table is a directory holding a ``_delta_log`` directory."""
    info = table.filesystem().get_file_info(table.child("_delta_log"))
    return info.type == pafs.FileType.Directory


def require_exists(table: TablePath) -> None:
    if not exists(table):
        raise TableNotFoundError(f"no table at {table.path}: the path does not exist")


def check_format(format: str | None) -> str | None:
    """Return ``format`` lower-cased, or raise ConfigError naming the allowed values."""
    if format is None:
        return None
    if not isinstance(format, str) or format.lower() not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)} (or None to detect it), got {format!r}")
    return format.lower()


def detect_format(table: TablePath) -> str:
    """Tell delta / parquet / csv apart by looking at the files.

    A directory with ``_delta_log`` is Delta even though it also holds Parquet
    files: reading those directly would resurrect removed files.
    """
    fs = table.filesystem()
    info = fs.get_file_info(table.fs_path)
    if info.type == pafs.FileType.NotFound:
        raise TableNotFoundError(f"no table at {table.path}: the path does not exist")
    if info.type == pafs.FileType.File:
        found = _format_of_name(info.base_name)
        if found is None:
            raise TableNotFoundError(
                f"{table.path} is not a table: expected a Delta table directory or Parquet / CSV data "
                f"(files named *.parquet or *.csv, or a directory of them); read_table(format=...) reads a file named otherwise"
            )
        return found
    if is_delta_table(table):
        return "delta"
    formats = set()
    for entry in fs.get_file_info(pafs.FileSelector(table.fs_path, recursive=True)):
        relative = entry.path[len(table.fs_path) :].strip("/")
        # Spark ignores _SUCCESS, _committed_*, .crc files and hidden dirs too.
        if entry.type != pafs.FileType.File or any(p.startswith(("_", ".")) for p in relative.split("/")):
            continue
        found = _format_of_name(entry.base_name)
        if found is not None:
            formats.add(found)
    if len(formats) == 1:
        return formats.pop()
    if not formats:
        raise TableNotFoundError(
            f"{table.path} is a directory with no _delta_log and no .parquet or .csv files: not a table"
        )
    raise ConfigError(f"{table.path} holds both parquet and csv files; pass format= to choose one")


def _format_of_name(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(_CSV_SUFFIXES):
        return "csv"
    return None
