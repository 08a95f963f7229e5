# Demo scenes and tiling: raw scenes -> tiles.zarr


rule synth:
    """Draw the synthetic demo's scenes (GeoTIFFs with a CRS, and their label rasters)."""
    output:
        directory(RUN / "scenes"),
    params:
        cfg=stage_params("scenes"),
    log:
        LOGS / "synth.log",
    benchmark:
        BENCH / "synth.tsv"
    threads: STAGE_THREADS
    conda:
        CPU_ENV
    shell:
        'atsg synth --params {params.cfg:q} --out {output:q} --threads {threads} --log {log:q}'


rule tile:
    """Cut the dataset's scenes into tiles.zarr: images, labels, image-level labels, split, georeference."""
    input:
        unpack(stage_inputs("tiles")),
    output:
        directory(RUN / "tiles.zarr"),
    params:
        cfg=stage_params("tiles"),
        reads=stage_args("tiles"),
    log:
        LOGS / "tile.log",
    benchmark:
        BENCH / "tile.tsv"
    conda:
        CPU_ENV
    shell:
        'atsg tile --params {params.cfg:q} --params "$ATSG_RUNTIME" {params.reads} --out {output:q} --log {log:q}'
