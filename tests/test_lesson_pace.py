"""Lessons run as a learner runs them: cell by cell, at the learner's pace, not only by Run All.

A learner reads between two Shift+Enters, and meanwhile whatever a cell started in the background runs to its
end. nbval (and Run All) go from cell to cell at once, so a lesson whose demo depends on the pace passes there
and shows nothing in class. Here a slow learner is played without a fixed sleep: after each cell, wait until
the lesson's background work has finished.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent / "notebooks"

# the lesson's background writers have finished, as they have when the learner takes their time
SLOW_LEARNER = """\
import asyncio as _asyncio
if "writers" in globals():
    await _asyncio.wait_for(_asyncio.shield(writers), 120)
"""


def outputs(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lesson_07_shows_the_failover_when_the_learner_runs_it_cell_by_cell_slower_than_the_writers() -> None:
    nb = nbformat.read(ROOT / "07_scaling_and_faults.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    seen: list[nbformat.NotebookNode] = []  # each cell's outputs (nbclient writes the probe's into its cell)
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            seen.append(copy.deepcopy(client.execute_cell(cell, index)))
            client.execute_cell(nbformat.v4.new_code_cell(SLOW_LEARNER), index)
    errors = [o for c in seen for o in c.outputs if o["output_type"] == "error"]
    assert errors == [], f"a cell failed: {errors[0]['ename']}: {errors[0]['evalue']}"
    text = "\n".join(outputs(c) for c in seen)
    assert "appends acknowledged after the kill: True" in text  # the kill landed in the middle of the writes
    assert "acknowledged but lost: 0" in text and "stored twice: 0" in text
    pause = re.search(r"longest pause between two acknowledgements: ([\d.]+)s", text)
    assert pause is not None and float(pause.group(1)) >= 0.5, "the writes did not pause for the election"
