# CAM classifier: tiles.zarr (train split, image-level labels) -> classifier/


rule train_classifier:
    input:
        tiles=RUN / "tiles.zarr",
    output:
        model=RUN / "classifier" / "model.pt",
        metrics=RUN / "classifier" / "metrics.json",
    params:
        cfg=stage_params("classifier"),
    threads: TRAIN_THREADS
    resources:
        gpu=1,
    log:
        LOGS / "train_classifier.log",
    benchmark:
        BENCH / "train_classifier.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg train_classifier --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} "
        "--out {RUN}/classifier --log {log:q}"
