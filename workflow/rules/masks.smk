# Class-agnostic masks: tiles.zarr -> masks.zarr (object and boundary maps)


rule generate_masks:
    input:
        tiles=lambda wildcards: artifact(wildcards, "tiles", "tiles.zarr"),
    output:
        directory("{root}/masks.zarr"),
    params:
        cfg=stage_params("masks"),
    threads: 1
    resources:
        gpu=lambda wildcards: 1 if cfg_of(wildcards)["masks"]["generator"] == "sam" else 0,
    log:
        "{root}/logs/generate_masks.log",
    benchmark:
        "{root}/benchmarks/generate_masks.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg generate_masks --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} "
        "--out {output:q} --log {log:q}"
