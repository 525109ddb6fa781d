"""The scoring path: vectorised per-segment errors, weights cached per process, no TensorFlow."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from segae_spark import scoring
from segae_spark.data import generate_transactions
from segae_spark.models.numpy_engine import NumpyAutoencoder
from segae_spark.models.reconstruction import row_errors
from segae_spark.scoring import OutputColumns, ScoringPlan, score_batch


def _engine(seed: int, d: int = 3) -> NumpyAutoencoder:
    rng = np.random.default_rng(seed)
    return NumpyAutoencoder(
        [
            (rng.normal(size=(d, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32), "tanh"),
            (rng.normal(size=(2, d)).astype(np.float32), rng.normal(size=d).astype(np.float32), "linear"),
        ]
    )


def _plan(metric="mse"):
    return ScoringPlan(
        model_id="m1",
        segment_models={0: "a", 1: "b"},
        thresholds={0: 0.5, 1: 2.0},
        metric=metric,
        features_col="x",
        segment_col="seg",
        passthrough=("id",),
        outputs=OutputColumns(),
    )


def test_score_batch_is_per_segment_vectorised_error():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3)).astype(np.float32)
    seg = np.array([0, 1, 1, 0, 1, 0, 0], dtype=np.int32)
    batch = pa.RecordBatch.from_pydict(
        {"id": [f"r{i}" for i in range(7)], "seg": seg, "x": pa.array(list(x), type=pa.list_(pa.float32()))}
    )
    engines = {"a": _engine(1), "b": _engine(2)}
    out = score_batch(batch, _plan("mae"), engines)
    assert out.schema.names == ["id", "segment", "anomaly_score", "threshold", "score_ratio", "is_anomaly"]
    expected = np.empty(7)
    for s, name in ((0, "a"), (1, "b")):
        idx = seg == s
        expected[idx] = row_errors(x[idx], engines[name].predict(x[idx]), "mae")
    np.testing.assert_allclose(out.column("anomaly_score").to_numpy(), expected, rtol=1e-12)
    thresholds = np.where(seg == 0, 0.5, 2.0)
    np.testing.assert_array_equal(out.column("threshold").to_numpy(), thresholds)
    np.testing.assert_array_equal(out.column("is_anomaly").to_numpy(), (expected > thresholds).astype(np.int32))
    np.testing.assert_allclose(out.column("score_ratio").to_numpy(), expected / thresholds, rtol=1e-12)
    assert out.column("id").to_pylist() == [f"r{i}" for i in range(7)]


def test_score_ratio_is_score_over_threshold_and_safe_at_zero_threshold():
    scores = np.array([0.0, 0.3, 0.0, 2.0, 1.0])
    thresholds = np.array([0.5, 0.5, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(scoring.score_ratios(scores, thresholds), [0.0, 0.6, 0.0, np.inf, 1.0])


def test_top_features_rank_each_rows_error_shares():
    per_feature = np.array([[1.0, 3.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 1.0, 0.0]])
    got = scoring.top_features(per_feature, ["a", "b", "c=x", "d"], 2).to_pylist()
    assert got[0] == [{"feature": "d", "share": 0.5}, {"feature": "b", "share": 0.375}]
    assert got[1] == [{"feature": "a", "share": 0.0}, {"feature": "b", "share": 0.0}]  # exact row: shares 0
    assert got[2] == [{"feature": "a", "share": 0.4}, {"feature": "b", "share": 0.4}]  # tie: the earlier feature first
    assert [len(r) for r in scoring.top_features(per_feature, ["a", "b", "c", "d"], 9).to_pylist()] == [4, 4, 4]


def test_score_batch_adds_top_features_from_one_reconstruction():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    batch = pa.RecordBatch.from_pydict(
        {"id": list("abcdef"), "seg": np.array([0, 1, 0, 1, 0, 1], np.int32), "x": pa.array(list(x), type=pa.list_(pa.float32()))}
    )
    engines = {"a": _engine(1), "b": _engine(2)}
    plan = dataclasses.replace(_plan(), top_features=1, feature_names=("f0", "f1", "f2"))
    out = score_batch(batch, plan, engines)
    plain = score_batch(batch, _plan(), engines)
    assert out.schema.names == plain.schema.names + ["top_features"]
    np.testing.assert_array_equal(out.column("anomaly_score").to_numpy(), plain.column("anomaly_score").to_numpy())
    for row, (seg, tops) in enumerate(zip([0, 1, 0, 1, 0, 1], out.column("top_features").to_pylist())):
        errors = engines["ab"[seg]].feature_errors(x[row : row + 1])[0]
        assert tops == [{"feature": f"f{int(np.argmax(errors))}", "share": pytest.approx(errors.max() / errors.sum())}]


def test_empty_batch_scores_to_empty_batch():
    batch = pa.RecordBatch.from_pydict(
        {"id": pa.array([], pa.string()), "seg": pa.array([], pa.int32()), "x": pa.array([], pa.list_(pa.float32()))}
    )
    assert score_batch(batch, _plan(), {"a": _engine(1), "b": _engine(2)}).num_rows == 0


def test_weights_are_decoded_once_per_process(monkeypatch):
    calls = []
    original = scoring.load_scoring_engine

    def counting(**blobs):
        calls.append(1)
        return original(**blobs)

    monkeypatch.setattr(scoring, "load_scoring_engine", counting)
    scoring._ENGINES.clear()
    weights = SimpleNamespace(value={"a": {"npz": _engine(1).to_npz_bytes()}, "b": {"npz": _engine(2).to_npz_bytes()}})
    first = scoring._engines("m-test", weights)
    second = scoring._engines("m-test", weights)
    assert first is second and len(calls) == 2


@pytest.mark.slow
def test_scoring_a_saved_model_never_imports_tensorflow(spark, fitted_model, saved_model_dir, tmp_path):
    """Driver and executors run with TensorFlow and Keras made unimportable, and score exactly as here."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys
            class _Block:
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] in ("tensorflow", "keras"):
                        raise ImportError("blocked on the scoring path: " + name)
                    return None
            sys.meta_path.insert(0, _Block())
            """
        )
    )
    script = textwrap.dedent(
        f"""
        from segae_spark.session import get_or_create_session
        from segae_spark.data import generate_transactions
        from segae_spark.pipeline import SegmentAEModel
        spark = get_or_create_session({{"spark.master": "local[2]"}})
        df = generate_transactions(spark, 500, seed=3)
        scored = SegmentAEModel.load({saved_model_dir!r}).transform(df)
        rows = scored.select("transaction_id", "anomaly_score").collect()
        import json, sys
        assert len(rows) == 500, len(rows)
        assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
        print("SCORES " + json.dumps({{r.transaction_id: r.anomaly_score for r in rows}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("SCORES "))
    other_process = json.loads(line.removeprefix("SCORES "))
    this_process = {
        r.transaction_id: r.anomaly_score
        for r in fitted_model.transform(generate_transactions(spark, 500, seed=3)).select("transaction_id", "anomaly_score").collect()
    }
    assert other_process == this_process  # bitwise: trained here, loaded and scored there
