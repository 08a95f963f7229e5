# CAM classifier: tiles.zarr (train split, image-level labels) -> classifier/
# Paper mode (classifier.joint_segmentation): the same stage also trains the segmentation decoders
# -> classifier/segmenter.pt, which predict then uses; its roots go to train_classifier_joint.


rule train_classifier:
    """Train the CAM classifier on image-level labels (ATSG: adaptive token linking, PTC, CTC)."""
    input:
        unpack(stage_inputs("classifier")),
    output:
        model="{root}/classifier/model.pt",
        metrics="{root}/classifier/metrics.json",
    wildcard_constraints:
        root=roots_where(False),
    params:
        cfg=stage_params("classifier"),
        reads=stage_args("classifier"),
        out=out_dir("classifier"),
        threads=TRAIN_THREADS,
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
    log:
        "{root}/logs/train_classifier.log",
    benchmark:
        "{root}/benchmarks/train_classifier.tsv"
    conda:
        GPU_ENV
    shell:
        'atsg train_classifier --params {params.cfg:q} --params "$ATSG_RUNTIME" --threads {params.threads} '
        "{params.reads} --out {params.out:q} --log {log:q}"


use rule train_classifier as train_classifier_joint with:
    output:
        model="{root}/classifier/model.pt",
        segmenter="{root}/classifier/segmenter.pt",
        metrics="{root}/classifier/metrics.json",
    wildcard_constraints:
        root=roots_where(True),
