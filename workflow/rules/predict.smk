# Prediction: tiles + segmentation model -> predictions.zarr + predictions/{scene}.tif


rule predict:
    input:
        tiles=RUN / "tiles.zarr",
        model=RUN / "segmentation" / "model.pt",
    output:
        store=directory(RUN / "predictions.zarr"),
        geotiffs=directory(RUN / "predictions"),
    params:
        cfg=stage_params("predict"),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        LOGS / "predict.log",
    benchmark:
        BENCH / "predict.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg predict --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} --model {input.model:q} "
        "--out {output.store:q} --geotiffs {output.geotiffs:q} --log {log:q}"


rule predict_supervised:
    input:
        tiles=RUN / "tiles.zarr",
        model=RUN / "supervised" / "model.pt",
    output:
        directory(RUN / "supervised_predictions.zarr"),
    params:
        cfg=stage_params("predict"),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        LOGS / "predict_supervised.log",
    benchmark:
        BENCH / "predict_supervised.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg predict --no-geotiffs --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} "
        "--model {input.model:q} --out {output:q} --log {log:q}"
