# Pseudo-labels: tiles + cams + masks + classifier -> pseudo_labels.zarr


rule refine_labels:
    """Refine CAMs into pseudo-labels (PAR, SAM mask voting, affinity; uncertain pixels ignored)."""
    input:
        unpack(stage_inputs("pseudo_labels")),
    output:
        directory("{root}/pseudo_labels.zarr"),
    params:
        cfg=stage_params("pseudo_labels"),
        reads=stage_args("pseudo_labels"),
        threads=STAGE_THREADS,
    threads: STAGE_THREADS
    resources:
        gpu=1,
    log:
        "{root}/logs/refine_labels.log",
    benchmark:
        "{root}/benchmarks/refine_labels.tsv"
    conda:
        GPU_ENV
    shell:
        'atsg refine_labels --params {params.cfg:q} --params "$ATSG_RUNTIME" --threads {params.threads} '
        "{params.reads} --out {output:q} --log {log:q}"
