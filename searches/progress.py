"""Progress bars that show on a terminal and stay quiet in CI logs and pipes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def interactive() -> bool:
    """True when a person is watching: stderr is a terminal and no CI variable is set."""
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def progress_bar(*extra_columns: TextColumn) -> Iterator[Progress]:
    """A rich progress display (done/total, elapsed, ETA), disabled when not interactive."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not interactive(),
        transient=False,
    )
    with progress:
        yield progress


def track(items: Iterable[T], *, description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on a terminal, silently otherwise."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar() as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
