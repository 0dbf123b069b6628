"""Logging for Snakemake scripts: to the rule's log file and to stderr."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def logged(log_paths, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send log records to the rule's ``log:`` file (and stderr) while the block runs;
    an exception is written to the log before it propagates, so the log says why a job
    failed."""
    root = logging.getLogger()
    root.setLevel(level)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    for path in list(log_paths)[:1]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("")
        # appending: the processes of a data-parallel train job write to the same file
        handlers.append(logging.FileHandler(path, mode="a"))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    try:
        yield logging.getLogger("neuroadapt")
    except Exception as error:
        logging.getLogger("neuroadapt").error("%s: %s", type(error).__name__, error)
        raise
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
