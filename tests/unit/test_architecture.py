"""The architecture holds: the import contract, ruff, mypy strict and the size limits.

docs/architecture.md describes the layers and the checks; each check here runs the
project's own tool the way a developer would from the repository root, and a failure
shows the tool's output (with a count per file for the long ones).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pxpool"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
INSTALL_HINT = "install the test extra: python3 -m pip install -e '.[test]'"
# A finding's first line, as ruff (concise) and mypy print it: path:line[:column]: ...
FINDING = re.compile(r"^((?:pxpool|tests)/[\w/.-]+\.py):\d+(?::\d+)?: (?!note:)", re.MULTILINE)


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"{' '.join(command)} did not finish in {timeout:.0f} s:\n{output}")


def _module_available(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.fail(f"{name} is not installed for {sys.executable}; {INSTALL_HINT}")


def _script(name: str) -> str:
    """A console script of this interpreter's environment (beside it), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is neither beside {sys.executable} nor on PATH; {INSTALL_HINT}")
    return found


def _per_file(output: str) -> str:
    counts = Counter(FINDING.findall(output))
    lines = [f"  {count:4d}  {path}" for path, count in sorted(counts.items())]
    return "findings per file:\n" + "\n".join(lines) if lines else ""


def _report(done: subprocess.CompletedProcess[str]) -> str:
    output = (done.stdout + done.stderr).strip()
    return f"{' '.join(done.args)} exited {done.returncode}\n{_per_file(output)}\n\n{output}"


def test_import_contract_holds() -> None:
    done = _run([_script("lint-imports"), "--no-cache"], timeout=240)
    assert done.returncode == 0, _report(done)


def test_ruff_check_passes() -> None:
    _module_available("ruff")
    command = [sys.executable, "-m", "ruff", "check", "--no-fix", "--output-format", "concise"]
    done = _run([*command, "pxpool", "tests"], timeout=120)
    assert done.returncode == 0, _report(done)


def test_ruff_format_is_clean() -> None:
    _module_available("ruff")
    done = _run([sys.executable, "-m", "ruff", "format", "--check", "pxpool", "tests"], timeout=120)
    assert done.returncode == 0, _report(done)


@pytest.mark.timeout(660)
def test_mypy_strict_passes() -> None:
    _module_available("mypy")
    done = _run([sys.executable, "-m", "mypy", "pxpool"], timeout=600)
    assert done.returncode == 0, _report(done)


def _functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method with its qualified name, nested ones included."""
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((prefix + child.name, child))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def size_offenders(package: Path = PACKAGE) -> list[str]:
    """path:name:lines for each module over MAX_MODULE_LINES (name ``<module>``) and each
    function over MAX_FUNCTION_LINES (from its ``def`` line to its last line)."""
    offenders: list[str] = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(package.parent).as_posix()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{where}:<module>:{lines}")
        for name, node in _functions(ast.parse(text, filename=str(path))):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                offenders.append(f"{where}:{name}:{length}")
    return offenders


def test_size_limits_find_long_functions(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (package / "long.py").write_text("class A:\n    def f(self):\n" + body)
    (package / "short.py").write_text("def g():\n    return 1\n")
    assert size_offenders(package) == [f"pkg/long.py:A.f:{MAX_FUNCTION_LINES + 1}"]


def test_modules_and_functions_stay_small() -> None:
    offenders = size_offenders()
    assert not offenders, (
        f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} lines a function "
        "(path:name:lines):\n" + "\n".join(offenders)
    )
