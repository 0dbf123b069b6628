"""Dataset-level files of the BIDS-derivatives dataset the ``petct`` rules write."""

from __future__ import annotations

import json

from neuroadapt import __version__
from neuroadapt.io import atomic_write_text


def write_description(path: str, dataset: str) -> None:
    """``dataset_description.json`` (BIDS derivatives, GeneratedBy neuroadapt)."""
    description = {
        "Name": f"neuroadapt derivatives of {dataset}",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "neuroadapt", "Version": __version__}],
    }
    atomic_write_text(path, json.dumps(description, indent=2) + "\n")
