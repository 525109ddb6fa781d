"""The visual HTML report: one self-contained file of plots and tables, drawn from Spark aggregates.

``write_report(model, df, "report.html", label_col="is_fraud")`` scores
``df`` once and writes per-segment error histograms with their thresholds,
box plots of normal vs anomalous rows (flagged vs not without a label), ROC
and precision-recall curves, confusion counts and metrics, segment sizes and
the features that most often carry the error of flagged rows.
``write_scored_report`` does the same for a table scored already.
"""

from segae_spark.report.build import Report, write_report, write_scored_report

__all__ = ["Report", "write_report", "write_scored_report"]
