"""Pipeline code: one module per stage, each reading and writing the Zarr artifacts of DESIGN.md."""
