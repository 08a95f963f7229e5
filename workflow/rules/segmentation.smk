# Segmentation: tiles + pseudo-labels -> segmentation/; the fully supervised upper bound -> supervised/


def segmentation_inputs(wildcards):
    inputs = {"tiles": RUN / "tiles.zarr", "labels": RUN / "pseudo_labels.zarr"}
    s = config["segmentation"]
    if s["object_loss"]["enabled"] or s["boundary_loss"]["enabled"]:
        inputs["masks"] = RUN / "masks.zarr"
    return inputs


rule train_segmentation:
    input:
        unpack(segmentation_inputs),
    output:
        model=RUN / "segmentation" / "model.pt",
        metrics=RUN / "segmentation" / "metrics.json",
    params:
        cfg=stage_params("segmentation"),
        masks=lambda wildcards, input: f"--masks '{input.masks}'" if "masks" in input.keys() else "",
    threads: TRAIN_THREADS
    resources:
        gpu=1,
    log:
        LOGS / "train_segmentation.log",
    benchmark:
        BENCH / "train_segmentation.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg train_segmentation --params {params.cfg:q} --threads {threads} --tiles {input.tiles:q} "
        "--labels {input.labels:q} {params.masks} --out {RUN}/segmentation --log {log:q}"


rule train_supervised:
    input:
        tiles=RUN / "tiles.zarr",
    output:
        model=RUN / "supervised" / "model.pt",
        metrics=RUN / "supervised" / "metrics.json",
    params:
        cfg=supervised_params,
    threads: TRAIN_THREADS
    resources:
        gpu=1,
    log:
        LOGS / "train_supervised.log",
    benchmark:
        BENCH / "train_supervised.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg train_segmentation --supervised --params {params.cfg:q} --threads {threads} "
        "--tiles {input.tiles:q} --out {RUN}/supervised --log {log:q}"
