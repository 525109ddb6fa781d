import numpy as np
import pytest

from segae_spark.errors import ConfigError
from segae_spark.thresholds import ErrorStats, ThresholdRule, check_ratio


def test_mean_ratio_is_segmentae_rule():
    errors = np.array([1.0, 2.0, 3.0, 6.0])
    stats = ErrorStats.of(errors)
    assert stats.mean == 3.0 and stats.max == 6.0 and stats.rows == 4
    assert ThresholdRule("mean_ratio", ratio=2.0).threshold(errors) == 6.0


def test_quantile_and_contamination_flag_the_expected_share():
    errors = np.random.default_rng(0).exponential(size=100_000)
    q = ThresholdRule("quantile", quantile=0.99).threshold(errors)
    assert np.mean(errors > q) == pytest.approx(0.01, abs=1e-4)
    c = ThresholdRule("contamination", contamination=0.05).threshold(errors)
    assert np.mean(errors > c) == pytest.approx(0.05, abs=1e-4)


@pytest.mark.parametrize("ratio", [0, -1, float("nan"), float("inf"), "2", True])
def test_bad_ratio(ratio):
    with pytest.raises(ConfigError, match="threshold_ratio"):
        check_ratio(ratio)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"method": "max"}, "threshold method"), ({"quantile": 1.0}, "threshold_quantile"), ({"contamination": 0.7}, "contamination")],
)
def test_bad_rules(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ThresholdRule(**kwargs)


def test_empty_errors_refused():
    with pytest.raises(ConfigError):
        ErrorStats.of(np.array([]))
    with pytest.raises(ConfigError):
        ThresholdRule().threshold(np.array([]))
