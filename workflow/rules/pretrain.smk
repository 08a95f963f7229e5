# Self-supervised pretraining: tiles.zarr (images of pretrain.splits, never labels) -> pretrain/
# Made only when a model reads it (classifier/segmentation weights: pretrain, classifier.linking.features: pretrain).


rule pretrain:
    """Self-supervised pretraining of the backbone on the tiles' images -> backbone.pt, teacher.pt."""
    input:
        unpack(stage_inputs("pretrain")),
    output:
        backbone="{root}/pretrain/backbone.pt",
        teacher="{root}/pretrain/teacher.pt",
        metrics="{root}/pretrain/metrics.json",
    params:
        cfg=stage_params("pretrain"),
        reads=stage_args("pretrain"),
        out=out_dir("pretrain"),
        threads=TRAIN_THREADS,
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
    log:
        "{root}/logs/pretrain.log",
    benchmark:
        "{root}/benchmarks/pretrain.tsv"
    conda:
        GPU_ENV
    shell:
        'atsg pretrain --params {params.cfg:q} --params "$ATSG_RUNTIME" --threads {params.threads} {params.reads} '
        "--out {params.out:q} --log {log:q}"
