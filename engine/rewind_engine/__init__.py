"""Rewind streaming engine."""
