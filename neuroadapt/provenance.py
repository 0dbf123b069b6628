"""What a result was made with: package versions and the code's git commit."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

__all__ = ["git_commit", "package_versions"]


def package_versions(distributions: Iterable[str]) -> dict[str, str]:
    """Installed version of each distribution (``"not installed"`` when absent), and Python's."""
    found = {"python": platform.python_version()}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit(directory: str | Path) -> dict[str, str | bool]:
    """``{"commit": <sha>, "dirty": <uncommitted changes>}`` of the git checkout holding
    ``directory``; commit ``"unknown"`` outside a checkout or without git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": False}
    return {"commit": commit, "dirty": dirty}
