"""Fixtures for every test: engines started by a test serve their control API on a
free port unless the test names one.

`rewind run` serves its control API at $REWIND_CONTROL, else 127.0.0.1:8081, the address
`rewind status`/`stop` use by default. Tests run side by side (and beside other users of
the machine), so a job a test starts without `--control` gets port 0 (a free one, chosen
by the kernel at bind time: no race) through the environment its subprocesses inherit.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _free_control_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWIND_CONTROL", "127.0.0.1:0")
