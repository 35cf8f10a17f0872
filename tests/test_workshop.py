"""The trainer's material keeps up with the lessons: every exercise is listed, every lesson has its reading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))
EXERCISE = re.compile(r"^# ### Exercise (\d+\.\d+) · (.+)$", re.MULTILINE)


def listed(number: str, title: str) -> str:
    return f"**{number}** {title.strip()}"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_the_readme_lesson_table_and_the_workshop_agenda_list_every_exercise_of_the_lesson(src: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    agenda = (ROOT / "docs" / "workshop.md").read_text()
    row = next((line for line in readme.splitlines() if line.startswith(f"| `{src.stem}` |")), None)
    assert row, f"README's lesson table has no row for {src.stem}"
    number = src.stem[:2]
    agenda_row = next((line for line in agenda.splitlines() if line.startswith(f"| {number} |")), None)
    assert agenda_row, f"docs/workshop.md's agenda has no row for lesson {number}"
    for n, title in EXERCISE.findall(src.read_text()):
        assert listed(n, title) in row, f"README's row for {src.stem} does not list exercise {n} · {title}"
        assert listed(n, title) in agenda_row, f"docs/workshop.md's agenda does not list exercise {n} · {title}"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_the_workshop_guide_gives_further_reading_for_every_lesson(src: Path) -> None:
    guide = (ROOT / "docs" / "workshop.md").read_text()
    reading = guide[guide.index("## Further reading") :]
    entry = next((line for line in reading.splitlines() if line.startswith(f"- **{src.stem[:2]} ·")), None)
    assert entry, f"docs/workshop.md has no further reading for lesson {src.stem[:2]}"
