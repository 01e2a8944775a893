"""Benchmarks of this package against transformers' MaskFormer (`scripts/run_benchmarks.py`)."""
