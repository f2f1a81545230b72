"""Pool's blocking twins are typed like the coroutines they wrap, and a misspelled
method is an error to a type checker (the twins were once made by ``__getattr__``
and typed ``Any``, so ``pool.healht()`` type-checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pxpool

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = """\
import pxpool

pool = pxpool.Pool.from_profile("local")
reveal_type(pool.start_sync())
reveal_type(pool.scale_sync(3))
reveal_type(pool.restart_sync(1))
reveal_type(pool.stop_sync())
pool.healht()
pool.scale_sync("3")
"""


def test_sync_twins_are_typed_and_misspellings_are_errors(tmp_path: Path) -> None:
    snippet = tmp_path / "use_pool.py"
    snippet.write_text(SNIPPET)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", str(snippet)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    out = done.stdout
    assert 'Revealed type is "pxpool.pool.Pool"' in out, out
    assert 'Revealed type is "list[int]"' in out or "builtins.list[builtins.int]" in out, out
    assert 'Revealed type is "int"' in out or 'Revealed type is "builtins.int"' in out, out
    assert 'Revealed type is "None"' in out, out
    assert '"Pool" has no attribute "healht"' in out, out
    assert 'incompatible type "str"; expected "int"' in out, out


def test_a_twin_of_nothing_does_not_exist_at_run_time() -> None:
    pool = pxpool.Pool.from_profile("local")
    try:
        with pytest.raises(AttributeError):
            pool.frobnicate_sync()  # type: ignore[attr-defined]
        assert pxpool.Pool.start_sync.__doc__ == "Blocking twin of :meth:`start`."
    finally:
        pool.core.loop.close()
