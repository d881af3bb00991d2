"""Data: synthetic sources, dataset loading."""
