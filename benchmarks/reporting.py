"""The run description and the two result files that every benchmark writes.

A benchmark's figures only mean something next to the versions and the
machine that gave them, so each report starts with :func:`run_environment`,
and its markdown header with :func:`versions_text`. :func:`write_report`
writes ``OUT.json`` (the whole report, for tools and later comparisons) and
``OUT.md`` (the tables the README quotes). The benchmarks run as scripts
(``python benchmarks/NAME.py``), so they import this module by its name.
"""

from __future__ import annotations

import json
import os
import platform
import time

from segae_spark import __version__
from segae_spark.artifacts import dependency_versions


def run_environment() -> dict:
    """Date, segae-spark and dependency versions, and the machine: the first keys of every report."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "segae_spark": __version__,
        "versions": dependency_versions(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


def versions_text(report: dict) -> str:
    """``2026-11-30, segae-spark 0.1.0, pyspark 4.0.5, ...``: the start of a markdown header."""
    others = ", ".join(f"{name} {version}" for name, version in report["versions"].items() if name != "segae_spark")
    return f"{report['date']}, segae-spark {report['segae_spark']}, {others}"


def write_report(out: str, report: dict, markdown: str, summary: str = "") -> None:
    """Write ``out.json`` (``report``) and ``out.md`` (``markdown``), then say where, after ``summary``."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, default=str)
    with open(out + ".md", "w", encoding="utf-8") as fh:
        fh.write(markdown if markdown.endswith("\n") else markdown + "\n")
    print(f"{summary}written to {out}.json and {out}.md")
