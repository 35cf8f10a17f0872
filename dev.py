#!/usr/bin/env python3
"""One-command set-up and run, on a machine with only Python 3.11+.

    python3 dev.py lab     # create .venv, install eskit + JupyterLab, open the notebooks on an embedded server
    python3 dev.py test    # create .venv, install eskit + the test tools, run unit + integration + notebook tests
    python3 dev.py bench   # the benchmarks (bench/run.py)
    python3 dev.py install # only the set-up (everything: lab, test and dev tools, pm4py)

Extra arguments go to the tool: `python3 dev.py test -k store -x`, `python3 dev.py lab --port 9999`.
The lab needs only eskit and JupyterLab; `test` adds pytest, nbval, mypy and the peer libraries. Each
install is redone only when pyproject.toml changes. Ctrl-C (or SIGTERM) stops everything dev.py started.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".eskit-installed"
# the tests run pm4py, pyarrow and duckdb on eskit's exports, and cryptography (privacy; lab and test carry it too)
EVERYTHING = ("lab", "test", "dev", "pm4py", "analysis", "privacy")
EXTRAS = {"lab": ("lab",), "test": EVERYTHING, "bench": EVERYTHING, "install": EVERYTHING}


def run(*cmd: str) -> int:
    """Run a child in the foreground; Ctrl-C and SIGTERM are passed to it, and dev.py waits for it to finish.

    The child runs in a session of its own, so a terminal's Ctrl-C reaches it once, through dev.py, like a
    `kill -INT` or a service manager's SIGTERM sent to dev.py alone; dev.py then waits, so the child's cleanup
    (the embedded server's temporary store, Jupyter's kernels) runs to the end.
    """
    print("+", " ".join(cmd), flush=True)
    child = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # pragma: no cover - only if a handler is replaced under us
                forward(signal.SIGINT, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _installed() -> dict[str, object]:
    try:
        return dict(json.loads(STAMP.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def up_to_date(extras: tuple[str, ...]) -> bool:
    """Whether .venv holds an install of pyproject.toml as it is now, with at least ``extras``."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    done = _installed()
    return PY.exists() and done.get("pyproject") == digest and set(extras) <= set(done.get("extras", ()))  # type: ignore[arg-type]


def ensure_venv(extras: tuple[str, ...]) -> None:
    """Create .venv and install eskit with `extras`, unless an install of pyproject.toml as it is covers them."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit(f"eskit needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if up_to_date(extras):
        return
    if not PY.exists():
        print(f"+ python -m venv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    # compat: a plain path entry, so a folder named `eskit` next to a script (this checkout) cannot shadow it
    target = f"{ROOT}[{','.join(extras)}]"
    if run(*pip, "--upgrade", "pip") or run(*pip, "--config-settings", "editable_mode=compat", "-e", target):
        sys.exit("dev.py: installing eskit failed (see above)")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    STAMP.write_text(json.dumps({"pyproject": digest, "extras": sorted(extras)}))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in EXTRAS:
        print(f"dev.py: unknown command {command!r}; use one of: {', '.join(EXTRAS)}\n{__doc__}", file=sys.stderr)
        return 2
    ensure_venv(EXTRAS[command])
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
