"""The HTML report: one self-contained file whose tables are evaluate()'s and whose images all load."""

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from segae_spark.cli import main
from segae_spark.errors import SchemaError
from segae_spark.report import write_report

LABEL = "is_fraud"
SEGMENTS = 3  # the fitted_model fixture's nClusters


class _Page(HTMLParser):
    """The images, every src / href, and the tables' cells: {table id: {data-row: {data-key: data-value}}}."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.links, self.tables = [], [], {}
        self._table = self._row = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [a[k] for k in ("src", "href") if k in a]
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._table = self.tables.setdefault(a["id"], {})
        elif tag == "tr" and self._table is not None and "data-row" in a:
            self._row = self._table.setdefault(a["data-row"], {})
        elif tag == "td" and self._row is not None:
            self._row[a["data-key"]] = a["data-value"]

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = self._row = None

    def figures(self, kind: str) -> list[dict]:
        return [i for i in self.images if i["data-figure"] == kind]


@pytest.fixture(scope="module")
def labelled_report(fitted_model, transactions, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    report = write_report(fitted_model, transactions, str(out), label_col=LABEL, input_name="transactions")
    return out, report


def test_report_is_one_self_contained_file_with_every_figure(labelled_report):
    out, report = labelled_report
    text = out.read_text(encoding="utf-8")
    page = _Page(text)
    assert page.links and all(link.startswith("data:image/png;base64,") for link in page.links)
    assert 'src="http' not in text and "<link" not in text and "<script" not in text and "url(" not in text
    expected = {"histogram": SEGMENTS, "box": SEGMENTS + 1, "roc": 1, "pr": 1, "sizes": 1, "top_features": 1}
    assert {kind: len(page.figures(kind)) for kind in expected} == expected == report.images
    assert len(page.images) == sum(expected.values())
    assert sorted(int(i["data-segment"]) for i in page.figures("histogram")) == list(range(SEGMENTS))
    assert report.rows == 6000 and report.segments == SEGMENTS


def _same(cell: str, value) -> bool:
    if value is None:
        return cell == ""
    if isinstance(value, int):
        return int(cell) == value
    return float(cell) == pytest.approx(value, rel=1e-12, abs=1e-15)


def test_report_tables_hold_the_metrics_of_evaluation(labelled_report, fitted_model, transactions):
    out, _ = labelled_report
    tables = _Page(out.read_text(encoding="utf-8")).tables
    metrics = fitted_model.evaluation(transactions, LABEL)
    keys = ("rows", "tp", "fp", "fn", "tn", "precision", "recall", "f1", "accuracy", "roc_auc", "pr_auc")
    expected = {"all": metrics["global"], **{str(s["segment"]): s for s in metrics["segments"]}}
    assert set(tables["metrics"]) == set(expected)
    for row, values in expected.items():
        cells = tables["metrics"][row]
        assert all(_same(cells[k], values[k]) for k in keys), (row, cells, values)
    for seg in metrics["segments"]:
        assert _same(tables["metrics"][str(seg["segment"])]["threshold"], seg["threshold"])

    segments = tables["segments"]
    assert {int(r): int(c["train_rows"]) for r, c in segments.items()} == {s["segment"]: s["rows"] for s in fitted_model.segment_summary()}
    assert sum(int(c["rows"]) for c in segments.values()) == 6000
    assert sum(int(c["flagged"]) for c in segments.values()) == metrics["global"]["tp"] + metrics["global"]["fp"]
    top = tables["top-features"]
    assert top and all(0 < int(c["rows"]) <= metrics["global"]["tp"] + metrics["global"]["fp"] for c in top.values())


def test_report_without_label_compares_flagged_rows(saved_model_dir, transactions, tmp_path, capsys):
    source, out = str(tmp_path / "unlabelled"), tmp_path / "out" / "report.html"
    transactions.drop(LABEL).write.parquet(source)
    assert main(["report", "--model-dir", saved_model_dir, "--input", source, "--out", str(out)]) == 0
    assert "report written to" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    page = _Page(text)
    assert not page.figures("roc") and not page.figures("pr") and "metrics" not in page.tables
    assert "No label column was given" in text
    assert len(page.figures("histogram")) == SEGMENTS and len(page.figures("box")) == SEGMENTS + 1
    assert "flagged" in text and "not flagged" in text


def test_an_unknown_label_column_is_refused_by_name(fitted_model, saved_model_dir, transactions, tmp_path, capsys):
    out = tmp_path / "report.html"
    with pytest.raises(SchemaError, match="label column 'is_fruad' is not a column of the input"):
        write_report(fitted_model, transactions, str(out), label_col="is_fruad")
    assert not out.exists()
    source = str(tmp_path / "tx")
    transactions.limit(10).write.parquet(source)
    args = ["report", "--quiet", "--model-dir", saved_model_dir, "--input", source, "--label-col", "is_fruad", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is_fruad" in err[-1]


_IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var out = document.createElement("pre");
  out.id = "img-check";
  out.textContent = loaded + "/" + images.length;
  document.body.appendChild(out);
});
</script>
"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    message = "chromium is not installed: `make browser` (or `apt-get install chromium`) installs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_every_image_loads_in_headless_chromium(labelled_report, tmp_path):
    chromium = _chromium()
    out, report = labelled_report
    checked = tmp_path / "checked.html"
    checked.write_text(out.read_text(encoding="utf-8").replace("</body>", _IMAGE_CHECK + "</body>"), encoding="utf-8")
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", checked.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="img-check">(\d+)/(\d+)</pre>', result.stdout)
    assert found, f"no image check in chromium's DOM (exit {result.returncode}): {result.stderr[-2000:]}"
    loaded, total = int(found.group(1)), int(found.group(2))
    assert total == sum(report.images.values()) and loaded == total
