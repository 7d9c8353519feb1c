"""Where the shared real-data inputs live (``$LAMPPOST_DATA`` or a ``shared/data`` nearby).

Nothing is downloaded: real inputs are read in place, and callers decide what to do when they
are absent (tests skip with the reason returned by :func:`missing_reason`).
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "LAMPPOST_DATA"


def shared_data_dir() -> Path | None:
    """The shared data folder: ``$LAMPPOST_DATA``, else ``../shared/data`` from here upwards."""
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_dir() else None
    for base in (Path.cwd(), *Path.cwd().parents):
        for candidate in (base / "shared" / "data", base.parent / "shared" / "data"):
            if candidate.is_dir():
                return candidate
    return None


def missing_reason() -> str:
    """Why :func:`shared_data_dir` found nothing, for skip messages and errors."""
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    if configured:
        return f"${ENVIRONMENT_VARIABLE}={configured} is not a directory"
    return f"no shared/data folder beside the checkout and ${ENVIRONMENT_VARIABLE} is not set"
