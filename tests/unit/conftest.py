"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxpool._profile import schema


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user profile directory, and no PXPOOL_* setting from the host.

    The profile tests (test_profile_*.py) use it for every test through
    ``pytestmark = pytest.mark.usefixtures("user_dir")``.
    """
    for flat in schema.BY_FLAT:
        monkeypatch.delenv(f"PXPOOL_{flat.upper()}", raising=False)
    folder = tmp_path / "profiles"
    folder.mkdir()
    monkeypatch.setenv("PXPOOL_PROFILE_DIR", str(folder))
    return folder
