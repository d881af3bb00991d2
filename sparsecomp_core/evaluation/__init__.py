"""Evaluation: nuScenes-style detection metrics, tracking ids, robustness."""
