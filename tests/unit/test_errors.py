"""The tree drawn in ``pxpool/errors.py`` is the whole set of pxpool's errors.

Every module of the package is imported, every subclass of ``PxpoolError`` collected,
and the drawing must name exactly those classes, each under its direct base and in the
module its mark says (none: ``pxpool.errors``, ``*``: ``pxpool.engines.errors``,
``+``: ``pxpool._core.client``, an ipyparallel ``RemoteError``).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re

import pxpool
from pxpool import errors
from pxpool.errors import PxpoolError

HOMES = {"": "pxpool.errors", "*": "pxpool.engines.errors", "+": "pxpool._core.client"}
# "│   ├── Name*   what it is": the depth is the width of the prefix, four columns a level
NODE = re.compile(r"^(?P<prefix>(?:[│ ]   )*)[├└]── (?P<name>\w+)(?P<mark>[*+]?)\s")
ROOT = "PxpoolError"


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """Each class drawn in errors.py's docstring: name -> (drawn parent, mark)."""
    assert errors.__doc__ is not None
    lines = [line.strip("\n")[4:] for line in errors.__doc__.splitlines()]
    start = lines.index(ROOT)
    tree: dict[str, tuple[str | None, str]] = {ROOT: (None, "")}
    path = [ROOT]
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        match = NODE.match(line)
        if match is None:
            continue  # a description continued on the next line
        depth = len(match["prefix"]) // 4 + 1
        name = match["name"]
        assert name not in tree, f"{name} is drawn twice"
        tree[name] = (path[depth - 1], match["mark"])
        path[depth:] = [name]
    return tree


def every_pxpool_error() -> dict[str, type[PxpoolError]]:
    """Every subclass of PxpoolError (and itself) once every pxpool module is imported."""
    for module in pkgutil.walk_packages(pxpool.__path__, "pxpool."):
        if module.name.rsplit(".", 1)[-1] != "__main__":
            importlib.import_module(module.name)
    found: dict[str, type[PxpoolError]] = {}
    todo: list[type[PxpoolError]] = [PxpoolError]
    while todo:
        cls = todo.pop()
        assert found.setdefault(cls.__name__, cls) is cls, f"two errors named {cls.__name__}"
        todo.extend(cls.__subclasses__())
    return found


def test_the_drawn_tree_names_every_error_and_nothing_else() -> None:
    drawn = set(drawn_tree())
    defined = set(every_pxpool_error())
    assert drawn - defined == set(), "drawn in errors.py but not defined"
    assert defined - drawn == set(), "defined but missing from the tree drawn in errors.py"


def test_each_error_lives_where_its_mark_says() -> None:
    classes = every_pxpool_error()
    for name, (_, mark) in drawn_tree().items():
        assert classes[name].__module__ == HOMES[mark], name
    homes = {cls.__module__ for cls in classes.values()}
    assert homes <= {"pxpool.errors", "pxpool.engines.errors", HOMES["+"]}


def test_each_error_is_drawn_under_one_of_its_bases() -> None:
    classes = every_pxpool_error()
    for name, (parent, _) in drawn_tree().items():
        if parent is not None:
            assert classes[parent] in classes[name].__bases__, f"{name} is not a {parent}"


def test_every_error_has_its_own_docstring() -> None:
    for name, cls in every_pxpool_error().items():
        doc = cls.__dict__.get("__doc__")
        assert doc and doc.strip(), f"{name} has no docstring"


def test_errors_module_imports_only_the_standard_library() -> None:
    """Engine-side code (the debugger agent) imports pxpool.errors: it stays light."""
    assert errors.__file__ is not None
    with open(errors.__file__, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "collections.abc", "typing"}


def test_a_lost_task_never_names_engine_none() -> None:
    """An engine that died while joining has no id the pool knew: the message says so."""
    named = errors.TaskLost("pool.map(f) chunk of items 3..3", 2, "killed by SIGKILL", 3)
    assert "engine 2 died while running it (killed by SIGKILL)" in str(named)
    assert "after 3 retries" in str(named)
    unnamed = errors.TaskLost("pool.map(f) chunk of items 3..3", None, "killed by SIGKILL", 1)
    assert "None" not in str(unnamed)
    assert "an engine that was joining the pool died while running it" in str(unnamed)
