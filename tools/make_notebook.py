"""Build the notebooks from plain-text sources, and execute them so their outputs are stored.

    .venv/bin/python tools/make_notebook.py                 # every notebooks/src/NN_*.py
    .venv/bin/python tools/make_notebook.py 00_setup_check  # one

Sources are scripts whose cells are separated by `# %%` lines: they are what we edit and review.

    # %% [markdown]      a markdown cell (each line's leading "# " removed)
    # %%                 a code cell
    # %% [exercise]      the learner's cell: a stub that is plainly not done and never raises (tag `exercise`)
    # %% [solution]      its answer: never in the lesson; in notebooks/solutions/NN_*.ipynb it replaces the stub
    # %% [wrong] label   a plausible mistake (any number): never in a notebook; tests/test_exercises.py runs it
    # %% [check]         prints one verdict line, `✗ hint` or `✓ confirmation` (tag `check`; eskit.course.check)

A `# NBVAL_IGNORE_OUTPUT` or `# NBVAL_SKIP` line in a code cell becomes the cell tag `nbval-ignore-output` /
`nbval-skip` and is removed from the code the learner sees.

Each source gives two notebooks, both executed on an embedded server (so the stored outputs are real) and
committed: the lesson `notebooks/NN_name.ipynb` (stubs: its checks say `✗`) and, when the lesson has exercises,
`notebooks/solutions/NN_name.ipynb` (every exercise solved: its checks say `✓`). nbval re-executes both in the
test suite and compares the outputs.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent / "notebooks"
KINDS = ("markdown", "exercise", "solution", "wrong", "check")
MARKER = re.compile(r"^# %%(?:\s*\[(?P<kind>[a-z]+)\])?(?P<label>.*)$")
NBVAL_TAGS = {"# NBVAL_IGNORE_OUTPUT": "nbval-ignore-output", "# NBVAL_SKIP": "nbval-skip"}


@dataclass
class Cell:
    """One cell of a source: its kind (`code`, `markdown`, or an exercise part), text, label and tags."""

    kind: str
    text: str
    label: str = ""
    line: int = 0
    tags: list[str] = field(default_factory=list)


@dataclass
class Exercise:
    """An exercise: the stub, its solution, its wrong answers and its check (cells of the source)."""

    number: int
    stub: Cell
    solution: Cell
    check: Cell
    wrongs: list[Cell] = field(default_factory=list)


def parse(source: str, where: str = "source") -> list[Cell]:
    """The cells of a source, in order (code cells' NBVAL comment lines turned into tags)."""
    cells: list[Cell] = []
    current: Cell | None = None

    def flush() -> None:
        if current is None:
            return
        text = current.text.strip("\n")
        if current.kind == "markdown":
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in text.splitlines())
        else:
            kept = []
            for line in text.splitlines():
                tag = NBVAL_TAGS.get(line.strip())
                if tag:
                    current.tags.append(tag)
                else:
                    kept.append(line)
            text = "\n".join(kept).strip("\n")
        if text or current.kind != "code":
            current.text = text
            cells.append(current)

    for number, line in enumerate(source.splitlines(), 1):
        match = MARKER.match(line)
        if match:
            flush()
            kind = match["kind"] or "code"
            if kind not in ("code", *KINDS):
                raise ValueError(f"{where}:{number}: unknown cell marker [{kind}]; use one of {', '.join(KINDS)}")
            current = Cell(kind, "", match["label"].strip(), number)
        elif current is None:
            if line.strip():
                raise ValueError(f"{where}:{number}: text before the first `# %%` line")
        else:
            current.text += line + "\n"
    flush()
    return cells


def exercises(cells: list[Cell], where: str = "source") -> list[Exercise]:
    """Group [exercise] / [solution] / [wrong] / [check] cells; a malformed group is refused with its line."""
    found: list[Exercise] = []
    stub: Cell | None = None
    solution: Cell | None = None
    wrongs: list[Cell] = []
    for cell in cells:
        if cell.kind == "exercise":
            if stub is not None:
                raise ValueError(f"{where}:{cell.line}: [exercise] before the previous one's [check]")
            stub, solution, wrongs = cell, None, []
        elif cell.kind in ("solution", "wrong"):
            if stub is None:
                raise ValueError(
                    f"{where}:{cell.line}: [{cell.kind}] without an [exercise] stub before it (the old layout, a "
                    "hidden solution before the learner's cell, is gone: write the stub in an [exercise] cell)"
                )
            if cell.kind == "solution":
                if solution is not None:
                    raise ValueError(f"{where}:{cell.line}: a second [solution] for one exercise")
                solution = cell
            else:
                wrongs.append(cell)
        elif cell.kind == "check":
            if stub is None or solution is None:
                raise ValueError(f"{where}:{cell.line}: [check] without an [exercise] and its [solution] before it")
            found.append(Exercise(len(found) + 1, stub, solution, cell, wrongs))
            stub = None
    if stub is not None:
        raise ValueError(f"{where}:{stub.line}: [exercise] without a [check] after it")
    return found


def _notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def _cell(cell: Cell, text: str | None = None, tags: list[str] | None = None, **meta: object) -> nbformat.NotebookNode:
    if cell.kind == "markdown":
        return nbformat.v4.new_markdown_cell(cell.text)
    out = nbformat.v4.new_code_cell(cell.text if text is None else text)
    all_tags = [*(tags or []), *cell.tags]
    if all_tags:
        out.metadata["tags"] = all_tags
    if meta:
        out.metadata["eskit"] = dict(meta)
    return out


