"""Rule download_weights: fetch a checkpoint named in the config, checking its SHA-256."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.download import download
from neuroadapt.logs import logged

with logged(snakemake.log) as log:
    download(snakemake.params.url, snakemake.output[0], snakemake.params.sha256)
    log.info("downloaded %s to %s (SHA-256 checked)", snakemake.params.url, snakemake.output[0])
