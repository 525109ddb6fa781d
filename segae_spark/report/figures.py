"""The report's figures, drawn with matplotlib's Agg canvas into PNG bytes.

Each function takes the small aggregates of :mod:`segae_spark.report.aggregates`
(never rows) and returns one PNG. Figures are built without pyplot, so
drawing touches no global state and needs no display.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from segae_spark.report.aggregates import Curve, Histogram

DPI = 100
NORMAL, ANOMALOUS, OVERALL = "tab:blue", "tab:red", "black"
_COUNT = FuncFormatter(lambda v, _: f"{v:,.0f}")


def _figure(width: float = 5.2, height: float = 3.4) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    out = io.BytesIO()
    # No Software / timestamp chunks: the same aggregates give the same bytes.
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def histogram(h: Histogram, threshold: float | None, title: str, score_name: str, label_name: str | None) -> bytes:
    """Rows per log-spaced score bin (log axes), label-1 rows on top, the threshold as a dashed line."""
    fig = _figure()
    ax = fig.add_subplot()
    # Bars, not filled steps: an empty bin of a log axis has no height to fill down to.
    left, width = h.edges[:-1], np.diff(h.edges)
    ax.bar(left, h.rows, width=width, align="edge", color=NORMAL, alpha=0.45, label="all rows")
    if h.positives is not None and h.positives.any():
        ax.bar(left, h.positives, width=width, align="edge", color=ANOMALOUS, alpha=0.85, label=f"{label_name} = 1")
    if threshold is not None and threshold > 0:
        ax.axvline(threshold, color=OVERALL, linestyle="--", linewidth=1.2, label=f"threshold {threshold:.4g}")
    ax.set_xscale("log")
    ax.set_yscale("log", nonpositive="clip")
    ax.set_ylim(bottom=0.7)
    _plain_log_ticks(ax.xaxis, h.edges[0], h.edges[-1])
    ax.set(title=title, xlabel=f"reconstruction error ({score_name}, log scale)", ylabel="rows (log scale)")
    ax.yaxis.set_major_formatter(_COUNT)
    ax.yaxis.set_minor_locator(NullLocator())
    ax.legend(fontsize=8)
    return _png(fig)


def _plain_log_ticks(axis, lo: float, hi: float) -> None:
    """Ticks written as plain numbers, at 1, 2, 5 x 10^k when the values span less than about a decade and a half."""
    axis.set_major_locator(LogLocator(subs=(1.0,) if lo <= 0 or hi / lo > 30 else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())  # minor log ticks cost more drawing time than the rest of a figure


def boxes(stats: list[dict], colors: list[str], title: str, score_name: str, threshold: float | None = None) -> bytes:
    """Box plots from precomputed stats (quartiles, 1st / 99th percentile whiskers, mean as a triangle)."""
    fig = _figure(4.2 if len(stats) <= 2 else 5.2)
    ax = fig.add_subplot()
    parts = ax.bxp(stats, showfliers=False, showmeans=True, patch_artist=True, widths=0.5)
    for box, color in zip(parts["boxes"], colors):
        box.set(facecolor=color, alpha=0.35)
    if threshold is not None and threshold > 0:
        ax.axhline(threshold, color=OVERALL, linestyle="--", linewidth=1.2, label=f"threshold {threshold:.4g}")
        ax.legend(fontsize=8)
    scale = "linear"
    if all(s["whislo"] > 0 for s in stats):
        scale = "log scale"
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis, min(s["whislo"] for s in stats), max(s["whishi"] for s in stats))
    ax.set(title=title, ylabel=f"{score_name} ({scale})")
    ax.tick_params(axis="x", labelsize=8)
    return _png(fig)


def roc(overall: Curve, segments: dict[int, Curve], areas: dict[int | None, float | None]) -> bytes:
    """ROC curves, overall (thick) and per segment; the legend gives the exact areas of ``evaluate``."""
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot()
    for seg, c in sorted(segments.items()):
        ax.plot(c.fpr, c.tpr, linewidth=1, label=f"segment {seg} ({_area(areas.get(seg))})")
    ax.plot(overall.fpr, overall.tpr, color=OVERALL, linewidth=2.2, label=f"all rows ({_area(areas.get(None))})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title="ROC (ROC-AUC in legend)")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def precision_recall(
    overall: Curve, segments: dict[int, Curve], areas: dict[int | None, float | None], base_rate: float, flag: tuple[float, float]
) -> bytes:
    """Precision-recall curves, overall and per segment, with the flag's own (recall, precision) point."""
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot()
    for seg, c in sorted(segments.items()):
        ax.plot(c.recall, c.precision, linewidth=1, label=f"segment {seg} ({_area(areas.get(seg))})")
    ax.plot(overall.recall, overall.precision, color=OVERALL, linewidth=2.2, label=f"all rows ({_area(areas.get(None))})")
    ax.axhline(base_rate, color="grey", linestyle=":", linewidth=1, label=f"positive rate {base_rate:.3g}")
    ax.plot([flag[0]], [flag[1]], "o", color=ANOMALOUS, label="the flag (its thresholds)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision", title="Precision-recall (PR-AUC in legend)")
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig)


def _area(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def segment_sizes(segments: list[int], train_rows: list[int], input_rows: list[int], flagged: list[int]) -> bytes:
    """Training rows and input rows per segment, side by side, flagged input rows in red."""
    fig = _figure(max(5.2, 1.1 * len(segments) + 2), 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(segments))
    ax.bar(x - 0.2, train_rows, width=0.4, color="tab:grey", label="training rows")
    ax.bar(x + 0.2, input_rows, width=0.4, color=NORMAL, label="input rows")
    ax.bar(x + 0.2, flagged, width=0.4, color=ANOMALOUS, label="flagged input rows")
    ax.set_xticks(x, [str(s) for s in segments])
    ax.set(xlabel="segment", ylabel="rows", title="Segment sizes")
    ax.yaxis.set_major_formatter(_COUNT)
    ax.legend(fontsize=8)
    return _png(fig)


def top_features(names: list[str], rows: list[int], flagged: int) -> bytes:
    """Share of flagged rows having each feature among their top features (most frequent on top)."""
    fig = _figure(6.4, max(2.4, 0.32 * len(names) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    ax.barh(y, [100.0 * r / flagged for r in rows], color=ANOMALOUS, alpha=0.7)
    ax.set_yticks(y, names, fontsize=8)
    ax.set(xlabel="% of flagged rows with the feature in their top features", title="Top contributing features, flagged rows")
    return _png(fig)
