"""Benchmarks timed on one GPU, and the shell scripts that run them in one go on a GPU machine."""
