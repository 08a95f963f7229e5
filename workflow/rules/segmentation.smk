# Segmentation: tiles + pseudo-labels -> segmentation/; the fully supervised upper bound -> supervised/


def segmentation_inputs(wildcards):
    inputs = {
        "tiles": artifact(wildcards, "tiles", "tiles.zarr"),
        "labels": artifact(wildcards, "pseudo_labels", "pseudo_labels.zarr"),
    }
    if needs_masks(cfg_of(wildcards)):
        inputs["masks"] = artifact(wildcards, "masks", "masks.zarr")
    inputs.update(pretrain_input("segmentation")(wildcards))
    return inputs


rule train_segmentation:
    input:
        unpack(segmentation_inputs),
    output:
        model="{root}/segmentation/model.pt",
        metrics="{root}/segmentation/metrics.json",
    params:
        cfg=stage_params("segmentation"),
        out=out_dir("segmentation"),
        pretrain=pretrain_arg,
        masks=lambda wildcards, input: f"--masks '{input.masks}'" if "masks" in input.keys() else "",
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
        "atsg train_segmentation --params {params.cfg:q} --params {RUNTIME:q} --threads {TRAIN_THREADS} --tiles {input.tiles:q} "
        "--labels {input.labels:q} {params.masks} {params.pretrain} --out {params.out:q} --log {log:q}"


rule train_supervised:
    input:
        unpack(lambda wildcards: {"tiles": artifact(wildcards, "tiles", "tiles.zarr"),
                                  **pretrain_input("segmentation")(wildcards)}),
    output:
        model="{root}/supervised/model.pt",
        metrics="{root}/supervised/metrics.json",
    params:
        cfg=supervised_params,
        out=out_dir("supervised"),
        pretrain=pretrain_arg,
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
    log:
        "{root}/logs/train_supervised.log",
    benchmark:
        "{root}/benchmarks/train_supervised.tsv"
    conda:
        GPU_ENV
    shell:
        "atsg train_segmentation --supervised --params {params.cfg:q} --params {RUNTIME:q} --threads {TRAIN_THREADS} "
        "--tiles {input.tiles:q} {params.pretrain} --out {params.out:q} --log {log:q}"
