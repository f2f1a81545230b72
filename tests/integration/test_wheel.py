"""The built wheel carries the built-in profiles and the `pxpool` command."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("pxpool-*.whl")
    return built


def test_wheel_ships_every_builtin_profile(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("pxpool/_builtin_profiles/")}
    assert shipped == {p.name for p in (ROOT / "profiles").glob("*.toml")}
    assert any(n.endswith("entry_points.txt") for n in names)


def test_fresh_venv_loads_the_builtin_local_profile_from_the_wheel(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    # system site packages provide the dependencies (no network); the wheel provides pxpool
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--force-reinstall",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import pxpool, pxpool.profile as p; prof = pxpool.load_profile('local');"
        "print(pxpool.__file__); print(p.builtin_profile_dir()); print(prof.source, prof.provider)"
    )
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    module_file, profile_dir, loaded = result.stdout.splitlines()
    assert module_file.startswith(str(venv))
    assert profile_dir.startswith(str(venv)) and profile_dir.endswith("pxpool/_builtin_profiles")
    assert loaded.endswith("_builtin_profiles/local.toml local")
    listed = subprocess.run(
        [str(venv / "bin" / "pxpool"), "profiles"], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and "built-in" in listed.stdout
