"""The one training engine shared by the classifier and segmentation stages, and its data pipeline."""
