"""Procedural multi-sensor driving sequences (seeded, deterministic)."""
