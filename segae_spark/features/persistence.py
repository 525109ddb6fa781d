"""Save and load fitted feature stages the way Spark ML does, without pickle.

A stage directory holds Spark ML's own ``metadata/`` (class, uid, params as
JSON, written by :class:`DefaultParamsWriter`) with the stage's small learned
numbers in the same JSON under ``"state"``; tables that can grow with the data
(a category table) go next to it as Parquet written by Spark. Loading reads
only JSON and Parquet, so a stage directory cannot run code, and a fitted
stage loads inside a saved ``PipelineModel`` like any Spark stage.
"""

from __future__ import annotations

from typing import Any

from pyspark.ml.util import DefaultParamsReader, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import SparkSession

from segae_spark.compat import load_params_metadata, save_params_metadata


class _StageWriter(MLWriter):
    def __init__(self, instance: "PersistentStage"):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        state = self.instance._write_state(path, self.sparkSession)
        save_params_metadata(self.instance, path, self.sparkSession, extra={"state": state})


class _StageReader(MLReader):
    def __init__(self, cls: type):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> "PersistentStage":
        expected = f"{self.cls.__module__}.{self.cls.__name__}"
        metadata = load_params_metadata(path, self.sparkSession, expected)
        for retired in self.cls._retired_params:
            metadata["paramMap"].pop(retired, None)
            metadata.get("defaultParamMap", {}).pop(retired, None)
        instance = self.cls()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        instance._read_state(metadata["state"], path, self.sparkSession)
        return instance


class PersistentStage(MLWritable, MLReadable):
    """Mixin for fitted stages: ``write()`` / ``read()`` through the two hooks below."""

    # Params the class no longer has that stages saved by earlier versions hold: ignored on load.
    _retired_params: tuple[str, ...] = ()

    def _write_state(self, path: str, spark: SparkSession) -> dict[str, Any]:
        """Write any tables under ``path``; return the JSON-ready small state."""
        raise NotImplementedError

    def _read_state(self, state: dict[str, Any], path: str, spark: SparkSession) -> None:
        """Restore the learned attributes from ``state`` and the tables under ``path``."""
        raise NotImplementedError

    def write(self) -> MLWriter:
        return _StageWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _StageReader(cls)
