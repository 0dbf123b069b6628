"""Fetching published weights on a machine that is online (the optional download rule).

Nothing else in the pipeline touches the network: a backbone's weights are a file named in
the config with its SHA-256. When the config also gives a ``url``, the ``download_weights``
rule fetches it once, into ``resources/weights/``, and keeps it only if the checksum matches.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from neuroadapt.errors import InputError

__all__ = ["WEIGHTS_DIR", "download"]

WEIGHTS_DIR = "resources/weights"


def download(url: str, destination: str | Path, sha256: str, timeout_s: float = 60.0) -> Path:
    """Stream ``url`` to ``destination`` and check its SHA-256 on the way.

    The file appears under its name only when complete and matching; an unreachable URL or
    a mismatch leaves nothing behind and raises InputError naming the URL.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, staging = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    try:
        try:
            with (
                urllib.request.urlopen(url, timeout=timeout_s) as response,
                os.fdopen(handle, "wb") as out,
            ):
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as error:  # URLError and timeouts are OSErrors
            raise InputError(
                url,
                f"cannot be downloaded ({error})",
                "check the URL and the network, or download the file yourself and name it "
                "under weights without url",
            ) from None
        if digest.hexdigest().lower() != sha256.strip().lower():
            raise InputError(
                url,
                f"SHA-256 checksum mismatch (downloaded {digest.hexdigest()}, config expects "
                f"{sha256})",
                "correct the sha256 in the config, or the URL if it names another release",
            )
        os.chmod(staging, 0o644)
        shutil.move(staging, destination)
    finally:
        Path(staging).unlink(missing_ok=True)
    return destination
