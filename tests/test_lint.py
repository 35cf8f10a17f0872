"""The code stays typed and clean: mypy --strict on the package, ruff on everything (both from the dev extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_package_passes_mypy_strict() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_code_passes_ruff() -> None:
    result = run("ruff", "check", "eskit", "tests", "bench", "tools", "examples", "dev.py")
    assert result.returncode == 0, result.stdout[-3000:]
