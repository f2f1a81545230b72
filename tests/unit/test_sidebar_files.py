"""The sidebar's cluster files: written only in the IPython profile pxpool made."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pxpool._jupyter import files


@pytest.fixture
def ipython_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    monkeypatch.delenv("PXPOOL_JUPYTER_SIDEBAR", raising=False)
    return tmp_path


def test_a_pool_gets_an_entry_naming_pxpools_cluster_class_and_loses_it_at_stop(
    ipython_dir: Path,
) -> None:
    files.publish("p1")
    security = ipython_dir / "profile_pxpool" / "security"
    entry = json.loads((security / "cluster-p1.json").read_text())
    assert entry["cluster"] == {
        "class": "pxpool._jupyter.cluster.PoolCluster",
        "cluster_id": "p1",
        "profile_dir": str(ipython_dir / "profile_pxpool"),
        "pool": "p1",
    }
    assert (security / "cluster-new:local.json").is_file()  # the local profile's Start entry
    assert (ipython_dir / "profile_pxpool" / files.MARKER).is_file()
    files.withdraw("p1")
    assert not (security / "cluster-p1.json").exists()


def test_a_profile_pxpool_the_user_made_is_left_alone(
    ipython_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    theirs = ipython_dir / "profile_pxpool"
    (theirs / "security").mkdir(parents=True)
    (theirs / "ipython_config.py").write_text("c = get_config()\n")
    with caplog.at_level(logging.WARNING, logger="pxpool.jupyter"):
        files.publish("p1")
        files.withdraw("p1")
    assert sorted(str(p.relative_to(theirs)) for p in theirs.rglob("*")) == [
        "ipython_config.py",
        "security",
    ]
    assert "is an IPython profile pxpool did not make; it is left alone" in caplog.text


def test_the_listing_can_be_turned_off(ipython_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPOOL_JUPYTER_SIDEBAR", "0")
    files.publish("p1")
    assert not (ipython_dir / "profile_pxpool").exists()
    monkeypatch.setenv("PXPOOL_JUPYTER_SIDEBAR", "1")  # positive control
    files.publish("p1")
    assert (ipython_dir / "profile_pxpool" / "security" / "cluster-p1.json").is_file()


def test_entries_of_pools_without_a_record_go_at_the_next_publish(
    ipython_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PXPOOL_RUNTIME_DIR", str(tmp_path / "runtime"))
    security = ipython_dir / "profile_pxpool" / "security"
    files.publish("gone")  # its process died: no teardown, and its record went later
    files.publish("kept")
    (tmp_path / "runtime" / "kept").mkdir(parents=True)
    (tmp_path / "runtime" / "kept" / "pool.json").write_text("{}")  # a record: stoppable
    files.publish("new")
    assert not (security / "cluster-gone.json").exists()
    assert (security / "cluster-kept.json").is_file() and (security / "cluster-new.json").is_file()
