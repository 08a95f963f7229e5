"""atsg: weakly supervised segmentation of aerial and satellite imagery (ATSG) as a staged pipeline."""

__version__ = "0.1.0"
