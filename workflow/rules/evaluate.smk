# Evaluation: CAM labels, pseudo-labels, predictions (and the supervised bound) -> eval/
# Ablation: every variant's evaluation -> eval/ablation.md + eval/ablation.json


def evaluate_inputs(wildcards):
    inputs = {
        "tiles": artifact(wildcards, "tiles", "tiles.zarr"),
        "cams": artifact(wildcards, "cams", "cams.zarr"),
        "pseudo": artifact(wildcards, "pseudo_labels", "pseudo_labels.zarr"),
        "predictions": artifact(wildcards, "predictions", "predictions.zarr"),
    }
    if cfg_of(wildcards)["evaluate"]["supervised_baseline"]:
        inputs["supervised"] = artifact(wildcards, "supervised_predictions", "supervised_predictions.zarr")
    return inputs


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics="{root}/eval/metrics.json",
        confusion="{root}/eval/confusion.csv",
        report_md="{root}/eval/report.md",
        samples=report(
            "{root}/eval/figures/samples.png",
            caption="../report/samples.rst",
            category="Evaluation",
            subcategory="{root}",
        ),
        confusion_png=report(
            "{root}/eval/figures/confusion.png",
            caption="../report/confusion.rst",
            category="Evaluation",
            subcategory="{root}",
        ),
        legend="{root}/eval/figures/legend.png",
    params:
        cfg=stage_params("evaluate", "refine"),
        out=out_dir("eval"),
        supervised=lambda wildcards, input: f"--supervised '{input.supervised}'" if "supervised" in input.keys() else "",
        expect=expected_keys("eval"),
    log:
        "{root}/logs/evaluate.log",
    benchmark:
        "{root}/benchmarks/evaluate.tsv"
    conda:
        CPU_ENV
    shell:
        "atsg evaluate --params {params.cfg:q} --tiles {input.tiles:q} --cams {input.cams:q} "
        "--pseudo-labels {input.pseudo:q} --predictions {input.predictions:q} {params.supervised} "
        "--expect {params.expect:q} --out {params.out:q} --log {log:q}"


ABLATION_METRICS = {
    "full": RUN / "eval" / "metrics.json",
    **{name: ROOTS[name]["eval"] / "eval" / "metrics.json" for name in VARIANTS},
}


rule ablation:
    input:
        list(dict.fromkeys(ABLATION_METRICS.values())),
        list(dict.fromkeys(f for name in [None, *VARIANTS] for f in every_output(name))),
    output:
        table=report(RUN / "eval" / "ablation.md", caption="../report/ablation.rst", category="Ablation"),
        json=RUN / "eval" / "ablation.json",
    params:
        cfg=lambda wildcards: section_json(config, "run", "ablation"),
        metrics=" ".join(f"--metrics '{name}={path}'" for name, path in ABLATION_METRICS.items()),
    log:
        LOGS / "ablation.log",
    conda:
        CPU_ENV
    shell:
        "atsg ablation_table --params {params.cfg:q} {params.metrics} --out {RUN}/eval --log {log:q}"
