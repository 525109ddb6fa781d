"""The session factory: reuse an active session, parse --spark-conf."""

import pytest

from segae_spark.errors import ConfigError
from segae_spark.session import get_or_create_session, has_native_delta, parse_spark_conf


def test_active_session_is_reused_untouched(spark):
    again = get_or_create_session({"spark.sql.shuffle.partitions": "99"})
    assert again is spark
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"  # the test fixture's, not ours
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
    assert has_native_delta(spark) is False


def test_parse_spark_conf():
    assert parse_spark_conf(["a.b=1", "c = x=y "]) == {"a.b": "1", "c": "x=y"}
    assert parse_spark_conf(None) == {}
    with pytest.raises(ConfigError, match="key=value"):
        parse_spark_conf(["novalue"])
