"""Rule derivatives_description: dataset_description.json of a dataset's neuroadapt
derivatives (shared by the dwi and petct stages)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.derivatives import write_description
from neuroadapt.logs import logged

with logged(snakemake.log):
    write_description(snakemake.output[0], snakemake.wildcards.dataset)
