# CAM extraction: tiles.zarr + classifier -> cams.zarr, in `shards.extract_cams` jobs:
# extract_cams_prepare (the empty store), extract_cams_shard (one per shard, one GPU each),
# extract_cams (checks every shard and moves the store into place).


def cams_inputs(wildcards):
    return {
        "tiles": artifact(wildcards, "tiles", "tiles.zarr"),
        "classifier": artifact(wildcards, "classifier", "classifier", "model.pt"),
    }


CAMS_ARGS = "--params {params.cfg:q} --params {RUNTIME:q} --tiles {input.tiles:q} --classifier {input.classifier:q} --out {params.out:q}"


rule extract_cams_prepare:
    input:
        unpack(cams_inputs),
    output:
        temp(directory(partial("{root}/cams.zarr"))),
    params:
        cfg=stage_params("cams"),
        out="{root}/cams.zarr",
    log:
        "{root}/logs/extract_cams_prepare.log",
    conda:
        CPU_ENV
    shell:
        "atsg extract_cams --prepare " + CAMS_ARGS + " --log {log:q}"


rule extract_cams_shard:
    input:
        unpack(cams_inputs),
        partial=partial("{root}/cams.zarr"),
    output:
        temp("{root}/shards/extract_cams/{shard}.json"),
    params:
        cfg=stage_params("cams"),
        out="{root}/cams.zarr",
        shard=shard_of("extract_cams"),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        "{root}/logs/extract_cams.shard{shard}.log",
    benchmark:
        "{root}/benchmarks/extract_cams.shard{shard}.tsv"
    conda:
        GPU_ENV
    shell:
        "atsg extract_cams --shard {params.shard} --marker {output:q} " + CAMS_ARGS + " "
        "--threads {STAGE_THREADS} --log {log:q}"


rule extract_cams:
    input:
        unpack(cams_inputs),
        partial=partial("{root}/cams.zarr"),
        markers=shard_markers("extract_cams"),
    output:
        directory("{root}/cams.zarr"),
    params:
        cfg=stage_params("cams"),
        out="{root}/cams.zarr",
    log:
        "{root}/logs/extract_cams.log",
    conda:
        CPU_ENV
    shell:
        "atsg extract_cams --finalise --markers {input.markers:q} " + CAMS_ARGS + " --log {log:q}"
