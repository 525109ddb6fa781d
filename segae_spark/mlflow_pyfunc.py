"""The MLflow pyfunc model of a segae-spark model, logged as code ("models from code").

:func:`segae_spark.tracking.log_model_run` hands MLflow this file's path as
``python_model``: MLflow stores the file with the logged model and runs it
when the model is loaded, so the logged model is this source plus the model
directory (its ``segae_model`` artifact), never a pickle. Not meant to be
imported: running it registers the model with ``mlflow.models.set_model``.
"""

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from segae_spark.local_scoring import PandasScorer
from segae_spark.tracking import MODEL_DIR_ARTIFACT


class SegmentAEPyfunc(PythonModel):
    """Scores a pandas frame of the feature columns in-process: segment, anomaly_score, threshold, score_ratio, is_anomaly."""

    def load_context(self, context) -> None:
        self._scorer = PandasScorer.load(context.artifacts[MODEL_DIR_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self._scorer.score_columns(model_input)


set_model(SegmentAEPyfunc())
