"""Georeferenced imagery outside the tile store: what a model expects of its inputs, windowed inference over
whole rasters, Cloud-Optimized GeoTIFFs and polygons (the `map` stage)."""
