"""Data: readers for images and rasters, datasets per task family, transforms and split files."""
