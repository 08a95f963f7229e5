# CAM classifier: tiles.zarr (train split, image-level labels) -> classifier/
# Paper mode (classifier.joint_segmentation): the same stage also trains the segmentation decoders
# -> classifier/segmenter.pt, which predict then uses; its roots go to rule train_classifier_joint.


def classifier_inputs(wildcards):
    inputs = {"tiles": artifact(wildcards, "tiles", "tiles.zarr")}
    cfg = cfg_of(wildcards)
    if joint(cfg) and needs_masks(cfg):
        inputs["masks"] = artifact(wildcards, "masks", "masks.zarr")
    inputs.update(pretrain_input("classifier")(wildcards))
    return inputs


def classifier_params(wildcards):
    """Section classifier; in paper mode also segmentation (decoders and losses trained in this stage),
    cams and refine (the on-the-fly pseudo-labels)."""
    cfg = cfg_of(wildcards)
    if joint(cfg):
        return section_json(cfg, "classifier", "segmentation", "cams", "refine")
    return section_json(cfg, "classifier")


def roots_where(paper_mode):
    """A regex of the roots whose config is (or is not) in paper mode; one that never matches if none."""
    roots = [re.escape(root) for root, cfg in CONFIGS.items() if joint(cfg) == paper_mode]
    return "|".join(roots) if roots else "(?!)"


CLASSIFIER_SHELL = (
    "atsg train_classifier --params {params.cfg:q} --params {RUNTIME:q} --threads {TRAIN_THREADS} --tiles {input.tiles:q} {params.masks} {params.pretrain} "
    "--out {params.out:q} --log {log:q}"
)


rule train_classifier:
    input:
        unpack(classifier_inputs),
    output:
        model="{root}/classifier/model.pt",
        metrics="{root}/classifier/metrics.json",
    wildcard_constraints:
        root=roots_where(False),
    params:
        cfg=classifier_params,
        out=out_dir("classifier"),
        pretrain=pretrain_arg,
        masks="",
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
        CLASSIFIER_SHELL


rule train_classifier_joint:
    input:
        unpack(classifier_inputs),
    output:
        model="{root}/classifier/model.pt",
        segmenter="{root}/classifier/segmenter.pt",
        metrics="{root}/classifier/metrics.json",
    wildcard_constraints:
        root=roots_where(True),
    params:
        cfg=classifier_params,
        out=out_dir("classifier"),
        pretrain=pretrain_arg,
        masks=lambda wildcards, input: f"--masks '{input.masks}'" if "masks" in input.keys() else "",
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
        CLASSIFIER_SHELL
