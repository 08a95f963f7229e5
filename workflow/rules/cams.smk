# CAM extraction: tiles.zarr + classifier -> cams.zarr


rule extract_cams:
    input:
        tiles=lambda wildcards: artifact(wildcards, "tiles", "tiles.zarr"),
        classifier=lambda wildcards: artifact(wildcards, "classifier", "classifier", "model.pt"),
    output:
        directory("{root}/cams.zarr"),
    params:
        cfg=stage_params("cams"),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        "{root}/logs/extract_cams.log",
    benchmark:
        "{root}/benchmarks/extract_cams.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg extract_cams --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} "
        "--classifier {input.classifier:q} --out {output:q} --log {log:q}"
