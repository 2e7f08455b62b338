"""What a dataset check found: errors (the stage fails) and warnings (reported), each kind with examples.

Problems are collected, not raised one by one, so one report names every kind of fault at once.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from npuflow.datasets.imageheader import ImageHeaderError, image_size

MAX_EXAMPLES = 5
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Findings:
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    warnings: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, Any] = field(default_factory=dict)

    def error(self, kind: str, example: str) -> None:
        self.errors[kind].append(example)

    def warn(self, kind: str, example: str) -> None:
        self.warnings[kind].append(example)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        def summary(found: dict[str, list[str]]) -> dict[str, Any]:
            return {k: {"count": len(v), "examples": v[:MAX_EXAMPLES]} for k, v in sorted(found.items())}

        return {"ok": self.ok, "counts": self.counts, "errors": summary(self.errors),
                "warnings": summary(self.warnings)}

    def describe(self) -> str:
        if self.ok:
            return "clean"
        return "; ".join(f"{k} x{len(v)} (e.g. {v[0]})" for k, v in sorted(self.errors.items()))


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parallel_map(fn: Callable[[T], R], items: Iterable[T], threads: int | None = None) -> Iterator[R]:
    """``map`` over a thread pool, for work that releases the GIL (PNG decoding). Not for header reads: those
    are GIL-bound and run 5x slower on a pool than serially (bench/image_headers.py)."""
    items = list(items)
    if len(items) < 256:
        return map(fn, items)
    pool = ThreadPoolExecutor(max_workers=threads or min(16, 4 * (os.cpu_count() or 1)))
    try:
        return iter(list(pool.map(fn, items, chunksize=64)))
    finally:
        pool.shutdown()


def header_or_problem(path: Path) -> tuple[int, int] | tuple[str, str]:
    """(width, height) from the file header, or (problem kind, example) when it cannot be read."""
    try:
        return image_size(path)
    except FileNotFoundError:
        return "missing_image_file", str(path)
    except (OSError, ImageHeaderError) as exc:
        return "unreadable_image", f"{path}: {exc}"


def check_count(found: Findings, what: str, split: str, got: int, expected: int | None) -> None:
    if expected is not None and got != expected:
        found.error(f"{what}_count_mismatch", f"{split}: {got} {what}(s), the spec expects {expected}")
