"""Every integration test gets its own slice of the session's stack (topics, group, keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from tests.integration.harness import Env


@pytest.fixture
def env(base_settings: Settings, tmp_path: Path) -> Env:
    return Env.make(base_settings, tmp_path)
