"""A pool's cluster file names its launcher classes so another process can load them
(``pxpool stop NAME``, ``Pool.attach``): ipyparallel writes ``module:Class`` for classes
without an entry point and then cannot import that back."""

from __future__ import annotations

import pytest

from pxpool._core.cluster import PxCluster
from pxpool.engines import PROVIDER_CLASSES


@pytest.mark.parametrize("provider", sorted(PROVIDER_CLASSES))
def test_every_provider_launcher_class_survives_the_cluster_file(provider: str) -> None:
    launcher = PROVIDER_CLASSES[provider].engine_launcher_class
    written = PxCluster(engine_launcher_class=launcher, log_level=50).to_dict()
    assert ":" not in written["engines"]["class"]
    loaded = PxCluster.from_dict(written)
    assert loaded.engine_launcher_class is launcher
