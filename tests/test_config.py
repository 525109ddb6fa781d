"""The YAML config schema shared by the CLI and the jobs."""

import pytest

from segae_spark.config import load_config, to_params, validate_config
from segae_spark.errors import ConfigError


def test_shipped_configs_are_valid():
    for path in ("conf/train.yaml", "conf/demo.yaml"):
        config = load_config(path)
        params = to_params(config)
        assert params["labelCol"] == "is_fraud"
        assert params["nClusters"] == 4


def test_maps_dotted_keys_to_params():
    params = to_params({"threshold": {"ratio": 3, "metric": "mae"}, "features": {"exclude": ["x"]}, "seed": 7})
    assert params == {"thresholdRatio": 3, "thresholdMetric": "mae", "excludeCols": ["x"], "seed": 7}


def test_preprocessing_keys_map_to_params():
    config = {"preprocessing": {"encoder": "label", "max_categories": 20, "categorical_impute_strategy": "most_frequent"}}
    assert to_params(validate_config(config)) == {"encoder": "label", "maxCategories": 20, "categoricalImputeStrategy": "most_frequent"}


@pytest.mark.parametrize(
    "config, message",
    [
        ({"treshold": {}}, "unknown config key 'treshold'"),
        ({"threshold": {"ratioo": 1}}, "threshold.ratioo"),
        ({"clustering": {"n_clusters": "four"}}, "clustering.n_clusters"),
        ({"seed": True}, "seed"),
        ({"features": []}, "features must be a mapping"),
        ({"score": {"from": 20240101}}, "'score.from' must be a str or date"),
        ({"score": {"replace_where": "yes"}}, "'score.replace_where' must be a bool"),
        ({"score": {"outptu": "x"}}, "unknown config key 'score.outptu'"),
    ],
)
def test_bad_configs_name_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
