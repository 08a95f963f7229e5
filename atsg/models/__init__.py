"""nn.Modules: the ViT backbone wrapper, the CAM classifier, the segmentation model, SAM loading."""
