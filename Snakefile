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
include: "workflow/rules/classifier.smk"
include: "workflow/rules/cams.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/refine.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/evaluate.smk"


# Cheap bookkeeping jobs run in the Snakemake process itself (on a cluster: never queued).
localrules:
    all,
    extract_cams_prepare,
    extract_cams,
    generate_masks_prepare,
    generate_masks,
    predict_prepare,
    predict,


rule all:
    input:
        RUN / "eval" / "metrics.json",
        RUN / "eval" / "report.md",
        RUN / "predictions",
    default_target: True
