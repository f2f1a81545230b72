"""Every notebook under notebooks/ runs top to bottom in a real kernel, and its outputs
are checked by an assertion function registered for it in ``CHECKS`` below.

A new notebook needs an entry in ``CHECKS``: ``test_every_notebook_has_assertions``
fails until it has one.
"""

from __future__ import annotations

import queue
import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from nbformat import NotebookNode

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds per cell
PROMPT_SETTLE = 0.2  # seconds to collect a cell's output that was printed before a prompt
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


def lines_of(cell: NotebookNode) -> str:
    """``text_of`` without blank lines: a prompt and what follows it are on adjacent lines."""
    return re.sub(r"\n+", "\n", text_of(cell))


def check_health_and_debugging(nb: NotebookNode) -> None:
    assert "with 2 engines [0, 1]" in text_of(cell_with(nb, "%pool start"))
    panel = cell_with(nb, "pool.panel()")
    widget = "application/vnd.jupyter.widget-view+json"
    assert any(widget in out.get("data", {}) for out in panel.outputs), panel.outputs
    counts = dict(re.findall(r"'(\w+)': (\d+)", text_of(cell_with(nb, "pool.health_summary()"))))
    assert sum(map(int, counts.values())) == 2 and int(counts["dead"]) == 0, counts
    failed = text_of(cell_with(nb, "pool.map(normalise, batches)"))
    assert "MapError" in failed and "item 2" in failed and "ZeroDivisionError" in failed
    post_mortem = lines_of(next(c for c in nb.cells if c.source.strip() == "%pxdebug"))
    engine = re.search(r"debugging engine (\d+), where the last error was raised", post_mortem)
    assert engine, post_mortem
    label = f"(Pdb-e{engine[1]})"
    assert f"{label} p weights\n[0.5, -0.5]" in post_mortem
    assert f"{label} p total\n0.0" in post_mortem
    assert f"debugger session on engine {engine[1]} ended" in post_mortem
    stopped = lines_of(cell_with(nb, "def running_sum"))
    assert re.search(r"engine \d+ stopped at breakpoint\(\)", stopped), stopped
    assert re.search(r"\(Pdb-e\d+\) p total\n6\n", stopped), stopped
    assert "result: 6" in stopped
    stepped = lines_of(cell_with(nb, "%%pxdebug -e 0"))
    assert "(Pdb-e0) p b\n42" in stepped, stepped
    assert "b is 42" in stepped
    assert engines_printing(cell_with(nb, "still working")) == [0, 1]
    assert re.search(r"Stopped pool '.+'\.", text_of(cell_with(nb, "%pool stop")))


def check_clusters(nb: NotebookNode) -> None:
    assert re.search(
        r"<Pool '.+' profile='ssh' state=running engines=2>", text_of(cell_with(nb, "ssh_pool = "))
    )
    places = text_of(cell_with(nb, "ssh engines run on:"))
    assert len(set(re.findall(r"pid (\d+)", places))) == 2, places
    assert "squares over ssh: [0, 1, 4, 9, 16, 25, 36, 49]" in places
    health = text_of(cell_with(nb, "ssh_pool.health()"))
    assert len(re.findall(r"\bidle\b", health)) == 2, health
    assert "ssh pool: stopped" in text_of(cell_with(nb, "ssh_pool.stop_sync()"))
    script = text_of(cell_with(nb, "print(slurm_pool.job_script())"))
    assert script.startswith("#!") and "#SBATCH" in script and "--time=0:10:00" in script, script
    assert "-NAME" not in script, "pool.job_script() names the pool's own files"
    jobs = text_of(cell_with(nb, "engines run in SLURM jobs:"))
    assert len(re.findall(r"'(\d+)'", jobs)) == 2, jobs
    assert "sum over the jobs: 5050" in jobs
    assert "slurm pool: stopped" in text_of(cell_with(nb, "slurm_pool.stop_sync()"))


CHECKS: dict[str, Callable[[NotebookNode], None]] = {
    "01-quickstart.ipynb": check_quickstart,
    "02-clusters.ipynb": check_clusters,
    "03-health-and-debugging.ipynb": check_health_and_debugging,
}

# What a user types at each prompt (the kernel's stdin channel), per notebook and per
# cell (named by its first line), in order; notebooks listed here run through
# ``run_answering_prompts`` because nbclient cannot answer prompts.
STDIN_ANSWERS: dict[str, dict[str, list[str]]] = {
    "03-health-and-debugging.ipynb": {
        "%pxdebug": ["p weights", "p total", "q"],
        "def running_sum(values):": ["p total", "c"],
        "%%pxdebug -e 0": ["n", "n", "p b", "c"],
    },
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


def run_answering_prompts(nb: NotebookNode, path: Path, answers: dict[str, list[str]]) -> None:
    """Run every code cell in a fresh kernel, typing ``answers`` at its prompts; each
    prompt and answer is recorded as the cell's output, as a notebook shows them."""
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(path.parent))
    try:
        for cell in (c for c in nb.cells if c.cell_type == "code"):
            pending = list(answers.get(cell.source.splitlines()[0], []))
            unanswered: list[str] = []
            outputs: list[NotebookNode] = []

            def on_output(msg: dict, outputs: list[NotebookNode] = outputs) -> None:
                if msg["msg_type"] in ("stream", "display_data", "execute_result", "error"):
                    outputs.append(nbformat.v4.output_from_msg(msg))

            def on_prompt(
                msg: dict,
                pending: list[str] = pending,
                unanswered: list[str] = unanswered,
                outputs: list[NotebookNode] = outputs,
            ) -> None:
                # output printed before the prompt may still be queued on the iopub channel
                parent = msg["parent_header"].get("msg_id")
                while True:
                    try:
                        queued = kc.get_iopub_msg(timeout=PROMPT_SETTLE)
                    except queue.Empty:
                        break
                    if queued["parent_header"].get("msg_id") == parent:
                        on_output(queued)
                prompt = msg["content"]["prompt"]
                if pending:
                    answer = pending.pop(0)
                else:  # an unexpected prompt: quit it rather than hang, and fail below
                    unanswered.append(prompt)
                    answer = "q"
                outputs.append(
                    nbformat.v4.new_output("stream", name="stdout", text=f"{prompt}{answer}\n")
                )
                kc.input(answer)

            reply = kc.execute_interactive(
                cell.source,
                allow_stdin=True,
                stdin_hook=on_prompt,
                output_hook=on_output,
                timeout=CELL_TIMEOUT,
            )
            cell.outputs = outputs
            failed = reply["content"]["status"] != "ok"
            allowed = "raises-exception" in cell.metadata.get("tags", [])
            assert allowed or not failed, f"cell failed:\n{cell.source}\n{text_of(cell)}"
            assert not pending, f"prompts not reached in cell {cell.source!r}: {pending}"
            assert not unanswered, f"unexpected prompts in cell {cell.source!r}: {unanswered}"
    finally:
        kc.execute_interactive(CLEANUP, timeout=CELL_TIMEOUT, output_hook=lambda msg: None)
        kc.stop_channels()
        km.shutdown_kernel()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_expected_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    if path.name in STDIN_ANSWERS:
        run_answering_prompts(nb, path, STDIN_ANSWERS[path.name])
        CHECKS[path.name](nb)
        return
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
