"""Datasets: readers for segmentation data on disk and the built-in synthetic scenes."""
