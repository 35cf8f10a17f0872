#!/usr/bin/env python3
"""One-command set-up and run, on a machine with only Python 3.11+.

    python3 dev.py lab     # create .venv, install eskit + JupyterLab, open the notebooks on an embedded server
    python3 dev.py test    # create .venv, install everything, run unit + integration + notebook tests
    python3 dev.py bench   # the benchmarks

Extra arguments go to the tool (`python3 dev.py test -k store -x`). The install is redone only when
pyproject.toml or requirements.txt change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".eskit-installed"


def run(*cmd: str) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"eskit needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in ("pyproject.toml", "requirements.txt")))
    if STAMP.exists() and STAMP.read_text() == digest.hexdigest() and PY.exists():
        return
    if not PY.exists():
        print(f"+ python -m venv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check"]
    if run(*pip, "--quiet", "--upgrade", "pip") or run(*pip, "--quiet", "-r", "requirements.txt"):
        sys.exit("dev.py: installing the requirements failed (see above)")
    STAMP.write_text(digest.hexdigest())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"lab", "test", "bench", "install"}:
        print(__doc__)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "lab":
        return run(str(PY), "-m", "eskit", "lab", *rest)
    if command == "test":
        return run(str(PY), "-m", "pytest", *rest)
    if command == "bench":
        return run(str(PY), "bench/run.py", *rest)
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
