# Sharded stages, all from the one definition below. Each stage S runs as
#   S_prepare  (local)  checks its inputs and makes the hidden store or work folder,
#   S_shard    (`shards.S` jobs, one GPU each) shard k computes items k, k+n, ... and writes only those,
#   S          (local but map) checks every shard's marker and every item, then moves the result into place.
# extract_cams: tiles + classifier -> cams.zarr; generate_masks: tiles -> masks.zarr (SAM or superpixels);
# predict: tiles + segmentation model -> predictions.zarr + predictions/{scene}.tif (a shard takes whole scenes);
# map: the run's model + map.inputs -> results/{run}/maps/ (COGs, polygons; a shard takes output blocks). Map
# is not part of `all` unless map.inputs is set: `snakemake --cores N map` after a training run.

SHARDED = {
    "extract_cams": {
        "doc": "Extract multi-scale CAMs of every tile with the classifier",
        "where": "{root}",
        "inputs": stage_inputs("cams"),
        "cfg": stage_params("cams"),
        "args": store_args("cams", {"store": "{root}/cams.zarr"}),
        "outputs": {"store": "{root}/cams.zarr"},
        "work": {"store": partial("{root}/cams.zarr")},
    },
    "generate_masks": {
        "doc": "Generate class-agnostic object and boundary masks of every tile (SAM or superpixels)",
        "where": "{root}",
        "inputs": stage_inputs("masks"),
        "cfg": stage_params("masks"),
        "args": store_args("masks", {"store": "{root}/masks.zarr"}),
        "outputs": {"store": "{root}/masks.zarr"},
        "work": {"store": partial("{root}/masks.zarr")},
    },
    "predict": {
        "doc": "Predict every tile with the weakly supervised model; one GeoTIFF per scene",
        "where": "{root}",
        "inputs": stage_inputs("predictions"),
        "cfg": stage_params("predictions"),
        "args": store_args("predictions", {"store": "{root}/predictions.zarr", "geotiffs": "{root}/predictions"}),
        "outputs": {"store": "{root}/predictions.zarr", "geotiffs": "{root}/predictions"},
        "work": {"store": partial("{root}/predictions.zarr"), "geotiffs": partial("{root}/predictions")},
    },
    "map": {
        "doc": "Map the rasters of map.inputs with the run's model: COGs, probabilities, polygons",
        "where": str(RUN),
        "inputs": map_inputs,
        "cfg": lambda wildcards: section_json(config, "map"),
        "args": map_args,
        "outputs": {"maps": str(MAPS)},
        "work": {"work": str(MAPS_WORK)},
        "local_finalise": False,  # it writes the COGs and polygons: a job of its own on a cluster
    },
}

for stage, spec in SHARDED.items():
    where = spec["where"]

    rule:
        name:
            f"{stage}_prepare"
        input:
            unpack(spec["inputs"]),
        output:
            **{k: temp(directory(v)) for k, v in spec["work"].items()},
        params:
            stage=stage,
            cfg=spec["cfg"],
            args=spec["args"],
        log:
            f"{where}/logs/{stage}_prepare.log",
        localrule: True
        conda:
            CPU_ENV
        shell:
            'atsg {params.stage} --prepare --params {params.cfg:q} --params "$ATSG_RUNTIME" {params.args} '
            "--log {log:q}"

    rule:
        name:
            f"{stage}_shard"
        input:
            unpack(spec["inputs"]),
            **spec["work"],
        output:
            marker=temp(f"{where}/shards/{stage}/{{shard}}.json"),
        params:
            stage=stage,
            cfg=spec["cfg"],
            args=spec["args"],
            shard=shard_of(SHARDS[stage]),
            threads=STAGE_THREADS,
        threads: threads_of(stage)
        resources:
            gpu=gpus_of(stage),
        log:
            f"{where}/logs/{stage}.shard{{shard}}.log",
        benchmark:
            f"{where}/benchmarks/{stage}.shard{{shard}}.tsv"
        conda:
            GPU_ENV
        shell:
            "atsg {params.stage} --shard {params.shard} --marker {output.marker:q} --threads {params.threads} "
            '--params {params.cfg:q} --params "$ATSG_RUNTIME" {params.args} --log {log:q}'

    rule:
        name:
            stage
        input:
            unpack(spec["inputs"]),
            **spec["work"],
            markers=shard_markers(where, stage, SHARDS[stage]),
        output:
            **{k: directory(v) for k, v in spec["outputs"].items()},
        params:
            stage=stage,
            cfg=spec["cfg"],
            args=spec["args"],
        log:
            f"{where}/logs/{stage}.log",
        benchmark:
            f"{where}/benchmarks/{stage}.tsv"
        localrule: spec.get("local_finalise", True)
        conda:
            CPU_ENV
        shell:
            "atsg {params.stage} --finalise --markers {input.markers:q} --params {params.cfg:q} "
            '--params "$ATSG_RUNTIME" {params.args} --log {log:q}'

    for suffix, what in (("_prepare", "prepare"), ("_shard", "one shard of"), ("", "finalise")):
        workflow.get_rule(f"{stage}{suffix}").docstring = f"{spec['doc']} ({what} the sharded stage)."