def build(source: str, variant: str = "lesson", where: str = "source") -> nbformat.NotebookNode:
    """The lesson (`variant="lesson"`: stubs) or its solved copy (`"solution"`) as an unexecuted notebook.

    `"trial"` is the tests' variant: the lesson, with each check followed by every wrong answer and the check,
    then the solution and the check twice (cell metadata `eskit.step` says which is which).
    """
    if variant not in ("lesson", "solution", "trial"):
        raise ValueError(f"variant must be lesson, solution or trial, not {variant!r}")
    cells = parse(source, where)
    by_check = {id(e.check): e for e in exercises(cells, where)}
    nb = _notebook()
    for cell in cells:
        if cell.kind in ("solution", "wrong"):
            continue
        if cell.kind == "exercise":
            exercise = next(e for e in by_check.values() if e.stub is cell)
            text = exercise.solution.text if variant == "solution" else cell.text
            nb.cells.append(_cell(cell, text, ["exercise"], exercise=exercise.number, step="exercise"))
            continue
        if cell.kind != "check":
            nb.cells.append(_cell(cell))
            continue
        exercise = by_check[id(cell)]
        first = "solution-check" if variant == "solution" else "stub-check"
        nb.cells.append(_cell(cell, tags=["check"], exercise=exercise.number, step=first))
        if variant != "trial":
            continue
        n = exercise.number
        for wrong in exercise.wrongs:
            nb.cells.append(_cell(wrong, tags=["exercise"], exercise=n, step="wrong", label=wrong.label))
            nb.cells.append(_cell(cell, tags=["check"], exercise=n, step="wrong-check", label=wrong.label))
        nb.cells.append(_cell(exercise.solution, tags=["exercise"], exercise=n, step="solution"))
        nb.cells.append(_cell(cell, tags=["check"], exercise=n, step="solution-check"))
        nb.cells.append(_cell(cell, tags=["check"], exercise=n, step="recheck"))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> None:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def add_widget_fallbacks(nb: nbformat.NotebookNode) -> int:
    """Give each saved widget output without one a static HTML copy, built from the saved widget state.

    JupyterLab renders saved widgets from the notebook's widget state (in a trusted notebook: `python -m
    eskit lab` trusts the lessons); GitHub, an untrusted JupyterLab and other viewers show the output's HTML
    instead, or else raw text such as `interactive(children=(SelectionSlider(...`. Only cells tagged
    `nbval-ignore-output` get one (nbval would compare it with a re-run, which has none). Returns how many.
    """
    import html

    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})

    def render(model_id: str, depth: int = 0) -> str:
        model = state.get(model_id.removeprefix("IPY_MODEL_"))
        if model is None or depth > 20:
            return ""
        kind, s = model.get("model_name", ""), model.get("state", {})
        label = html.escape(str(s.get("description", "")))
        if "children" in s:
            return "".join(render(child, depth + 1) for child in s["children"])
        if kind == "OutputModel":
            text = "".join(o.get("text", "") for o in s.get("outputs", []) if o.get("output_type") == "stream")
            return f"<pre>{html.escape(text)}</pre>" if text else ""
        if "_options_labels" in s:  # selection widgets: the label of the chosen option
            index = s.get("index")
            value = s["_options_labels"][index] if isinstance(index, int) else ""
            return f"<div>{label}: <b>{html.escape(str(value))}</b></div>"
        if kind in {"HTMLModel", "HTMLMathModel"}:
            return f"<div>{s.get('value', '')}</div>"  # the widget's own HTML, generated by the lesson
        if kind == "ButtonModel":
            return f"<div><button disabled>{label}</button></div>"
        if "value" in s:
            return f"<div>{label}: <b>{html.escape(str(s['value']))}</b></div>"
        return ""

    added = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or "nbval-ignore-output" not in cell.metadata.get("tags", []):
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data and "text/html" not in data:
                shown = render(data[WIDGET_VIEW]["model_id"])
                note = "<p><small>(an interactive widget, as saved: run the notebook to use it)</small></p>"
                data["text/html"] = f"<div>{shown}{note}</div>"
                added += 1
    return added


def sources(names: list[str] | None = None) -> list[Path]:
    """The lesson sources (all, or those whose stem is in `names`)."""
    found = sorted((ROOT / "src").glob("[0-9][0-9]_*.py"))
    return [s for s in found if not names or s.stem in names]


def main(names: list[str]) -> None:
    import eskit

    chosen = sources(names)
    if names and len(chosen) != len(names):
        sys.exit(f"no source for {sorted(set(names) - {s.stem for s in chosen})} in {ROOT / 'src'}")
    os.environ.pop("ESKIT_CLEANUP", None)  # the saved lessons show their "when you are done" button, unpressed
    os.environ.pop("ESKIT_LEARNER", None)  # the saved lessons are run outside any learner namespace
    with eskit.EmbeddedServer() as server:
        os.environ["NATS_URL"] = server.url
        for src in chosen:
            text, where = src.read_text(), str(src.relative_to(ROOT.parent))
            solved = ROOT / "solutions" / f"{src.stem}.ipynb"
            variants = [("lesson", ROOT / f"{src.stem}.ipynb")]
            if exercises(parse(text, where), where):
                variants.append(("solution", solved))
            elif solved.exists():
                solved.unlink()
            for variant, path in variants:
                nb = build(text, variant, where)
                print(f"executing {src.stem} ({variant}) ...", flush=True)
                execute(nb, ROOT)
                add_widget_fallbacks(nb)
                path.parent.mkdir(exist_ok=True)
                nbformat.write(nb, path)


if __name__ == "__main__":
    main(sys.argv[1:])
