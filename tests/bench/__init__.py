"""Benchmarks: the harness itself works (the figures come from `bash bench/run.sh`)."""
