# Mapping new imagery: the run's trained model applied to the rasters of `map.inputs` -> results/{run}/maps/, in
# `shards.map` jobs over output blocks: map_prepare (checks the inputs, makes the work stores), map_shard (one
# per shard, one GPU each), map (checks every block of every input, writes the COGs and polygons).
# Not part of `all` unless map.inputs is set: `snakemake --cores N map` after a training run.
import shlex
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

from atsg.stages.map import find_inputs

MAP_RASTERS = [str(p) for p in find_inputs(config["map"]["inputs"])] if config["map"]["inputs"] else []


MAPS = RUN / "maps"
MAPS_WORK = RUN / ".maps.work"


def map_inputs(wildcards):
    """The run's model that `map.model` names, and the input rasters."""
    if not MAP_RASTERS:
        raise WorkflowError("map.inputs is empty: set it to the rasters to map (files, folders or globs) in a "
                            "--configfile or with --config, e.g. map='{inputs: [new/*.tif]}'")
    run = SimpleNamespace(root=str(RUN))
    if config["map"]["model"] == "supervised":
        model = artifact(run, "supervised", "supervised", "model.pt")
    else:
        model = weak_model(run)
    return {"model": model, "rasters": MAP_RASTERS}


# --redo: Snakemake decides what reruns, so every input is mapped again when the rule runs
MAP_ARGS = (
    "--params {params.cfg:q} --params {RUNTIME:q} --model {input.model:q} --out {MAPS:q} --work {MAPS_WORK:q} "
    "--redo " + " ".join(shlex.quote(p) for p in MAP_RASTERS)
)


rule map_prepare:
    input:
        unpack(map_inputs),
    output:
        temp(directory(MAPS_WORK)),
    params:
        cfg=stage_params("map"),
    log:
        LOGS / "map_prepare.log",
    conda:
        CPU_ENV
    shell:
        "atsg map --prepare " + MAP_ARGS + " --log {log:q}"


rule map_shard:
    input:
        unpack(map_inputs),
        work=MAPS_WORK,
    output:
        temp(RUN / "shards" / "map" / "{shard}.json"),
    params:
        cfg=stage_params("map"),
        shard=shard_of("map"),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        LOGS / "map.shard{shard}.log",
    benchmark:
        BENCH / "map.shard{shard}.tsv"
    conda:
        GPU_ENV
    shell:
        "atsg map --shard {params.shard} --marker {output:q} --threads {STAGE_THREADS} " + MAP_ARGS + " --log {log:q}"


rule map:
    input:
        unpack(map_inputs),
        work=MAPS_WORK,
        markers=[RUN / "shards" / "map" / f"{k}.json" for k in range(SHARDS["map"])],
    output:
        directory(MAPS),
    params:
        cfg=stage_params("map"),
    log:
        LOGS / "map.log",
    benchmark:
        BENCH / "map.tsv"
    conda:
        CPU_ENV
    shell:
        "atsg map --finalise --markers {input.markers:q} " + MAP_ARGS + " --log {log:q}"
