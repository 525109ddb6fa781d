"""Progress logging for long work: stage, rows, items done / total, elapsed.

The library logs through the standard ``logging`` module under the
``segae_spark`` logger and never prints progress bars; the CLI decides what
reaches the terminal.
"""

from __future__ import annotations

import logging
import sys
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


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    A handler bound to the stream of the moment would keep writing to a
    replaced (and possibly closed) stream after a redirect or test capture.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """Send the library's log records to stderr as one short line each."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
