# Prediction: tiles + segmentation model -> predictions.zarr + predictions/{scene}.tif


def weak_model(wildcards):
    """The weakly supervised segmentation model: its own stage's, or in paper mode the classifier stage's."""
    if joint(cfg_of(wildcards)):
        return artifact(wildcards, "classifier", "classifier", "segmenter.pt")
    return artifact(wildcards, "segmentation", "segmentation", "model.pt")


rule predict:
    input:
        tiles=lambda wildcards: artifact(wildcards, "tiles", "tiles.zarr"),
        model=weak_model,
    output:
        store=directory("{root}/predictions.zarr"),
        geotiffs=directory("{root}/predictions"),
    params:
        cfg=stage_params("predict"),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        "{root}/logs/predict.log",
    benchmark:
        "{root}/benchmarks/predict.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg predict --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} --model {input.model:q} "
        "--out {output.store:q} --geotiffs {output.geotiffs:q} --log {log:q}"


rule predict_supervised:
    input:
        tiles=lambda wildcards: artifact(wildcards, "tiles", "tiles.zarr"),
        model=lambda wildcards: artifact(wildcards, "supervised", "supervised", "model.pt"),
    output:
        directory("{root}/supervised_predictions.zarr"),
    params:
        cfg=stage_params("predict"),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        "{root}/logs/predict_supervised.log",
    benchmark:
        "{root}/benchmarks/predict_supervised.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg predict --no-geotiffs --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} "
        "--model {input.model:q} --out {output:q} --log {log:q}"
