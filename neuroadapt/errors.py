"""Errors that tell the user which file is wrong, what is wrong with it and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike


class NeuroadaptError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class InputError(NeuroadaptError):
    """Bad input data: names the file, the problem and the fix.

    The message reads ``<file>: <problem>. Fix: <fix>`` so that a user scanning a
    Snakemake log finds all three on one line; ``details`` (one item per affected file or
    subject) follow on their own lines.
    """

    def __init__(
        self, path: str | PathLike | None, problem: str, fix: str, details: Sequence[str] = ()
    ):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        self.details = list(details)
        where = f"{self.path}: " if self.path else ""
        listing = "".join(f"\n  {item}" for item in self.details)
        super().__init__(f"{where}{problem}. Fix: {fix}{listing}")

    def __reduce__(self):  # picklable: raised in worker processes, re-raised here
        return (type(self), (self.path, self.problem, self.fix, self.details))


class ConfigError(NeuroadaptError):
    """An invalid configuration: names the key, the problem and the fix."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(f"config key '{key}': {problem}. Fix: {fix}")

    def __reduce__(self):
        return (type(self), (self.key, self.problem, self.fix))
