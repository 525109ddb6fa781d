import numpy as np
import pytest

from segae_spark.errors import ConfigError
from segae_spark.thresholds import ErrorStats, check_ratio, mean_ratio_threshold


def test_mean_ratio_is_segmentae_rule():
    stats = ErrorStats.of(np.array([1.0, 2.0, 3.0, 6.0]))
    assert stats.mean == 3.0 and stats.max == 6.0 and stats.rows == 4
    assert mean_ratio_threshold(stats, 2.0) == 6.0


@pytest.mark.parametrize("ratio", [0, -1, float("nan"), float("inf"), "2"])
def test_bad_ratio(ratio):
    with pytest.raises(ConfigError, match="threshold_ratio"):
        check_ratio(ratio)


def test_empty_errors_refused():
    with pytest.raises(ConfigError):
        ErrorStats.of(np.array([]))
