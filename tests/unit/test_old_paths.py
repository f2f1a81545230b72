"""Dotted paths that live outside the code keep working after the package moved into
feature folders: job scripts already waiting in a queue run ``python -m
pxpool._engine_main`` / ``pxpool._controller_main``, and cluster files on disk name
launcher classes by module path."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from pxpool._core.cluster import PxCluster
from pxpool._entry.controller_main import main as controller_main
from pxpool._entry.engine_main import PxpoolEngine

# Launcher classes as cluster files written before the move name them.
WRITTEN_LAUNCHER_PATHS = [
    "pxpool.engines.local.LocalEngines",
    "pxpool.engines.mpi.RankEngineSetLauncher",
    "pxpool.engines.batch.BatchJob",
    "pxpool.engines.sge.SGEJob",
    "pxpool.engines.sge.SGEControllerJob",
    "pxpool.engines.batch_controller.ControllerJob",
    "pxpool.engines._ssh_launcher.SSHEngineLauncher",
]


def test_old_engine_entry_module_runs_the_same_engine() -> None:
    old = importlib.import_module("pxpool._engine_main")
    assert old.PxpoolEngine is PxpoolEngine


def test_old_controller_entry_module_runs_the_same_controller() -> None:
    old = importlib.import_module("pxpool._controller_main")
    assert old.main is controller_main


@pytest.mark.parametrize("module", ["pxpool._engine_main", "pxpool._controller_main"])
def test_old_entry_modules_start_as_scripts(module: str) -> None:
    # the application builds its options and prints them: the module imports and runs
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--ip" in done.stdout


@pytest.mark.parametrize("path", WRITTEN_LAUNCHER_PATHS)
def test_launcher_class_paths_in_cluster_files_still_load(path: str) -> None:
    data = PxCluster(log_level=50).to_dict()
    data["engines"]["class"] = path
    loaded = PxCluster.from_dict(data)
    module, _, name = path.rpartition(".")
    assert loaded.engine_launcher_class is getattr(importlib.import_module(module), name)
