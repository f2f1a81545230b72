"""Every notebook under notebooks/ runs top to bottom in a real kernel, and its outputs
are checked by an assertion function registered for it in ``CHECKS`` below.

A new notebook needs an entry in ``CHECKS``: ``test_every_notebook_has_assertions``
fails until it has one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds per cell
CLEANUP = """\
import pxpool
try:
    pxpool.current().stop_sync()
except pxpool.PxpoolError:
    pass
"""


def text_of(cell: NotebookNode) -> str:
    """Everything a cell showed as text: streams, plain-text displays, results and errors."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("display_data", "execute_result"):
            parts.append(output.data.get("text/plain", ""))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    return "\n".join(parts)


def html_of(cell: NotebookNode) -> str:
    return "\n".join(
        output.data.get("text/html", "")
        for output in cell.get("outputs", [])
        if output.output_type in ("display_data", "execute_result")
    )


def cell_with(nb: NotebookNode, source: str) -> NotebookNode:
    """The one code cell whose source contains ``source``."""
    found = [c for c in nb.cells if c.cell_type == "code" and source in c.source]
    assert len(found) == 1, f"expected one code cell containing {source!r}, found {len(found)}"
    return found[0]


def engines_printing(cell: NotebookNode) -> list[int]:
    return sorted({int(i) for i in re.findall(r"\[stdout:(\d+)\]", text_of(cell))})


def check_quickstart(nb: NotebookNode) -> None:
    assert re.search(
        r"Started pool '.+' \(local\) with 2 engines \[0, 1\]",
        text_of(cell_with(nb, "%pool start")),
    )
    hello = cell_with(nb, "says hello")
    assert engines_printing(hello) == [0, 1]
    assert len(re.findall(r"engine process \d+ says hello", text_of(hello))) == 2
    last = cell_with(nb, "only the last engine")
    assert engines_printing(last) == [1]
    assert "only the last engine runs this" in text_of(last)
    frame = html_of(cell_with(nb, "engine_rows"))
    assert "<table" in frame and "engine_rows" in frame
    assert text_of(cell_with(nb, 'pool.push({"scale": 10})')).strip() == "[10, 10]"
    assert text_of(cell_with(nb, 'pool.pull("scaled")')).strip() == "[20, 20]"
    assert "cubes: [0, 1, 8, 27, 64, 125]" in text_of(cell_with(nb, "cubes ="))
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49] ndarray" in text_of(cell_with(nb, "squares ="))
    products = text_of(cell_with(nb, "products ="))
    assert "index kept: True" in products
    assert "sum of x*y: 735 expected: 735" in products
    status = text_of(cell_with(nb, "%pool status"))
    assert re.search(r"^engine\s+host\s+pid\s+state\s+tasks_done$", status, re.MULTILINE)
    assert re.findall(r"^([01])\s+\S+\s+\d+\s+idle\s+\d+$", status, re.MULTILINE) == ["0", "1"]
    assert re.search(r"Stopped pool '.+'\.", text_of(cell_with(nb, "%pool stop")))


CHECKS: dict[str, Callable[[NotebookNode], None]] = {
    "01-quickstart.ipynb": check_quickstart,
}


def test_every_notebook_has_assertions() -> None:
    assert NOTEBOOKS, "no notebooks found under notebooks/"
    missing = [p.name for p in NOTEBOOKS if p.name not in CHECKS]
    assert not missing, f"notebooks without an assertion function in CHECKS: {missing}"


def test_notebooks_are_committed_without_outputs() -> None:
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name} cell {index} has outputs"
                assert cell.execution_count is None, f"{path.name} cell {index} was run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_expected_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    with client.setup_kernel():
        try:
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
        finally:  # a failed cell must not leave the notebook's pool running
            nb.cells.append(nbformat.v4.new_code_cell(CLEANUP))
            client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
            nb.cells.pop()
    CHECKS[path.name](nb)
