# Evaluation: CAM labels, pseudo-labels, predictions (and the supervised bound) -> eval/


def evaluate_inputs(wildcards):
    inputs = {
        "tiles": RUN / "tiles.zarr",
        "cams": RUN / "cams.zarr",
        "pseudo": RUN / "pseudo_labels.zarr",
        "predictions": RUN / "predictions.zarr",
    }
    if config["evaluate"]["supervised_baseline"]:
        inputs["supervised"] = RUN / "supervised_predictions.zarr"
    return inputs


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=RUN / "eval" / "metrics.json",
        confusion=RUN / "eval" / "confusion.csv",
        report_md=RUN / "eval" / "report.md",
        samples=report(
            RUN / "eval" / "figures" / "samples.png",
            caption="../report/samples.rst",
            category="Evaluation",
        ),
        confusion_png=report(
            RUN / "eval" / "figures" / "confusion.png",
            caption="../report/confusion.rst",
            category="Evaluation",
        ),
        legend=RUN / "eval" / "figures" / "legend.png",
    params:
        cfg=stage_params("evaluate", "refine"),
        supervised=lambda wildcards, input: f"--supervised '{input.supervised}'" if "supervised" in input.keys() else "",
    log:
        LOGS / "evaluate.log",
    benchmark:
        BENCH / "evaluate.tsv"
    conda:
        "../../envs/atsg.yaml"
    shell:
        "atsg evaluate --params {params.cfg:q} --tiles {input.tiles:q} --cams {input.cams:q} "
        "--pseudo-labels {input.pseudo:q} --predictions {input.predictions:q} {params.supervised} "
        "--out {RUN}/eval --log {log:q}"
