# atsg: weakly supervised segmentation of aerial imagery (ATSG) as a staged workflow.
# Index only: the rules live in workflow/rules/, the logic in the atsg package.
from snakemake.utils import min_version

min_version("9.0")


from atsg.config import DEMO_CONFIG, validate_config

# One layering for snakemake and atsg: schema defaults (the published settings) < --configfile files in order
# < --config. The demo (config/config.yaml) is a preset like the others, used only when no file is given.
if not workflow.overwrite_configfiles:

    configfile: DEMO_CONFIG


validate_config(config)  # fills schema defaults; a bad key or value stops here with one line


include: "workflow/rules/common.smk"
include: "workflow/rules/tiling.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/sharded.smk"
include: "workflow/rules/refine.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/evaluate.smk"


# snakemake --report opens on the run's page (rule report): what ran, the mIoU table, then the figures.
report: report_page()


# Cheap bookkeeping jobs (every sharded stage's prepare and finalise too) run in the Snakemake process itself
# (on a cluster: never queued).
localrules:
    all,
    report,


rule all:
    """Everything up to the evaluation (and the maps, when map.inputs is set)."""
    input:
        every_output(),
        REPORT_FILES,
        [MAPS] if MAP_RASTERS else [],
    default_target: True
