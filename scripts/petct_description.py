"""Rule petct_description: dataset_description.json of a dataset's neuroadapt derivatives."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package, also in conda envs

from neuroadapt.logs import logged
from neuroadapt.petct.outputs import write_description

with logged(snakemake.log):
    write_description(snakemake.output[0], snakemake.wildcards.dataset)
