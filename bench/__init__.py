"""Benchmarks run by `make bench` (scripts/bench.sh): figures are printed, never asserted.

Each module is runnable as `python -m bench.<name>` and writes its figures to bench-results/<name>.json.
"""
