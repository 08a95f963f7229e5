# Self-supervised pretraining: tiles.zarr (images of pretrain.splits, never labels) -> pretrain/
# Made only when a model reads it (classifier/segmentation weights: pretrain, classifier.linking.features: pretrain).


def pretrain_input(section):
    """The pretrain stage's backbone file, when `section` reads it (an input function)."""

    def inputs(wildcards):
        if uses_pretrain(cfg_of(wildcards), section):
            return {"pretrain": artifact(wildcards, "pretrain", "pretrain", "backbone.pt")}
        return {}

    return inputs


def pretrain_arg(wildcards, input):
    """`--pretrain DIR` of a training rule that reads the pretrain stage, else nothing."""
    return f"--pretrain '{Path(input.pretrain).parent}'" if "pretrain" in input.keys() else ""


rule pretrain:
    input:
        tiles=lambda wildcards: artifact(wildcards, "tiles", "tiles.zarr"),
    output:
        backbone="{root}/pretrain/backbone.pt",
        teacher="{root}/pretrain/teacher.pt",
        metrics="{root}/pretrain/metrics.json",
    params:
        cfg=stage_params("pretrain"),
        out=out_dir("pretrain"),
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
    log:
        "{root}/logs/pretrain.log",
    benchmark:
        "{root}/benchmarks/pretrain.tsv"
    conda:
        GPU_ENV
    shell:
        "atsg pretrain --params {params.cfg:q} --params {RUNTIME:q} --threads {TRAIN_THREADS} --tiles {input.tiles:q} "
        "--out {params.out:q} --log {log:q}"
