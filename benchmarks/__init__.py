"""Scripts that measure the project and write docs/benchmarks.md, run as ``python -m``.

cpu/ and gpu/ hold the benchmarks people rerun, by the device they time; probes/ holds
finished one-off experiments kept for their record. report.py (where a table goes, what it
says about the machine) and harness.py (the timing loop, trained-like BatchNorm) are shared.
"""
