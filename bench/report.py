"""What every benchmark script does with its result: JSON to a file, the table (or JSON) to the terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def log(*parts: object) -> None:
    """Progress lines, on stderr (stdout carries the table or the JSON)."""
    print(*parts, file=sys.stderr, flush=True)


def emit(result: dict[str, Any], text: str, *, out: Path, as_json: bool) -> None:
    """Write ``result`` to ``out``; print ``text`` (to stderr when stdout carries the JSON)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        log(text)
        print(json.dumps(result, indent=2))
    else:
        print(text)
