"""Connectors: the contract (`base`) and the built-in sources and sinks."""
