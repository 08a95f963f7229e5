# Class-agnostic masks: tiles.zarr -> masks.zarr (object and boundary maps), in `shards.generate_masks` jobs:
# generate_masks_prepare, generate_masks_shard (one GPU each with SAM), generate_masks (finalise).


def masks_gpus(wildcards):
    return 1 if cfg_of(wildcards)["masks"]["generator"] == "sam" else 0


def masks_threads(wildcards):
    """SAM runs on torch (CPU threads when no GPU); superpixels on one core."""
    return STAGE_THREADS if masks_gpus(wildcards) else 1


MASKS_ARGS = "--params {params.cfg:q} --params {RUNTIME:q} --tiles {input.tiles:q} --out {params.out:q}"


rule generate_masks_prepare:
    input:
        tiles=lambda wildcards: artifact(wildcards, "tiles", "tiles.zarr"),
    output:
        temp(directory(partial("{root}/masks.zarr"))),
    params:
        cfg=stage_params("masks"),
        out="{root}/masks.zarr",
    log:
        "{root}/logs/generate_masks_prepare.log",
    conda:
        CPU_ENV
    shell:
        "atsg generate_masks --prepare " + MASKS_ARGS + " --log {log:q}"


rule generate_masks_shard:
    input:
        tiles=lambda wildcards: artifact(wildcards, "tiles", "tiles.zarr"),
        partial=partial("{root}/masks.zarr"),
    output:
        temp("{root}/shards/generate_masks/{shard}.json"),
    params:
        cfg=stage_params("masks"),
        out="{root}/masks.zarr",
        shard=shard_of("generate_masks"),
    threads: masks_threads
    resources:
        gpu=masks_gpus,
    log:
        "{root}/logs/generate_masks.shard{shard}.log",
    benchmark:
        "{root}/benchmarks/generate_masks.shard{shard}.tsv"
    conda:
        GPU_ENV
    shell:
        "atsg generate_masks --shard {params.shard} --marker {output:q} " + MASKS_ARGS + " "
        "--threads {STAGE_THREADS} --log {log:q}"


rule generate_masks:
    input:
        tiles=lambda wildcards: artifact(wildcards, "tiles", "tiles.zarr"),
        partial=partial("{root}/masks.zarr"),
        markers=shard_markers("generate_masks"),
    output:
        directory("{root}/masks.zarr"),
    params:
        cfg=stage_params("masks"),
        out="{root}/masks.zarr",
    log:
        "{root}/logs/generate_masks.log",
    conda:
        CPU_ENV
    shell:
        "atsg generate_masks --finalise --markers {input.markers:q} " + MASKS_ARGS + " --log {log:q}"
