"""Helpers the benchmark scripts share; a script imports this as a sibling (``from _common import
percentile``): the script's own folder is on ``sys.path`` when it runs as ``python benchmarks/x.py``."""

from __future__ import annotations

import socket
import sys

import numpy as np


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0 <= q <= 1) by linear interpolation between the closest ranks, numpy's
    default; NaN for no values."""
    return float(np.percentile(values, 100 * q)) if len(values) else float("nan")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def print_epochs(stage: str, advance: int, total: int) -> None:
    """An index-build progress callback that prints the sequential model's epoch lines to stderr."""
    if stage.startswith("sequential model |"):
        print(stage.partition(" | ")[2], file=sys.stderr, flush=True)
