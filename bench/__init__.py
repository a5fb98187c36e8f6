"""Benchmarks: each module runs with `python -m bench.NAME` and writes its figures to RESULTS."""
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
