# Pseudo-labels: tiles + cams + masks + classifier -> pseudo_labels.zarr


def refine_inputs(wildcards):
    inputs = {"tiles": artifact(wildcards, "tiles", "tiles.zarr"), "cams": artifact(wildcards, "cams", "cams.zarr")}
    cfg = cfg_of(wildcards)
    if cfg["refine"]["mask_voting"]:
        inputs["masks"] = artifact(wildcards, "masks", "masks.zarr")
    if cfg["refine"]["affinity"]:
        inputs["classifier"] = artifact(wildcards, "classifier", "classifier", "model.pt")
    return inputs


rule refine_labels:
    input:
        unpack(refine_inputs),
    output:
        directory("{root}/pseudo_labels.zarr"),
    params:
        cfg=stage_params("refine"),
        extra=lambda wildcards, input: " ".join(
            f"--{k} '{v}'" for k, v in input.items() if k in ("masks", "classifier")
        ),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        "{root}/logs/refine_labels.log",
    benchmark:
        "{root}/benchmarks/refine_labels.tsv"
    conda:
        GPU_ENV
    shell:
        "atsg refine_labels --params {params.cfg:q} --params {RUNTIME:q} --threads {STAGE_THREADS} --tiles {input.tiles:q} "
        "--cams {input.cams:q} {params.extra} --out {output:q} --log {log:q}"
