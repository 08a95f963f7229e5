# Prediction: tiles + segmentation model -> predictions.zarr + predictions/{scene}.tif, in `shards.predict`
# jobs (a shard takes whole scenes): predict_prepare, predict_shard (one GPU each), predict (finalise).


def weak_model(wildcards):
    """The weakly supervised segmentation model: its own stage's, or in paper mode the classifier stage's."""
    if joint(cfg_of(wildcards)):
        return artifact(wildcards, "classifier", "classifier", "segmenter.pt")
    return artifact(wildcards, "segmentation", "segmentation", "model.pt")


def predict_inputs(wildcards):
    return {"tiles": artifact(wildcards, "tiles", "tiles.zarr"), "model": weak_model(wildcards)}


PREDICT_ARGS = (
    "--params {params.cfg:q} --params {RUNTIME:q} --tiles {input.tiles:q} --model {input.model:q} --out {params.out:q} "
    "--geotiffs {params.geotiffs:q}"
)


rule predict_prepare:
    input:
        unpack(predict_inputs),
    output:
        store=temp(directory(partial("{root}/predictions.zarr"))),
        geotiffs=temp(directory(partial("{root}/predictions"))),
    params:
        cfg=stage_params("predict"),
        out="{root}/predictions.zarr",
        geotiffs="{root}/predictions",
    log:
        "{root}/logs/predict_prepare.log",
    conda:
        CPU_ENV
    shell:
        "atsg predict --prepare " + PREDICT_ARGS + " --log {log:q}"


rule predict_shard:
    input:
        unpack(predict_inputs),
        store=partial("{root}/predictions.zarr"),
        geotiffs=partial("{root}/predictions"),
    output:
        temp("{root}/shards/predict/{shard}.json"),
    params:
        cfg=stage_params("predict"),
        out="{root}/predictions.zarr",
        geotiffs="{root}/predictions",
        shard=shard_of("predict"),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        "{root}/logs/predict.shard{shard}.log",
    benchmark:
        "{root}/benchmarks/predict.shard{shard}.tsv"
    conda:
        GPU_ENV
    shell:
        "atsg predict --shard {params.shard} --marker {output:q} " + PREDICT_ARGS + " "
        "--threads {STAGE_THREADS} --log {log:q}"


rule predict:
    input:
        unpack(predict_inputs),
        store=partial("{root}/predictions.zarr"),
        geotiffs=partial("{root}/predictions"),
        markers=shard_markers("predict"),
    output:
        store=directory("{root}/predictions.zarr"),
        geotiffs=directory("{root}/predictions"),
    params:
        cfg=stage_params("predict"),
        out="{root}/predictions.zarr",
        geotiffs="{root}/predictions",
    log:
        "{root}/logs/predict.log",
    conda:
        CPU_ENV
    shell:
        "atsg predict --finalise --markers {input.markers:q} " + PREDICT_ARGS + " --log {log:q}"


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
        GPU_ENV
    shell:
        "atsg predict --no-geotiffs --params {params.cfg:q} --params {RUNTIME:q} --threads {STAGE_THREADS} "
        "--tiles {input.tiles:q} --model {input.model:q} --out {output:q} --log {log:q}"
