# atsg: weakly supervised segmentation of aerial imagery (ATSG) as a staged workflow.
# Index only: the rules live in workflow/rules/, the logic in the atsg package.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


configfile: Path(workflow.basedir) / "config" / "config.yaml"


from atsg.config import validate_config

validate_config(config)  # fills schema defaults; a bad key or value stops here with one line


include: "workflow/rules/common.smk"
include: "workflow/rules/tiling.smk"


rule all:
    input:
        RUN / "tiles.zarr",
    default_target: True
