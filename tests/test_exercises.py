"""The exercise contract of the course (issue 12): every lesson's exercises can fail and can pass.

- a lesson notebook is its source, built (not hand-edited), with no error stored, no solution text, and its
  checks say `✗` (stubs); its solved copy in notebooks/solutions/ says `✓` everywhere (nbval re-runs both);
- one execution per lesson of a *trial* notebook: the lesson with, after each check, every wrong answer and the
  check (`✗` + its hint, not a traceback), then the solution and the check twice (`✓`, re-runnable);
- eskit.course (one verdict line) and eskit.testing (given / when / then) on their own.
"""

from __future__ import annotations

import asyncio
import doctest
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

import eskit
from eskit.dcb import Query, QueryItem, TaggedEvent
from eskit.dcb_examples import Decision
from eskit.examples import Order, OrderError
from eskit.testing import given

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def _make_notebook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_notebook", ROOT / "tools" / "make_notebook.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_notebook"] = module
    spec.loader.exec_module(module)
    return module


mk = _make_notebook()
SOURCES = mk.sources()
WITH_EXERCISES = [s for s in SOURCES if mk.exercises(mk.parse(s.read_text()))]


def stem(path: Path) -> str:
    return path.stem


def code(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def errors(nb: nbformat.NotebookNode) -> list[str]:
    found = []
    for cell in code(nb):
        for out in cell.get("outputs", []):
            if out.output_type == "error" or (out.output_type == "stream" and "Traceback" in out.get("text", "")):
                found.append(f"{cell.id}: {out.get('ename', '')} {out.get('evalue', out.get('text', ''))[:200]}")
    return found


def verdict(cell: nbformat.NotebookNode) -> str:
    lines = printed(cell).splitlines()
    assert len(lines) == 1, f"{cell.id}: a check prints exactly one line, this one printed {lines}"
    return lines[0]


def tagged(nb: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [c for c in code(nb) if tag in c.metadata.get("tags", [])]


# -- the notebooks as committed ------------------------------------------------------------------------------


@pytest.mark.parametrize("src", SOURCES, ids=stem)
def test_a_lesson_notebook_is_its_source_built_with_stubs_and_stores_no_error(src: Path) -> None:
    lesson = nbformat.read(NOTEBOOKS / f"{src.stem}.ipynb", as_version=4)
    built = mk.build(src.read_text(), "lesson")
    assert [c.source for c in lesson.cells] == [c.source for c in built.cells], (
        f"notebooks/{src.stem}.ipynb is out of date: run tools/make_notebook.py {src.stem}"
    )
    assert errors(lesson) == []
    assert [c.id for c in code(lesson) if "NBVAL_" in c.source] == []
    assert [c.id for c in lesson.cells if "solution" in c.metadata.get("tags", [])] == []
    bad = {c.id: verdict(c) for c in tagged(lesson, "check") if not verdict(c).startswith("✗ ")}
    assert bad == {}, "an untouched lesson's checks must all say ✗"


@pytest.mark.parametrize("src", WITH_EXERCISES, ids=stem)
def test_a_solved_notebook_is_its_source_built_with_solutions_and_every_check_passes(src: Path) -> None:
    path = NOTEBOOKS / "solutions" / f"{src.stem}.ipynb"
    assert path.exists(), f"no {path.relative_to(ROOT)}: run tools/make_notebook.py {src.stem}"
    solved = nbformat.read(path, as_version=4)
    built = mk.build(src.read_text(), "solution")
    assert [c.source for c in solved.cells] == [c.source for c in built.cells], (
        f"{path.relative_to(ROOT)} is out of date: run tools/make_notebook.py {src.stem}"
    )
    assert errors(solved) == []
    checks = tagged(solved, "check")
    assert checks, "a solved notebook has check cells"
    assert {c.id: verdict(c) for c in checks if not verdict(c).startswith("✓ ")} == {}


def distinctive_lines(exercise: object) -> set[str]:
    """Lines of a solution that its stub does not have: long enough to be the answer, not boilerplate."""
    stub = {line.strip() for line in exercise.stub.text.splitlines()}  # type: ignore[attr-defined]
    lines = {line.strip() for line in exercise.solution.text.splitlines()}  # type: ignore[attr-defined]
    return {line for line in lines - stub if len(line) >= 30 and not line.startswith("#")}


@pytest.mark.parametrize("src", WITH_EXERCISES, ids=stem)
def test_no_lesson_notebook_contains_the_text_of_a_solution(src: Path) -> None:
    lesson = nbformat.read(NOTEBOOKS / f"{src.stem}.ipynb", as_version=4)
    lesson_lines = {line.strip() for cell in lesson.cells for line in cell.source.splitlines()}
    leaked = {
        f"exercise {e.number}": sorted(distinctive_lines(e) & lesson_lines)
        for e in mk.exercises(mk.parse(src.read_text()))
    }
    assert {k: v for k, v in leaked.items() if v} == {}


@pytest.mark.parametrize("src", [s for s in SOURCES if "01" <= s.stem[:2] <= "09"], ids=stem)
def test_every_lesson_from_01_to_09_has_at_least_three_exercises_each_with_a_wrong_answer(src: Path) -> None:
    found = mk.exercises(mk.parse(src.read_text()))
    assert len(found) >= 3, f"{src.stem} has {len(found)} exercises"
    assert [e.number for e in found if not e.wrongs] == [], "every exercise needs at least one [wrong] answer"


# -- one trial execution per lesson ------------------------------------------------------------------------


def _trial_params() -> list[object]:
    params: list[object] = []
    for src in WITH_EXERCISES:
        marks = [pytest.mark.slow] if src.stem.startswith("07") else []
        params.append(pytest.param(src, id=src.stem, marks=marks))
    return params


@pytest.mark.parametrize("src", _trial_params())
def test_each_check_fails_on_the_stub_and_every_wrong_answer_and_passes_on_the_solution_twice(src: Path) -> None:
    nb = mk.build(src.read_text(), "trial")
    mk.execute(nb, NOTEBOOKS, timeout=120)
    assert errors(nb) == []
    steps: dict[str, list[tuple[int, str, str]]] = {}
    for cell in tagged(nb, "check"):
        meta = cell.metadata["eskit"]
        steps.setdefault(meta["step"], []).append((meta["exercise"], meta.get("label", ""), verdict(cell)))
    count = len(mk.exercises(mk.parse(src.read_text())))
    assert [n for n, _, _ in steps.get("stub-check", [])] == list(range(1, count + 1))
    assert [(n, v) for n, _, v in steps["stub-check"] if not v.startswith("✗ ")] == []
    for n, label, line in steps.get("wrong-check", []):
        assert line.startswith("✗ "), f"exercise {n}, wrong answer {label!r} passed: {line}"
        assert "not done yet" not in line and "run the exercise cell" not in line, (
            f"exercise {n}, wrong answer {label!r}: its hint should say what is wrong, not {line!r}"
        )
    for step in ("solution-check", "recheck"):
        assert [(n, v) for n, _, v in steps[step] if not v.startswith("✓ ")] == [], step


# -- the building blocks ------------------------------------------------------------------------------------


def test_a_source_in_the_old_layout_a_solution_without_a_stub_is_refused_with_its_line() -> None:
    with pytest.raises(ValueError, match=r"lesson:3: \[solution\] without an \[exercise\]"):
        mk.build("# %%\nx = 1\n# %% [solution]\ny = 2\n# %%\nprint(y)\n", where="lesson")


def test_nbval_comments_become_cell_tags_and_leave_the_code() -> None:
    nb = mk.build("# %%\n# NBVAL_IGNORE_OUTPUT\nprint(1)\n# %%\n# NBVAL_SKIP\nprint(2)\n")
    assert [(c.source, c.metadata["tags"]) for c in nb.cells] == [
        ("print(1)", ["nbval-ignore-output"]), ("print(2)", ["nbval-skip"])
    ]


def test_the_lesson_holds_the_stub_and_the_solved_copy_the_solution_in_the_same_tagged_cell() -> None:
    source = (
        "# %% [exercise]\nanswer = ...\n# %% [solution]\nanswer = 42\n# %% [wrong] off by one\nanswer = 41\n"
        "# %% [check]\nprint(answer)\n"
    )
    lesson, solved, trial = (mk.build(source, v) for v in ("lesson", "solution", "trial"))
    assert [(c.source, c.metadata["tags"]) for c in lesson.cells] == [
        ("answer = ...", ["exercise"]), ("print(answer)", ["check"])
    ]
    assert [c.source for c in solved.cells] == ["answer = 42", "print(answer)"]
    assert [c.metadata["eskit"]["step"] for c in trial.cells] == [
        "exercise", "stub-check", "wrong", "wrong-check", "solution", "solution-check", "recheck"
    ]
    assert "answer = 41" not in {c.source for c in (*lesson.cells, *solved.cells)}


def run_check(test: object, capsys: pytest.CaptureFixture[str]) -> str:
    asyncio.run(eskit.course.check(test, ok="fine"))  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.strip() == eskit.course.last_verdict
    return out.strip()


def test_a_check_prints_one_verdict_line_whatever_the_answer_raises(capsys: pytest.CaptureFixture[str]) -> None:
    def raises(exc: BaseException) -> object:
        def test() -> None:
            raise exc

        return test

    async def passes() -> None:
        await asyncio.sleep(0)

    assert run_check(passes, capsys) == "✓ fine"
    assert run_check(passes(), capsys) == "✓ fine"  # the coroutine instead of the function: fine too
    assert run_check(raises(eskit.course.Wrong("count each order once")), capsys) == "✗ count each order once"
    assert run_check(raises(AssertionError("expected 3, got 2")), capsys) == "✗ expected 3, got 2"
    assert run_check(raises(AssertionError()), capsys).startswith("✗ not right yet")
    assert run_check(raises(NotImplementedError()), capsys).startswith("✗ not done yet")
    assert run_check(lambda: eskit.course.require(..., "write it"), capsys) == "✗ not done yet: write it"
    assert run_check(raises(NameError("name 'cancel' is not defined", name="cancel")), capsys) == (
        "✗ run the exercise cell above first (cancel is not defined)"
    )
    line = run_check(lambda: {}["missing"], capsys)
    assert line.startswith("✗ your code raised KeyError") and "Traceback" not in line


async def test_a_scratch_store_is_fresh_and_gone_after_the_block(client: eskit.Client) -> None:
    async with eskit.course.scratch(client, "scratch") as store:
        await store.append("a-1", [eskit.Event("created", {})])
        name = store.stream
    with pytest.raises(Exception, match="not found"):
        await client.js.stream_info(name)


def test_given_when_then_compares_the_recorded_events_by_type_and_data() -> None:
    created = eskit.Event("created", {"customer": "ada"})
    order = given(created).when(Order, lambda o: o.add_item("A1", qty=2, price=1.5)).then(
        eskit.Event("item_added", {"sku": "A1", "qty": 2, "price": 1.5})
    )
    assert order.total == 3.0
    given(created).when(Order, lambda o: o.ship("T-1")).then(OrderError)
    with pytest.raises(AssertionError, match=r"^expected \[item_added .*\], got \[item_added .*'qty': 1"):
        given(created).when(Order, lambda o: o.add_item("A1")).then(eskit.Event("item_added", {"sku": "A1"}))
    with pytest.raises(AssertionError, match="expected OrderError, but the command recorded no events"):
        given(created).when(Order, lambda o: None).then(OrderError)
    with pytest.raises(AssertionError, match="but the command raised OrderError"):
        given().when(Order, lambda o: o.add_item("A1")).then(eskit.Event("item_added", {}))
    with pytest.raises(NotImplementedError):  # a stub: eskit.course.check says "not done yet"
        given(created).when(Order, lambda o: (_ for _ in ()).throw(NotImplementedError())).then()


def test_given_when_then_runs_a_dcb_decision_on_the_events_its_query_matches() -> None:
    def join(student: str) -> Decision:
        query = Query([QueryItem(["joined"], ["course:c1", f"student:{student}"])])

        def decide(events: object) -> list[TaggedEvent]:
            if events:
                raise eskit.DecisionError("already joined")
            return [TaggedEvent("joined", {"student": student}, ["course:c1", f"student:{student}"])]

        return Decision(query, decide)

    other = TaggedEvent("joined", {"student": "s2"}, ["course:c1", "student:s2"])
    given(other).when(join("s1")).then(TaggedEvent("joined", {"student": "s1"}, ["student:s1", "course:c1"]))
    given(other).when(join("s2")).then(eskit.DecisionError, match="already joined")
    with pytest.raises(AssertionError, match="expected"):
        given(other).when(join("s1")).then(TaggedEvent("joined", {"student": "s1"}, ["student:s1"]))


def test_the_doctests_of_course_and_testing_pass() -> None:
    for module in (eskit.course, eskit.testing):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_verdict_lines_have_no_store_names_so_nbval_can_compare_them() -> None:
    for src in WITH_EXERCISES:
        for cell in tagged(nbformat.read(NOTEBOOKS / f"{src.stem}.ipynb", as_version=4), "check"):
            assert not re.search(r"[0-9a-f]{8}\b", printed(cell)), (src.stem, printed(cell))
