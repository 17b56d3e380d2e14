"""Benchmarks behind `make bench`: each module exposes a function returning a typed result and a
formatter for the BENCHMARKS.md table; `launch/bench.py` runs them."""
