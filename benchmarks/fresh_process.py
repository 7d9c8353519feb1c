"""Run one benchmark configuration in a fresh interpreter, so its peak memory is its own.

``ru_maxrss`` is a high-water mark of the whole process: measured in the driver, every row
after the largest would report the largest. A benchmark therefore re-runs its own script with
``--one SPEC`` (a JSON object), the child measures and prints one JSON row as its last line of
standard output, and the driver collects the rows.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports ``ru_maxrss`` in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_fresh(
    script: str, spec: dict[str, Any], *, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``script --one <spec as JSON>`` in a new interpreter and return its last JSON line.

    ``env`` adds to (or overrides) this process's environment. A failing child raises
    :class:`subprocess.CalledProcessError` with its standard error attached.
    """
    done = subprocess.run(
        [sys.executable, script, "--one", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])
