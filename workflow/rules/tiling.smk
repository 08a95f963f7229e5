# Demo scenes and tiling: raw scenes -> tiles.zarr


rule synth:
    output:
        directory(RUN / "scenes"),
    params:
        cfg=stage_params("synthetic", "dataset"),
    log:
        LOGS / "synth.log",
    benchmark:
        BENCH / "synth.tsv"
    threads: STAGE_THREADS
    conda:
        CPU_ENV
    shell:
        "atsg synth --params {params.cfg:q} --out {output:q} --threads {threads} --log {log:q}"


rule tile:
    input:
        scenes_input,
    output:
        directory(RUN / "tiles.zarr"),
    params:
        cfg=stage_params("dataset", "split", "tiling"),
        root=str(dataset_root(config)),
    log:
        LOGS / "tile.log",
    benchmark:
        BENCH / "tile.tsv"
    conda:
        CPU_ENV
    shell:
        "atsg tile --params {params.cfg:q} --params {RUNTIME:q} --root {params.root:q} --out {output:q} --log {log:q}"
