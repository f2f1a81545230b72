"""The shared provider suite on the local provider."""

from __future__ import annotations

from typing import Any

import pytest

from .provider_suite import ProviderSuite

pytestmark = pytest.mark.integration


class TestLocalProvider(ProviderSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self) -> tuple[str, dict[str, Any]]:
        return ("local", {})
