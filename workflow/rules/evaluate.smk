# Evaluation: CAM labels, pseudo-labels, predictions (and the supervised bound) -> eval/
# Report: eval and the trainings' metrics -> report/ (the page snakemake --report opens on)
# Ablation: every variant's evaluation -> eval/ablation.md + eval/ablation.json

ABLATION_METRICS = {
    "full": RUN / "eval" / "metrics.json",
    **{name: ROOTS[name]["eval"] / "eval" / "metrics.json" for name in VARIANTS},
}


rule evaluate:
    """Score CAMs, pseudo-labels and predictions on the test split; write metrics, report and figures."""
    input:
        unpack(stage_inputs("eval")),
    output:
        metrics="{root}/eval/metrics.json",
        confusion="{root}/eval/confusion.csv",
        report_md="{root}/eval/report.md",
        samples=report(
            "{root}/eval/figures/samples.png",
            caption="../report/samples.rst",
            category=REPORT_CATEGORIES[2],
            subcategory="{root}",
        ),
        confusion_png=report(
            "{root}/eval/figures/confusion.png",
            caption="../report/confusion.rst",
            category=REPORT_CATEGORIES[3],
            subcategory="{root}",
        ),
        legend=report(
            "{root}/eval/figures/legend.png",
            caption="../report/legend.rst",
            category=REPORT_CATEGORIES[2],
            subcategory="{root}",
        ),
    params:
        cfg=stage_params("eval"),
        reads=stage_args("eval"),
        out=out_dir("eval"),
        expect=expected_keys("eval"),
    log:
        "{root}/logs/evaluate.log",
    benchmark:
        "{root}/benchmarks/evaluate.tsv"
    conda:
        CPU_ENV
    shell:
        "atsg evaluate --params {params.cfg:q} {params.reads} --expect {params.expect:q} --out {params.out:q} "
        "--log {log:q}"


rule report:
    """Write the page snakemake --report opens on: the run, its mIoU table, IoU bars and training curves."""
    input:
        **report_inputs(),
    output:
        page=REPORT_FILES[0],
        iou=report(REPORT_FILES[1], caption="../report/iou.rst", category=REPORT_CATEGORIES[0]),
        training=report(REPORT_FILES[2], caption="../report/training.rst", category=REPORT_CATEGORIES[1]),
    params:
        cfg=lambda wildcards: section_json(config, *REPORT_SECTIONS),
        reads=report_args(),
        out=lambda wildcards, output: os.path.dirname(output.page),
    log:
        LOGS / "report.log",
    conda:
        CPU_ENV
    shell:
        "atsg report --params {params.cfg:q} {params.reads} --out {params.out:q} --log {log:q}"


rule ablation:
    """Tabulate every ablation variant's evaluation beside the full run's."""
    input:
        list(dict.fromkeys(ABLATION_METRICS.values())),
        list(dict.fromkeys(f for name in [None, *VARIANTS] for f in every_output(name))),
    output:
        table=report(RUN / "eval" / "ablation.md", caption="../report/ablation.rst", category="Ablation"),
        json=RUN / "eval" / "ablation.json",
    params:
        cfg=lambda wildcards: section_json(config, "run", "ablation"),
        metrics=" ".join(f"--metrics {shlex.quote(f'{name}={path}')}" for name, path in ABLATION_METRICS.items()),
        out=lambda wildcards: str(RUN / "eval"),
    log:
        LOGS / "ablation.log",
    conda:
        CPU_ENV
    shell:
        "atsg ablation_table --params {params.cfg:q} {params.metrics} --out {params.out:q} --log {log:q}"
