"""The environment check on real engines that differ from the client.

One local pool whose engine runs from a virtual environment (``--system-site-packages``,
so the same packages import), in another working directory, with an extra variable, a
package only the engines can import, and a stand-in ``cloudpickle`` 0.0.1 earlier on the
engines' path (a real package shadowed the way a stray install would shadow it).

Then an engine on another Python minor version than the client's: the interpreter of a
venv whose start-up rewrites ``sys.version`` (Debian 12 packages no second Python 3; see
``other_python``).

Last, an SSH engine (the test sshd, this machine) whose host runs the interpreter of a
virtual environment with another release of cloudpickle in its own site-packages: a copy
of the installed one under another version, made by the test (nothing is downloaded).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pxpool
from pxpool.doctor import diagnose

from .cli_helpers import pxpool_cli
from .ssh_helpers import ssh_overrides

pytestmark = pytest.mark.integration

PROBE = "PXPOOL_DOCTOR_PROBE"
OTHER_CLOUDPICKLE = "0.0.2"  # the release the SSH engine's venv holds


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("doctor")
    venv = base / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=60,
    )
    extra = base / "engine-path"
    (extra / "cloudpickle").mkdir(parents=True)
    (extra / "cloudpickle" / "__init__.py").write_text('__version__ = "0.0.1"\n')
    (extra / "doctor_probe_pkg").mkdir()
    (extra / "doctor_probe_pkg" / "__init__.py").write_text('__version__ = "1.2.3"\n')
    work = base / "work"
    work.mkdir()
    pool = pxpool.Pool.from_profile(
        "local",
        engines=1,
        python=str(venv / "bin" / "python"),
        work_dir=str(work),
        env={PROBE: "engine", "PYTHONPATH": str(extra)},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool.start_sync()
    try:
        yield {"pool": pool, "venv": venv, "work": work, "extra": extra, "warnings": caught}
    finally:
        pool.stop_sync()


def _rows(frame: Any) -> dict[tuple[int, str], tuple[str, str]]:
    return {(r.engine_id, r.check): (r.client, r.engine) for r in frame.itertuples()}


def test_doctor_flags_venv_work_dir_variable_and_engine_only_package(
    odd: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    frame = odd["pool"].doctor(packages=["doctor_probe_pkg"], env=[PROBE, "PYTHONPATH"])
    assert list(frame.columns) == ["engine_id", "check", "client", "engine"]
    rows = _rows(frame)
    assert Path(rows[0, "prefix"][1]).resolve() == odd["venv"].resolve()
    assert rows[0, "prefix"][0] == sys.prefix
    assert rows[0, "cwd"] == (os.getcwd(), str(odd["work"]))
    assert rows[0, f"env {PROBE}"] == ("(unset)", "engine")
    # the engines get this process's sys.path on purpose; only the extra entry differs
    assert rows[0, "env PYTHONPATH"] == ("(unset)", str(odd["extra"]))
    assert rows[0, "package doctor_probe_pkg"] == ("missing", "1.2.3")
    assert (0, "python") not in rows and (0, "platform") not in rows
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["engine_id", "check", "client", "engine"]
    assert "package doctor_probe_pkg  missing" in printed


def test_doctor_reads_the_version_of_the_module_that_imports_not_the_installed_one(
    odd: dict[str, Any],
) -> None:
    frame = odd["pool"].doctor(packages=["cloudpickle"], env=[], show=False)
    installed = importlib.metadata.version("cloudpickle")
    assert _rows(frame)[0, "package cloudpickle"] == (installed, "0.0.1")


def test_start_warns_once_per_difference_naming_both_versions(odd: dict[str, Any]) -> None:
    installed = importlib.metadata.version("cloudpickle")
    lines = [
        str(w.message) for w in odd["warnings"] if w.category is pxpool.EnvironmentMismatchWarning
    ]
    assert lines == [
        f"pxpool: engine 0 runs cloudpickle 0.0.1, this client runs cloudpickle {installed}; "
        "objects may not unpickle alike. See `pool.doctor()`."
    ]


def test_engines_added_later_are_checked_too(odd: dict[str, Any]) -> None:
    pool = odd["pool"]
    with pytest.warns(
        pxpool.EnvironmentMismatchWarning, match=r"engine 1 runs cloudpickle 0\.0\.1"
    ):
        pool.scale_sync(2)
    pool.scale_sync(1)


def test_doctor_names_engines_that_do_not_answer(odd: dict[str, Any]) -> None:
    pool = odd["pool"]
    busy = pool.view(0).apply_async(time.sleep, 2)
    started = time.monotonic()
    with pytest.raises(
        pxpool.PxpoolError, match=r"Engines \[0\] of pool .* did not report .* within 0.5s"
    ):
        diagnose(pool.core, timeout=0.5)
    assert time.monotonic() - started < 5
    busy.get(timeout=10)


def test_cli_doctor_exits_0_when_alike_1_with_differences_2_on_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # the built-in local profile sets these on its engines
    started = pxpool_cli("start", "local", "--name", "doc", "-n", "1")
    assert started.returncode == 0, started.stderr
    try:
        alike = pxpool_cli("doctor", "doc")
        assert alike.returncode == 0, alike.stdout + alike.stderr
        assert alike.stdout.rstrip().endswith("no differences")
        monkeypatch.delenv("OMP_NUM_THREADS")
        differ = pxpool_cli("doctor", "doc")
        assert differ.returncode == 1, differ.stdout + differ.stderr
        assert ["0", "env", "OMP_NUM_THREADS", "(unset)", "1"] in [
            line.split() for line in differ.stdout.splitlines()
        ]
    finally:
        stopped = pxpool_cli("stop", "doc")
    assert stopped.returncode == 0, stopped.stderr
    missing = pxpool_cli("doctor", "doc")
    assert missing.returncode == 2
    assert "pxpool: error: No running pool named 'doc'" in missing.stderr


# ---------------------------------------------------------------- another Python


def other_python(venv: Path) -> str:
    """Make ``venv``'s interpreter announce the next minor version of this Python: a
    ``.pth`` file in its site-packages, run at every start before anything else, rewrites
    ``sys.version``, from which ``platform.python_version()`` (what doctor reads) parses
    the version. A stand-in for an engine on another Python that needs no second
    interpreter and nothing downloaded; it is the same interpreter underneath, so the
    engine works as usual. Returns the version it announces."""
    announced = f"{sys.version_info.major}.{sys.version_info.minor + 1}.0"
    site = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    (Path(site) / "zz_pxpool_test_other_python.pth").write_text(
        f"import sys; sys.version = {announced!r} + sys.version[sys.version.index(' '):]\n"
    )
    return announced


def test_an_engine_on_another_python_minor_warns_at_start_and_in_doctor(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=60,
    )
    theirs = other_python(venv)
    python = str(venv / "bin" / "python")
    said = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert said == theirs, "the stand-in interpreter announces the other version"
    ours = platform.python_version()
    pool = pxpool.Pool.from_profile("local", engines=1, python=python)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool.start_sync()
    try:
        lines = [str(w.message) for w in caught if w.category is pxpool.EnvironmentMismatchWarning]
        assert lines == [
            f"pxpool: engine 0 runs Python {minor(theirs)}, this client runs Python "
            f"{minor(ours)}; objects may not unpickle alike. See `pool.doctor()`."
        ]
        rows = _rows(pool.doctor(env=[], show=False))
        assert rows[0, "python"] == (ours, theirs)
        assert pool.apply(abs, -3) == 3
    finally:
        pool.stop_sync()


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


# ---------------------------------------------------------------- an SSH engine


@pytest.fixture(scope="module")
def ssh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv over this interpreter's packages with another cloudpickle in the venv's own
    site-packages, shadowing the installed one as an install into the venv would (the
    client imports cloudpickle; the start check warns on it). That cloudpickle is a copy
    of the installed package whose ``__version__`` and dist-info say OTHER_CLOUDPICKLE,
    so it works like the real one; nothing comes from a package index."""
    assert importlib.metadata.version("cloudpickle") != OTHER_CLOUDPICKLE
    venv = tmp_path_factory.mktemp("ssh-doctor") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=60,
    )
    site = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    installed = importlib.util.find_spec("cloudpickle")
    assert installed is not None and installed.submodule_search_locations
    package = Path(site) / "cloudpickle"
    shutil.copytree(
        installed.submodule_search_locations[0],
        package,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    with (package / "__init__.py").open("a") as init:
        init.write(f'\n__version__ = "{OTHER_CLOUDPICKLE}"\n')
    dist_info = Path(site) / f"cloudpickle-{OTHER_CLOUDPICKLE}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: cloudpickle\nVersion: {OTHER_CLOUDPICKLE}\n"
    )
    return venv


def test_doctor_flags_an_ssh_engine_on_another_venv_and_the_start_warns(
    ssh_venv: Path,
) -> None:
    python = str(ssh_venv / "bin" / "python")
    theirs = subprocess.run(
        [python, "-c", "import cloudpickle; print(cloudpickle.__version__)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    ours = importlib.metadata.version("cloudpickle")
    assert theirs != ours
    pool = pxpool.Pool.from_profile("ssh", **ssh_overrides(engines=1, python=python))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool.start_sync()
    try:
        lines = [str(w.message) for w in caught if w.category is pxpool.EnvironmentMismatchWarning]
        assert lines == [
            f"pxpool: engine 0 runs cloudpickle {theirs}, this client runs cloudpickle {ours}; "
            "objects may not unpickle alike. See `pool.doctor()`."
        ]
        rows = _rows(pool.doctor(env=[], show=False))
        assert rows[0, "executable"] == (sys.executable, python)
        assert Path(rows[0, "prefix"][1]).resolve() == ssh_venv.resolve()
        assert rows[0, "package cloudpickle"] == (ours, theirs)
        assert (0, "python") not in rows  # the same interpreter underneath
        assert pool.apply(abs, -2) == 2
    finally:
        pool.stop_sync()
