"""Fixtures for the engine's tests (helpers live in rewind_engine.testing)."""

from __future__ import annotations

import pytest
from rewind_engine.testing import Gate


@pytest.fixture
def gate() -> Gate:
    return Gate()
