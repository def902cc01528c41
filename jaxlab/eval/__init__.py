"""Evaluation utilities: image grids, metrics."""
