"""Benchmarks: the harness, the latency model and the reports."""
