"""neuroadapt: from BIDS to reports comparing parameter-efficient adaptation of 3D models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neuroadapt")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

CODE_URL = "https://github.com/neuroadapt/neuroadapt"
