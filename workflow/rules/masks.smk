# Class-agnostic masks: tiles.zarr -> masks.zarr (object and boundary maps)


rule generate_masks:
    input:
        tiles=RUN / "tiles.zarr",
    output:
        directory(RUN / "masks.zarr"),
    params:
        cfg=stage_params("masks"),
    threads: 1
    resources:
        gpu=1 if config["masks"]["generator"] == "sam" else 0,
    log:
        LOGS / "generate_masks.log",
    benchmark:
        BENCH / "generate_masks.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg generate_masks --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} "
        "--out {output:q} --log {log:q}"
