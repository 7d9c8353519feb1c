"""Which copy of Lamppost a benchmark measures.

A benchmark imports ``campaign``, ``searches`` and ``theory`` from wherever Python finds them
first. After a non-editable ``pip install .`` (what ``.ci/run`` does) that is site-packages,
not the working tree, and a before/after comparison can silently time the same code twice.
Every benchmark prints this line first, so a table in RESULTS.md says what it measured.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def code_under_test() -> str:
    """``code: <working tree at commit[-dirty] | installed copy> <path> (lamppost <version>)``."""
    import theory

    root = Path(theory.__file__).resolve().parent.parent
    try:
        version = metadata.version("lamppost")
    except metadata.PackageNotFoundError:
        version = "not installed"
    source = f"installed copy {root}"
    if (root / ".git").exists():
        try:
            described = subprocess.run(
                ["git", "-C", str(root), "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            described = None
        if described is not None and described.returncode == 0:
            source = f"working tree {root} at {described.stdout.strip()}"
        else:
            source = f"working tree {root} (git could not describe it)"
    return f"code: {source} (lamppost {version})"


def machine() -> str:
    """``<cpu>, <n> CPUs, torch threads <t>, Python <version>``: the line beside every table."""
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, Python {platform.python_version()}"
    )
