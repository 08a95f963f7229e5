# CAM extraction: tiles.zarr + classifier -> cams.zarr


rule extract_cams:
    input:
        tiles=RUN / "tiles.zarr",
        classifier=RUN / "classifier" / "model.pt",
    output:
        directory(RUN / "cams.zarr"),
    params:
        cfg=stage_params("cams"),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        LOGS / "extract_cams.log",
    benchmark:
        BENCH / "extract_cams.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg extract_cams --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} "
        "--classifier {input.classifier:q} --out {output:q} --log {log:q}"
