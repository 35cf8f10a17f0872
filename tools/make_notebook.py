"""Build the notebooks from plain-text sources, and execute them so their outputs are stored.

    .venv/bin/python tools/make_notebook.py                 # every notebooks/src/NN_*.py
    .venv/bin/python tools/make_notebook.py 00_setup_check  # one

Sources are scripts whose cells are separated by `# %%` (code) and `# %% [markdown]` lines: they are what
we edit and review. `# %% [solution]` starts a code cell that is collapsed in JupyterLab (an exercise's
answer), followed by an empty cell for the learner's own answer, which replaces it before the check runs.
The .ipynb files are generated, executed on an embedded server (so the stored outputs are real)
and committed; nbval re-executes them in the test suite and compares the outputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat

YOUR_ANSWER = (
    "# Your answer: write your own version here. It replaces the hidden solution above (expand it only\n"
    "# when you are done), and the check below then tests yours."
)


def build(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    kind, lines, hidden = None, [], False

    def flush() -> None:
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in text.splitlines())
            nb.cells.append(nbformat.v4.new_markdown_cell(text))
        elif kind == "code" and text:
            cell = nbformat.v4.new_code_cell(text)
            if hidden:
                cell.metadata.update({"jupyter": {"source_hidden": True}, "tags": ["solution"]})
            nb.cells.append(cell)
            if hidden:  # the learner's answer goes after the solution, so the check below tests theirs
                nb.cells.append(nbformat.v4.new_code_cell(YOUR_ANSWER))

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines, hidden = ("markdown" if "[markdown]" in line else "code"), [], "[solution]" in line
        else:
            lines.append(line)
    flush()
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path) -> None:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()


def main(names: list[str]) -> None:
    import eskit

    root = Path(__file__).resolve().parent.parent / "notebooks"
    sources = sorted((root / "src").glob("[0-9][0-9]_*.py"))
    chosen = [s for s in sources if not names or s.stem in names]
    with eskit.EmbeddedServer() as server:
        os.environ["NATS_URL"] = server.url
        for src in chosen:
            nb = build(src.read_text())
            print(f"executing {src.stem} ...", flush=True)
            execute(nb, root)
            nbformat.write(nb, root / f"{src.stem}.ipynb")


if __name__ == "__main__":
    main(sys.argv[1:])
