"""A trace file's rows as arrays (``TraceRows``), shared by every trace reader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workloads.errors import WorkloadError


@dataclass(frozen=True)
class TraceRows:
    """A trace file's rows in file order: line numbers, times (ns on the trace's own clock),
    prompt and output tokens, and (Mooncake) each prompt's prefix-block hash ids."""

    path: Path
    format: str
    line: np.ndarray
    time_ns: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.line)


def open_trace(path: str | Path) -> Any:
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise WorkloadError(f"workload.arrivals.path: cannot read {path}: "
                            f"{exc.strerror or exc}") from None




__all__ = ["TraceRows", "open_trace"]
