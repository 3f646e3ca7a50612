"""Finished one-off probes: each answered one design question; kept to ask it again elsewhere."""
