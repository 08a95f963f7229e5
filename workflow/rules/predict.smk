# Predictions of the fully supervised bound: tiles + supervised model -> supervised_predictions.zarr
# (the weak model's predictions are a sharded stage: sharded.smk)


rule predict_supervised:
    """Predict every tile with the fully supervised upper bound (for evaluation)."""
    input:
        unpack(stage_inputs("supervised_predictions")),
    output:
        directory("{root}/supervised_predictions.zarr"),
    params:
        cfg=stage_params("supervised_predictions"),
        reads=stage_args("supervised_predictions"),
        threads=STAGE_THREADS,
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        "{root}/logs/predict_supervised.log",
    benchmark:
        "{root}/benchmarks/predict_supervised.tsv"
    conda:
        GPU_ENV
    shell:
        'atsg predict --no-geotiffs --params {params.cfg:q} --params "$ATSG_RUNTIME" --threads {params.threads} '
        "{params.reads} --out {output:q} --log {log:q}"
