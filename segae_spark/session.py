"""Get the Spark session to run on.

Inside spark-submit or a Databricks notebook a session already exists and is
reused untouched. Otherwise we build a ``local[*]`` session tuned for a laptop:
Arrow on (the scoring path moves Arrow batches into Python), few shuffle
partitions, quiet logs, and the Python workers pinned to the interpreter that
runs the driver so executors see the same installed packages.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

from pyspark.sql import SparkSession

from segae_spark.errors import ConfigError

DEFAULT_CONF: dict[str, str] = {
    "spark.master": "local[*]",
    "spark.app.name": "segae-spark",
    "spark.driver.memory": "4g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.sql.adaptive.enabled": "true",
}


def parse_spark_conf(pairs: list[str] | None) -> dict[str, str]:
    """Turn ``["key=value", ...]`` (the ``--spark-conf`` option) into a dict."""
    conf: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--spark-conf expects key=value, got {pair!r}")
        conf[key.strip()] = value.strip()
    return conf


def get_or_create_session(conf: Mapping[str, str] | None = None, log_level: str = "WARN") -> SparkSession:
    """Return the active session, or build a local one with ``conf`` over the defaults.

    An active session (spark-submit, Databricks) is returned as it is: its
    settings belong to whoever started it, and static settings could not be
    changed anyway.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Under spark-submit the JVM already runs with the submitter's settings
    # (master, memory); our laptop defaults must not override them.
    launched_by_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if not launched_by_submit:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in {**({} if launched_by_submit else DEFAULT_CONF), **dict(conf or {})}.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    spark.sparkContext.setLogLevel(log_level)
    return spark


def has_native_delta(spark: SparkSession) -> bool:
    """True when the session is configured with delta-spark (e.g. Databricks)."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    catalog = spark.conf.get("spark.sql.catalog.spark_catalog", "") or ""
    return "DeltaSparkSessionExtension" in extensions or "DeltaCatalog" in catalog
