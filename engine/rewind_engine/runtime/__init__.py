"""The runtime: subtasks, channels, checkpoints and the job that drives them.

Not part of the public API; `rewind_engine.Job` and the CLI are the entry points.
"""
