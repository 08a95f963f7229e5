# Pseudo-labels: tiles + cams + masks + classifier -> pseudo_labels.zarr


def refine_inputs(wildcards):
    inputs = {"tiles": RUN / "tiles.zarr", "cams": RUN / "cams.zarr"}
    if config["refine"]["mask_voting"]:
        inputs["masks"] = RUN / "masks.zarr"
    if config["refine"]["affinity"]:
        inputs["classifier"] = RUN / "classifier" / "model.pt"
    return inputs


rule refine_labels:
    input:
        unpack(refine_inputs),
    output:
        directory(RUN / "pseudo_labels.zarr"),
    params:
        cfg=stage_params("refine"),
        extra=lambda wildcards, input: " ".join(
            f"--{k} '{v}'" for k, v in input.items() if k in ("masks", "classifier")
        ),
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        LOGS / "refine_labels.log",
    benchmark:
        BENCH / "refine_labels.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg refine_labels --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} "
        "--cams {input.cams:q} {params.extra} --out {output:q} --log {log:q}"
