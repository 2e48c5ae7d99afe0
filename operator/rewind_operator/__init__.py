"""Rewind Kubernetes operator. Exports nothing: run it with `python -m rewind_operator`."""
