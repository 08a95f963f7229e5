# Evaluation: CAM labels, pseudo-labels, predictions (and the supervised bound) -> eval/
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
