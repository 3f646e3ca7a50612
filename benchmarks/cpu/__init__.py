"""Benchmarks timed on the CPU; each writes its section of docs/benchmarks.md."""
