"""Benchmarks of this package against transformers' MaskFormer (`python -m benchmarks`, `make bench`)."""
