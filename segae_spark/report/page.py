"""The report's page: draws the figures from the aggregates and lays out the sections."""

from __future__ import annotations

import datetime as dt

import numpy as np

from segae_spark import __version__
from segae_spark.report import aggregates as agg
from segae_spark.report import figures
from segae_spark.report import markup as h

FEATURES_SHOWN = 15


def threshold_text(model) -> str:
    rule = model.threshold_rule()
    how = {
        "mean_ratio": f"mean training error x {rule.ratio:g}",
        "quantile": f"{rule.quantile:g} quantile of the training errors",
        "contamination": f"contamination {rule.contamination:g} (the {1 - rule.contamination:g} quantile of the training errors)",
    }[rule.method]
    return f"{rule.method}: {how}, per segment; error metric {model.getOrDefault(model.thresholdMetric)}"


class Page:
    """Draws the figures and lays out the sections; counts the images it embeds, by kind."""

    def __init__(self, model, cells: dict, label: str | None, score_name: str, metrics: dict | None):
        self.model, self.cells, self.label, self.score_name, self.metrics = model, cells, label, score_name, metrics
        self.images: dict[str, int] = {}
        self.summary = {s["segment"]: s for s in model.segment_summary()}

    def image(self, png: bytes, alt: str, figure: str, segment: int | None = None) -> str:
        self.images[figure] = self.images.get(figure, 0) + 1
        return h.image(png, alt, figure, segment)

    def groups(self) -> list[tuple[int, str, str]]:
        """(group value, name, colour) of the two groups the box plots compare."""
        if self.label:
            return [(0, f"normal ({self.label} = 0)", figures.NORMAL), (1, f"anomalous ({self.label} = 1)", figures.ANOMALOUS)]
        return [(0, "not flagged", figures.NORMAL), (1, "flagged", figures.ANOMALOUS)]

    def boxes(self, segment: int | None, title: str, threshold: float | None = None) -> str:
        stats, colors = [], []
        for value, name, color in self.groups():
            cell = self.cells.get((segment, value))
            if cell and cell.quantiles:
                stats.append(cell.box(f"{name}\n{cell.rows:,} rows"))
                colors.append(color)
        if not stats:
            return ""
        return self.image(figures.boxes(stats, colors, title, self.score_name, threshold), title, "box", segment)

    def render(self, input_name: str, hists: dict, ranking, features: list, has_top: bool) -> str:
        total = self.cells[(None, None)]
        meta = [
            ("model", self.model.model_id),
            ("input", input_name),
            ("rows", f"{total.rows:,}"),
            ("label column", self.label or "none: flagged vs not flagged rows are compared instead"),
            ("threshold", threshold_text(self.model)),
            ("generated", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") + f" by segae-spark {__version__}"),
        ]
        sections = [self.overview(total), *self.curves(ranking), self.errors(hists), self.segments()]
        return h.page("segae-spark report", meta, *sections, self.top(features, has_top, total.flagged))

    def overview(self, total) -> str:
        items = [("rows", f"{total.rows:,}"), ("flagged", f"{total.flagged:,} ({100 * total.flagged / total.rows:.2f} %)")]
        if not self.metrics:
            text = (
                "No label column was given, so the ROC and precision-recall curves, the confusion counts and the "
                "metrics are skipped, and the box plots compare flagged with not-flagged rows. "
                "Pass a 0/1 label (--label-col, or label_col=) to get them."
            )
            return h.section("metrics", "Metrics", h.tiles(items), h.note(text))
        g = self.metrics["global"]
        shown = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("accuracy", "accuracy"), ("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"))
        items += [(title, h.decimal(g[key])) for key, title in (shown[4], shown[5], *shown[:4])]
        columns = [
            h.Column("segment", "segment", h.plain, text=True), h.Column("rows", "rows", h.integer),
            h.Column("positives", f"{self.label} = 1", h.integer), h.Column("threshold", "threshold", h.general),
            *(h.Column(k, k, h.integer) for k in ("tp", "fp", "fn", "tn")),
            *(h.Column(key, title, h.decimal) for key, title in shown),
        ]  # fmt: skip
        rows = [{**s, "_row": s["segment"]} for s in self.metrics["segments"]]
        rows.append({**g, "segment": "all", "positives": g["tp"] + g["fn"], "_row": "all", "_class": "all"})
        text = (
            "Precision, recall, F1, accuracy and the confusion counts (tp, fp, fn, tn) are of the flag: score above the "
            f"segment's threshold. ROC-AUC and PR-AUC rank rows by {self.metrics.get('rank_by', 'score')} and are exact "
            "(segae_spark.evaluation.evaluate); n/a where a segment holds one class only."
        )
        return h.section("metrics", "Metrics", h.tiles(items), h.note(text), h.table("metrics", columns, rows))

    def curves(self, ranking) -> list[str]:
        if not self.metrics or ranking is None:
            return []
        counts, n = ranking
        positives, negatives = sum((c[0] for c in counts.values()), np.zeros(n)), sum((c[1] for c in counts.values()), np.zeros(n))
        overall = agg.Curve.of(positives, negatives)
        if overall is None:
            return [h.section("curves", "ROC and precision-recall curves", h.note(f"{self.label} holds one class only: no curves."))]
        per_segment = {s: c for s, c in ((s, agg.Curve.of(*pc)) for s, pc in counts.items()) if c is not None}
        g = self.metrics["global"]
        areas_roc = {None: g["roc_auc"], **{s["segment"]: s["roc_auc"] for s in self.metrics["segments"]}}
        areas_pr = {None: g["pr_auc"], **{s["segment"]: s["pr_auc"] for s in self.metrics["segments"]}}
        base = (g["tp"] + g["fn"]) / g["rows"]
        text = (
            f"Curves drawn from label counts in {n - 1} bins of the score cut at its global percentiles (computed in Spark), "
            f"so they are close to, not exactly, the exact areas: ROC-AUC {h.decimal(g['roc_auc'])}, "
            f"PR-AUC {h.decimal(g['pr_auc'])} overall (per segment in the legends). The dot is the flag's own "
            "(recall, precision): it compares each row with its own segment's threshold, so it may lie off the "
            "curve of the raw score ranked across segments."
        )
        roc = figures.roc(overall, per_segment, areas_roc)
        pr = figures.precision_recall(overall, per_segment, areas_pr, base, (g["recall"], g["precision"]))
        body = f'<div class="figures">{self.image(roc, "ROC curves", "roc")}{self.image(pr, "precision-recall curves", "pr")}</div>'
        return [h.section("curves", "ROC and precision-recall curves", h.note(text), body)]

    def errors(self, hists: dict) -> str:
        grouped = f"{self.label} = 0 / 1" if self.label else "flagged or not"
        text = (
            f"Histograms: rows per log-spaced bin of the reconstruction error ({self.score_name}), both axes "
            f"logarithmic, the segment's threshold dashed (rows right of it are flagged)"
            + (f", rows with {self.label} = 1 in red" if self.label else "")
            + f". Box plots: rows by {grouped}; boxes are the quartiles, whiskers the 1st and 99th percentiles, "
            "the triangle the mean (Spark's percentile_approx), the dashed line the segment's threshold."
        )
        parts = [h.note(text), self.boxes(None, "All segments")]
        for seg in sorted(set(self.summary) | set(hists)):
            cell = self.cells.get((seg, None))
            title = f"Segment {seg}"
            if cell is None:
                parts.append(f'<div class="segment"><h3>{title}</h3>{h.note("no row of the input is in this segment")}</div>')
                continue
            head = f"{title}: {cell.rows:,} rows, {cell.flagged:,} flagged, threshold {cell.threshold:.5g}"
            png = figures.histogram(hists[seg], cell.threshold, title, self.score_name, self.label)
            hist, boxes = self.image(png, f"{title} error histogram", "histogram", seg), self.boxes(seg, title, cell.threshold)
            parts.append(f'<div class="segment"><h3>{h.escape(head)}</h3><div class="figures">{hist}{boxes}</div></div>')
        return h.section("errors", "Reconstruction error", *parts)

    def segments(self) -> str:
        segs = sorted(set(self.summary) | {k[0] for k in self.cells if k[0] is not None})
        rows = []
        for seg in segs:
            s, cell = self.summary.get(seg, {}), self.cells.get((seg, None))
            rows.append(
                {
                    "_row": seg,
                    "segment": seg,
                    "model": s.get("model"),
                    "train_rows": s.get("rows"),
                    "threshold": cell.threshold if cell else s.get("threshold"),
                    "rows": cell.rows if cell else 0,
                    "flagged": cell.flagged if cell else 0,
                    "flagged_share": cell.flagged / cell.rows if cell else None,
                    "mean_score": cell.mean if cell else None,
                }
            )
        chart = self.image(
            figures.segment_sizes(segs, [r["train_rows"] or 0 for r in rows], [r["rows"] for r in rows], [r["flagged"] for r in rows]),
            "segment sizes", "sizes",
        )  # fmt: skip
        columns = [
            h.Column("segment", "segment", h.plain, text=True), h.Column("model", "model", h.plain, text=True),
            h.Column("train_rows", "training rows", h.integer), h.Column("threshold", "threshold", h.general),
            h.Column("rows", "input rows", h.integer), h.Column("flagged", "flagged", h.integer),
            h.Column("flagged_share", "flagged share", h.percent), h.Column("mean_score", f"mean {self.score_name}", h.general),
        ]  # fmt: skip
        text = (
            "Training rows: the segment's rows in the training data (its autoencoder trained on a bounded sample of them); "
            "input rows: the rows of the input scored here."
        )
        return h.section("segments", "Segments", h.note(text), chart, h.table("segments", columns, rows))

    def top(self, features: list, has_top: bool, flagged: int) -> str:
        title = "Top contributing features among flagged rows"
        if not has_top:
            return h.section("top-features-section", title, h.note("The scored table has no top features column (topFeatures = 0)."))
        if not flagged:
            return h.section("top-features-section", title, h.note("No row is flagged."))
        by_name: dict[str, list[int | float]] = {}
        for f in features:
            total = by_name.setdefault(f.feature, [0, 0, 0.0])
            total[0], total[1], total[2] = total[0] + f.rows, total[1] + f.first, total[2] + f.share_sum
        ranked = sorted(by_name.items(), key=lambda kv: (-kv[1][0], kv[0]))[:FEATURES_SHOWN]
        k = self.model.getOrDefault(self.model.topFeatures)
        chart = self.image(figures.top_features([n for n, _ in ranked], [v[0] for _, v in ranked], flagged), title, "top_features")
        rows = [
            {"_row": name, "feature": name, "rows": r, "share_of_flagged": r / flagged, "first": first, "mean_share": s / r}
            for name, (r, first, s) in ranked
        ]
        columns = [
            h.Column("feature", "feature", h.plain, text=True), h.Column("rows", "flagged rows with it", h.integer),
            h.Column("share_of_flagged", "of flagged rows", h.percent), h.Column("first", "as the largest", h.integer),
            h.Column("mean_share", "mean share of the row's error", h.percent),
        ]  # fmt: skip
        per_segment = self.top_by_segment(features)
        text = (
            f"Each flagged row lists its {k} features with the largest share of its squared reconstruction error "
            f"(top_features); counted in Spark over the {flagged:,} flagged rows, the {len(ranked)} most frequent shown."
        )
        return h.section("top-features-section", title, h.note(text), chart, h.table("top-features", columns, rows), per_segment)

    def top_by_segment(self, features: list) -> str:
        lines = []
        for seg in sorted({f.segment for f in features}):
            mine = sorted((f for f in features if f.segment == seg), key=lambda f: (-f.rows, f.feature))[:3]
            flagged = self.cells[(seg, None)].flagged
            lines.append(f"segment {seg}: " + ", ".join(f"{f.feature} ({100 * f.rows / flagged:.0f} %)" for f in mine))
        return h.note("Most frequent per segment (share of the segment's flagged rows): " + "; ".join(lines) + ".")
