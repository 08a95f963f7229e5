# Segmentation: tiles + pseudo-labels -> segmentation/; the fully supervised upper bound -> supervised/


rule train_segmentation:
    """Train the segmentation model on the pseudo-labels (and SAM object/boundary losses)."""
    input:
        unpack(stage_inputs("segmentation")),
    output:
        model="{root}/segmentation/model.pt",
        metrics="{root}/segmentation/metrics.json",
    params:
        cfg=stage_params("segmentation"),
        reads=stage_args("segmentation"),
        out=out_dir("segmentation"),
        threads=TRAIN_THREADS,
        supervised="",
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
    log:
        "{root}/logs/train_segmentation.log",
    benchmark:
        "{root}/benchmarks/train_segmentation.tsv"
    conda:
        GPU_ENV
    shell:
        'atsg train_segmentation {params.supervised} --params {params.cfg:q} --params "$ATSG_RUNTIME" '
        "--threads {params.threads} {params.reads} --out {params.out:q} --log {log:q}"


# The fully supervised upper bound: the same model trained on the ground truth.
use rule train_segmentation as train_supervised with:
    input:
        unpack(stage_inputs("supervised")),
    output:
        model="{root}/supervised/model.pt",
        metrics="{root}/supervised/metrics.json",
    params:
        cfg=stage_params("supervised"),
        reads=stage_args("supervised"),
        out=out_dir("supervised"),
        threads=TRAIN_THREADS,
        supervised="--supervised",
    log:
        "{root}/logs/train_supervised.log",
    benchmark:
        "{root}/benchmarks/train_supervised.tsv"


workflow.get_rule("train_supervised").docstring = (
    "Train the same segmentation model on the ground truth: the fully supervised upper bound."
)
