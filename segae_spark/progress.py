"""Progress logging for long work: stage, rows, items done / total, elapsed.

The library logs through the standard ``logging`` module under the
``segae_spark`` logger and never prints progress bars; the CLI decides what
reaches the terminal.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator

logger = logging.getLogger("segae_spark")


@contextmanager
def stage(name: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Log the start and end of a named stage; record its seconds in ``timings``."""
    logger.info("%s: started", name)
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        if timings is not None:
            timings[name] = round(timings.get(name, 0.0) + elapsed, 3)
        logger.info("%s: done in %.1fs", name, elapsed)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the library's log records to stderr as one short line each."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
